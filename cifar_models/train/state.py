"""A run's resumable state (`runs/NAME/state.safetensors`, written after every epoch, atomically): the
weights, the optimizer, the schedule position (epochs done), the history and the wall clock so far, and
every process's random generators (torch, CUDA, numpy, Python). `resume` continues from it bit for bit;
a state written by another configuration or process count is refused with what to do.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..common.errors import UserError
from ..common.files import atomic_write_bytes, atomic_write_json
from .recipes import COMMON

if TYPE_CHECKING:
    from .loop import Run

# Keys of the config that do not change what is trained (so a run may resume with other values).
_NOT_IDENTITY = ("device", "description", "notes")


def identity(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in _NOT_IDENTITY}


def _rng_states() -> dict:
    return dict(torch=torch.get_rng_state(), cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                numpy=np.random.get_state(), python=random.getstate())


def _set_rng_states(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    if s["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])


def _rng_to_saved(states: list[dict]) -> tuple[dict, dict]:
    """Every process's generators -> (tensors, JSON metadata) for safetensors."""
    tensors, meta = {}, []
    for r, s in enumerate(states):
        tensors[f"rng.{r}.torch"] = s["torch"]
        for d, t in enumerate(s["cuda"]):
            tensors[f"rng.{r}.cuda.{d}"] = t
        kind, keys, pos, has_gauss, gauss = s["numpy"]
        tensors[f"rng.{r}.numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
        meta.append(dict(cuda=len(s["cuda"]), numpy=[kind, int(pos), int(has_gauss), float(gauss)],
                         python=[s["python"][0], list(s["python"][1]), s["python"][2]]))
    return tensors, dict(rng=json.dumps(meta))


def _rng_from_saved(tensors: dict, meta: dict, rank: int) -> dict:
    m = json.loads(meta["rng"])[rank]
    kind, pos, has_gauss, gauss = m["numpy"]
    return dict(torch=tensors[f"rng.{rank}.torch"], cuda=[tensors[f"rng.{rank}.cuda.{d}"] for d in range(m["cuda"])],
                numpy=(kind, tensors[f"rng.{rank}.numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss),
                python=(m["python"][0], tuple(m["python"][1]), m["python"][2]))


def save_state(run: "Run") -> None:
    """Model, optimizer, schedule position (epochs done), history, and every process's random generators."""
    rng = run.dist.gather_objects(_rng_states())
    if not run.dist.is_main:
        run.dist.barrier()
        return
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in run.model.state_dict().items()}
    opt_sd = run.opt.state_dict()
    scalars = {}
    for pid, st in opt_sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    rng_tensors, rng_meta = _rng_to_saved(rng)
    tensors.update(rng_tensors)
    if run.ema:
        tensors.update(run.ema.state())
    meta = dict(config=json.dumps(run.cfg), epoch=str(len(run.history)), history=json.dumps(run.history),
                elapsed=str(run.elapsed), world=str(run.dist.world), opt_groups=json.dumps(opt_sd["param_groups"]),
                opt_scalars=json.dumps(scalars), **rng_meta)
    atomic_write_bytes(run.state_path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    atomic_write_json(run.state_path.with_name("history.json"), dict(config=run.cfg, history=run.history))
    run.dist.barrier()


def saved_config(path: Path) -> dict:
    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["config"])


def resume(run: "Run", restart: bool = False) -> str | None:
    """Continue where the same run stopped: weights, optimizer, history, time and random generators.
    Returns the line to print when it resumed."""
    path = run.state_path
    if restart or not path.exists():
        return None
    # A recipe key added since the state was written counts as its default (what that run trained with).
    if identity(dict(COMMON, **saved_config(path))) != identity(run.cfg):
        raise UserError(f"{path} belongs to a different run configuration. Run the same command as before to "
                        f"resume it, add --restart to discard it, or use another --name.")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    if int(meta.get("world", 1)) != run.dist.world:
        raise UserError(f"{path} was written by {meta.get('world', 1)} process(es); resume it with the same number "
                        f"(or --restart).")
    tensors = load_file(str(path), device="cpu")
    run.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for k, v in json.loads(meta["opt_scalars"]).items():
        pid, name = k.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    run.opt.load_state_dict(dict(state=state, param_groups=json.loads(meta["opt_groups"])))
    if run.ema:
        run.ema.load(tensors)
    run.history, run.elapsed = json.loads(meta["history"]), float(meta["elapsed"])
    _set_rng_states(_rng_from_saved(tensors, meta, run.dist.rank))
    return f"resuming {run.name} after epoch {len(run.history)}/{run.cfg['epochs']} ({run.elapsed:.0f}s done)"
