"""Experiment tracking in Weights & Biases, behind one switch (`scripts/train.py --log-wandb`, timm's name).

    tracker = WandbLogger(project="cifar-compare")      # imports wandb (one clear line when it is missing)
    tracker.start(cfg, name)                            # the resolved recipe as the run's config
    tracker.log_epoch(row)                              # every epoch: train/val loss and accuracy, lr, images/s
    tracker.finish(metrics, checkpoint_files, data_md5) # final metrics as the summary; the checkpoint as an artifact

`training.train(..., tracker=...)` calls these on rank 0 only. Without an API key (no WANDB_API_KEY, no
.netrc entry for the W&B host) and with no WANDB_MODE set, the run is offline: nothing waits on a login
prompt, the run is written under WANDB_DIR (default: the run folder, runs/), and the `wandb sync`
command that uploads it is printed at the end. WANDB_MODE=online/offline/disabled is honoured as is.
"""
from __future__ import annotations

import netrc
import os
import re
from pathlib import Path
from urllib.parse import urlparse

from ..common.errors import UserError, import_or_explain
from ..common.files import sha256_file

DEFAULT_PROJECT = "cifar-compare"


def has_api_key() -> bool:
    """A W&B API key in the environment or in .netrc for the W&B host (what `wandb login` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def artifact_name(name: str) -> str:
    """W&B artifact names take letters, digits, '-', '_' and '.': 'timm:resnet18' -> 'timm-resnet18'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "checkpoint"


def epoch_metrics(row: dict) -> dict:
    """One history row of training.run_epoch, as W&B metrics."""
    keys = dict(train_loss="train/loss", train_acc="train/acc", val_loss="val/loss", val_acc="val/acc", lr="lr",
                images_per_s="images_per_s", seconds="epoch_seconds", epoch="epoch")
    return {w: row[k] for k, w in keys.items() if row.get(k) is not None}


class WandbLogger:
    """One W&B run per training run: config, per-epoch metrics, summary, the checkpoint as a model artifact."""

    def __init__(self, project: str = DEFAULT_PROJECT, run_dir: str | Path = "runs"):
        self.wandb = import_or_explain("wandb")
        self.project = project
        self.run_dir = Path(run_dir)
        self.mode = os.environ.get("WANDB_MODE") or ("online" if has_api_key() else "offline")
        self.run = None

    def start(self, cfg: dict, name: str, extra: dict | None = None) -> None:
        wandb = self.wandb
        directory = Path(os.environ.get("WANDB_DIR") or self.run_dir)
        directory.mkdir(parents=True, exist_ok=True)
        try:
            self.run = wandb.init(project=self.project, name=name, config=dict(cfg, **(extra or {})),
                                  job_type="train", dir=str(directory), mode=self.mode,
                                  settings=wandb.Settings(console="off", silent=True))
        except wandb.errors.Error as e:
            raise UserError(f"W&B could not start a run ({e}): check WANDB_API_KEY, or set WANDB_MODE=offline") from e
        where = self.run.url if self.mode == "online" else f"offline, in {self.run.settings.sync_dir}"
        print(f"W&B run {name} ({where})")

    def log_epoch(self, row: dict) -> None:
        self.run.log(epoch_metrics(row), step=int(row["epoch"]))

    def finish(self, metrics: dict, checkpoint: tuple[Path, Path], data_md5: dict, extra: dict | None = None) -> None:
        """metrics: {"validation": {...}, "test": {...} or None}; checkpoint: its safetensors and JSON files."""
        for split, values in metrics.items():
            for key, value in (values or {}).items():
                self.run.summary[f"{split}/{key}"] = value
        extra = dict(extra or {}, weights_sha256=sha256_file(checkpoint[0]))
        for key, value in extra.items():
            self.run.summary[key] = value
        artifact = self.wandb.Artifact(artifact_name(Path(checkpoint[0]).stem), type="model",
                                       metadata=dict(data_md5=data_md5, metrics=metrics, **extra))
        for path in checkpoint:
            artifact.add_file(str(path))
        self.run.log_artifact(artifact)
        self._end(0)

    def abort(self) -> None:
        """The training failed or was interrupted: end the run as failed (no-op when none is running)."""
        if self.run is not None:
            self._end(1)

    def _end(self, exit_code: int) -> None:
        sync_dir = self.run.settings.sync_dir
        self.run.finish(exit_code=exit_code)
        self.run = None
        self.wandb.teardown()  # waits until wandb's service has written (or uploaded) everything
        if self.mode == "offline":
            print(f"W&B run saved offline; to upload it: wandb sync {sync_dir}")
