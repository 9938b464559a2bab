"""An exponential moving average of the trained weights (recipes with `ema_decay > 0`).

After every optimiser step, each trained floating-point tensor (parameters and batch-norm running
statistics) moves its average a step towards it: avg += (1 - d) * (w - avg), with d = min(ema_decay,
(1 + step) / (10 + step)), so early averages are not dominated by the random start. Validation, the test
report and the shipped weights use the average (`swapped`); the training continues from the raw weights.
The average is part of the resumable state (`ema.*` tensors), so an interrupted run resumes bit for bit.

Why not torch's `swa_utils.AveragedModel`: it keeps a deep copy of the module, and the trained part of a
frozen-stage recipe is a list of `models.Stage`s whose functions close over the original network, so the
copy would run the original weights. Averaging the tensors in place needs no copy of the code.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


class WeightAverage:
    def __init__(self, module: nn.Module, decay: float):
        self.decay = float(decay)
        self.step = 0
        self.tensors = _averaged(module)
        self.average = [t.detach().clone() for t in self.tensors]

    @torch.no_grad()
    def update(self) -> None:
        self.step += 1
        d = min(self.decay, (1 + self.step) / (10 + self.step))
        torch._foreach_lerp_(self.average, [t.detach() for t in self.tensors], 1.0 - d)

    @contextmanager
    def swapped(self):
        """The module holds the averaged weights inside the block, its own ones again after it."""
        with torch.no_grad():
            raw = [t.detach().clone() for t in self.tensors]
            for t, a in zip(self.tensors, self.average):
                t.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for t, r in zip(self.tensors, raw):
                    t.copy_(r)

    @torch.no_grad()
    def copy_to_module(self) -> None:
        """For good (the end of a run): the module's tensors become the averages."""
        for t, a in zip(self.tensors, self.average):
            t.copy_(a)

    def state(self) -> dict[str, torch.Tensor]:
        out = {f"ema.{i}": a.detach().cpu().contiguous() for i, a in enumerate(self.average)}
        out["ema.step"] = torch.tensor(self.step)
        return out

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        if "ema.step" not in tensors:
            raise KeyError("the saved state has no weight average")
        self.step = int(tensors["ema.step"])
        with torch.no_grad():
            for i, a in enumerate(self.average):
                a.copy_(tensors[f"ema.{i}"])


def _averaged(module: nn.Module) -> list[torch.Tensor]:
    """The trained parameters and the floating-point buffers (batch-norm statistics), each once, in a fixed order."""
    seen, out = set(), []
    for t in [p for p in module.parameters() if p.requires_grad] + [b for b in module.buffers()
                                                                      if b.is_floating_point()]:
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out
