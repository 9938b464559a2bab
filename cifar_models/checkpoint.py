"""Checkpoints: weights as safetensors plus a JSON beside them that says everything else.

    checkpoints/cnn9.safetensors   fp16 weights (never pickle)
    checkpoints/cnn9.json          model name, architecture, data config, class names, recipe,
                                   history, metrics, provenance, and the weights' sha256

Files are written to a temporary name and renamed into place, so a crash never leaves a
half-written checkpoint where a good one was; the sha256 ties the JSON to its weights.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .errors import UserError
from .models import sha256_file

FORMAT = "cifar-compare/1"


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing, damaged, or its two files do not belong together."""


def checkpoint_paths(path) -> tuple[Path, Path]:
    """'checkpoints/cnn9', '.../cnn9.safetensors' or '.../cnn9.json' -> (weights, json)."""
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def atomic_write_bytes(path: Path, write) -> None:
    """Call write(tmp_path), fsync, then rename over path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    write(tmp)
    os.chmod(tmp, 0o644)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj, indent: int | None = 1) -> None:
    atomic_write_bytes(Path(path), lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=indent) + "\n"))


def half_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """CPU fp16 copy of the floating-point weights (integer buffers kept as they are)."""
    return {k: (v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.detach().cpu()).contiguous()
            for k, v in model.state_dict().items()}


def save_checkpoint(path, state: dict[str, torch.Tensor], meta: dict) -> tuple[Path, Path]:
    weights, js = checkpoint_paths(path)
    atomic_write_bytes(weights, lambda tmp: save_file(state, str(tmp), metadata={"format": FORMAT,
                                                                                 "model": meta["model"]}))
    meta = dict(meta, format=FORMAT, weights_file=weights.name, weights_sha256=sha256_file(weights))
    atomic_write_json(js, meta)
    return weights, js


def update_meta(path, **fields) -> dict:
    """Rewrite a checkpoint's JSON with new fields (the weights and their sha256 are untouched)."""
    meta = dict(read_meta(path), **fields)
    atomic_write_json(checkpoint_paths(path)[1], meta)
    return meta


def read_meta(path) -> dict:
    weights, js = checkpoint_paths(path)
    how = ("Use the checkpoints shipped in checkpoints/ (git checkout -- checkpoints/) or train one: "
           "python scripts/train.py --model MODEL")
    for p in (weights, js):
        if not p.is_file():
            raise CheckpointError(f"checkpoint file {p} not found. {how}")
    try:
        meta = json.loads(js.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint file {js} is not valid JSON ({e}). {how}") from e
    if meta.get("format") != FORMAT or "model" not in meta:
        raise CheckpointError(f"{js} is not a {FORMAT} checkpoint description. {how}")
    return meta


def load_weights(path, meta: dict) -> dict[str, torch.Tensor]:
    weights, js = checkpoint_paths(path)
    if sha256_file(weights) != meta.get("weights_sha256"):
        raise CheckpointError(f"{weights} does not match {js} (sha256 differs): one of them was replaced or "
                              f"damaged. Restore both from git or train again.")
    try:
        return load_file(str(weights))
    except Exception as e:
        raise CheckpointError(f"{weights} is not a readable safetensors file ({e})") from e


def git_commit() -> str:
    """The project's commit, with '-dirty' when the tree has uncommitted changes; 'unknown' outside git."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (sha + ("-dirty" if dirty else "")) if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
