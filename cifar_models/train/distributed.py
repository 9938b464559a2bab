"""Several processes through torchrun: `torchrun --nproc_per_node=N scripts/train.py ...`.

One process per GPU (NCCL) or per CPU worker (gloo). Without torchrun's environment everything here
is a no-op for a single process. Batch norm is synchronised across processes: torch's SyncBatchNorm
on GPUs, and `GlooSyncBatchNorm` (the same computation with differentiable all-reduces) on the CPU,
where torch's own refuses to run.
"""
from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @staticmethod
    def quiet_other_ranks() -> bool:
        """Under torchrun, only rank 0 prints: the other processes' standard output goes nowhere and their Python
        warnings are ignored (errors still reach standard error). True on rank 0 (and without torchrun)."""
        if int(os.environ.get("RANK", "0")) == 0:
            return True
        sys.stdout = open(os.devnull, "w")
        warnings.simplefilter("ignore")
        return False

    @classmethod
    def from_env(cls, device_type: str) -> "Dist":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device_type == "cuda":
            torch.cuda.set_device(local)
        return cls(dist.get_rank(), dist.get_world_size(), local)

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.active:
            dist.all_reduce(t)
        return t

    def gather_objects(self, obj) -> list:
        """Every rank's `obj`, in rank order (all ranks get the list)."""
        if not self.active:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """Synchronised batch norm + DistributedDataParallel; the module itself when alone."""
        if not self.active:
            return module
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(module, device_ids=[device.index] if device.type == "cuda" else None)

    def sync_batchnorm(self, module: nn.Module, device: torch.device) -> nn.Module:
        if not self.active:
            return module
        if device.type == "cuda":
            try:  # timm's converter also handles its fused BatchNormAct2d
                from timm.layers import convert_sync_batchnorm
            except ImportError:
                convert_sync_batchnorm = nn.SyncBatchNorm.convert_sync_batchnorm
            return convert_sync_batchnorm(module)
        return GlooSyncBatchNorm.convert(module)

    def close(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()


class GlooSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch (all processes)."""

    def forward(self, x):
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce  # differentiable

        c = x.shape[1]
        xf = x.float()
        count = torch.tensor([x.numel() / c], dtype=torch.float32, device=x.device)
        stats = all_reduce(torch.cat([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)), count]))
        n = stats[-1]
        mean = stats[:c] / n
        var = stats[c:2 * c] / n - mean * mean
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum
                self.running_mean.mul_(1 - m).add_(mean.detach() * m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1)) * m)
        y = (xf - mean[None, :, None, None]) * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)

    @classmethod
    def convert(cls, module: nn.Module) -> nn.Module:
        out = module
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and type(module) not in (nn.BatchNorm2d, cls):
            raise NotImplementedError(f"synchronised batch norm on the CPU supports nn.BatchNorm2d only, not "
                                      f"{type(module).__name__}; train this model on GPUs or in one process")
        if type(module) is nn.BatchNorm2d:
            out = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
            out.load_state_dict(module.state_dict())
            out.train(module.training)
        for name, child in module.named_children():
            out.add_module(name, cls.convert(child))
        return out
