"""Checkpoints: weights as safetensors plus a JSON beside them that says everything else (the JSON's
owner is `common/meta.py`; this module writes and reads the weights, and re-exports the JSON's helpers).

    checkpoints/cnn9.safetensors   fp16 weights (never pickle)
    checkpoints/cnn9.json          model name, architecture, data config, class names, recipe,
                                   history, metrics, provenance, and the weights' sha256

Files are written to a temporary name and renamed into place, so a crash never leaves a
half-written checkpoint where a good one was; the sha256 ties the JSON to its weights.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .common.files import atomic_write_bytes, atomic_write_json, sha256_file
from .common.meta import FORMAT, CheckpointError, checkpoint_paths, read_meta, seal, update_meta  # noqa: F401


def half_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """CPU fp16 copy of the floating-point weights (integer buffers kept as they are)."""
    return {k: (v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.detach().cpu()).contiguous()
            for k, v in model.state_dict().items()}


def save_checkpoint(path, state: dict[str, torch.Tensor], meta: dict) -> tuple[Path, Path]:
    weights, js = checkpoint_paths(path)
    atomic_write_bytes(weights, lambda tmp: save_file(state, str(tmp), metadata={"format": FORMAT,
                                                                                 "model": meta["model"]}))
    meta = seal(meta, weights)
    atomic_write_json(js, meta)
    return weights, js


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
