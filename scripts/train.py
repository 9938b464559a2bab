"""Train a CIFAR-100 classifier:  python scripts/train.py --model cnn9|efficientnet_b0|timm:NAME [--recipe cpu] [flags]
Distil one from a teacher checkpoint:
    python scripts/train.py --model cnn9 --recipe cpu-distill --teacher checkpoints/efficientnet_b0

Every recipe value can be overridden by a flag (see --help); the resolved recipe is saved in the
checkpoint. Running the same command again after an interruption resumes the run exactly.
Several GPUs (or CPU processes): torchrun --nproc_per_node=N scripts/train.py ..."""
import argparse
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cifar_models.cli import (add_debug_flag, device_name, fraction, non_negative_float, non_negative_int,  # noqa: E402
                              positive_float, positive_int, run)
from cifar_models.common.memory import reuse_freed_memory  # noqa: E402
from cifar_models.common.meta import CheckpointError  # noqa: E402
from cifar_models.models import list_models  # noqa: E402
from cifar_models.train.distill import check_config, teacher_name  # noqa: E402
from cifar_models.train.distributed import Dist  # noqa: E402
from cifar_models.train.loop import train  # noqa: E402
from cifar_models.onnx_forward import BACKENDS  # noqa: E402
from cifar_models.train.recipes import get_recipe  # noqa: E402
from cifar_models.train.tracking import DEFAULT_PROJECT, WandbLogger  # noqa: E402


def size_schedule(text: str) -> list[list[int]]:
    """--sizes 128x4,160x2,192x1: [[128, 4], [160, 2], [192, 1]] (input size x epochs, in order)."""
    try:
        pairs = [[int(v) for v in part.split("x")] for part in text.split(",")]
        if pairs and all(len(p) == 2 and p[0] > 0 and p[1] > 0 for p in pairs):
            return pairs
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{text!r} is not a size schedule like 128x4,160x2,192x1 (size x epochs)")


# Recipe values a flag can override (--batch-size sets batch_size ...), with their types (which reject bad values).
RECIPE_FLAGS = dict(epochs=positive_int, batch_size=positive_int, lr=positive_float, weight_decay=non_negative_float,
                    momentum=fraction, label_smoothing=fraction, warmup_epochs=non_negative_float,
                    crop_padding=non_negative_int, seed=non_negative_int, val_per_class=positive_int,
                    subset=positive_int, optimizer=str, schedule=str, freeze=non_negative_int,
                    cache_views=positive_int, input_size=positive_int, photo_augment=fraction, flip=bool, compile=bool,
                    channels_last=bool, distill_alpha=fraction, distill_temperature=positive_float,
                    distill_views=positive_int, ema_decay=fraction, cutmix=fraction,
                    flip_average=bool, sizes=size_schedule)
CHOICES = dict(optimizer=["sgd", "adamw"], schedule=["cosine", "linear"])

ARCH_FLAGS = dict(widths=lambda s: [int(w) for w in s.split(",")], drop_rate=float, drop_path_rate=float)


def parse(argv=None) -> tuple[argparse.Namespace, dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help=f"{', '.join(list_models())}, or timm:ARCH (any timm architecture)")
    p.add_argument("--recipe", default="default", help="default (GPU), cpu, ...: see the model's registry entry")
    p.add_argument("--data-dir", help="folder with CIFAR-100 train/test/meta (default: $CIFAR100_DIR, else "
                                      "data/cifar-100-python, downloaded when missing)")
    p.add_argument("--out", default="checkpoints", help="where NAME.safetensors and NAME.json go")
    p.add_argument("--name", help="checkpoint name (default: the model name)")
    p.add_argument("--run-dir", default="runs", help="resumable state and feature caches")
    p.add_argument("--restart", action="store_true", help="discard an interrupted run instead of resuming it")
    p.add_argument("--no-test", action="store_true", help="skip the final test-set evaluation (for sweeps)")
    p.add_argument("--no-verify", action="store_true", help="skip the md5 check (other data in CIFAR format)")
    p.add_argument("--pretrained-file", help="local ImageNet weights (safetensors) instead of the hub download")
    p.add_argument("--from-scratch", action="store_true", help="no pretrained weights")
    p.add_argument("--teacher", help="distillation recipes (cnn9 --recipe cpu-distill): the teacher checkpoint, e.g. "
                                     "checkpoints/efficientnet_b0")
    p.add_argument("--device", default="auto", type=device_name, help="auto, cpu, cuda, cuda:1...")
    p.add_argument("--amp", choices=["auto", "on", "off"], help="bf16 autocast")
    p.add_argument("--frozen-backend", choices=BACKENDS, help="what runs the frozen stages and a teacher from pixels "
                   "(auto: onnxruntime on a CPU without bf16, else torch)")
    for key, typ in RECIPE_FLAGS.items():
        kw = dict(action=argparse.BooleanOptionalAction) if typ is bool else dict(type=typ, choices=CHOICES.get(key))
        p.add_argument("--" + key.replace("_", "-"), **kw)
    for key, typ in ARCH_FLAGS.items():
        p.add_argument("--" + key.replace("_", "-"), type=typ, help="architecture option")
    p.add_argument("--log-wandb", action="store_true", help="track the run in Weights & Biases (rank 0; offline "
                   "without an API key: it prints the `wandb sync` command)")
    p.add_argument("--wandb-project", help=f"W&B project (default {DEFAULT_PROJECT}; needs --log-wandb)")
    add_debug_flag(p)
    a = p.parse_args(argv)
    if a.wandb_project and not a.log_wandb:
        p.error("--wandb-project needs --log-wandb")

    cfg = get_recipe(a.model, a.recipe)
    for key in RECIPE_FLAGS:
        if getattr(a, key) is not None:
            cfg[key] = getattr(a, key)
    for key in ARCH_FLAGS:
        if getattr(a, key) is not None:
            cfg["arch"][key] = getattr(a, key)
    if a.amp:
        cfg["amp"] = {"auto": "auto", "on": True, "off": False}[a.amp]
    if a.frozen_backend:
        cfg["frozen_backend"] = a.frozen_backend
    if a.pretrained_file:
        cfg["pretrained"] = a.pretrained_file
    if a.from_scratch:
        cfg["pretrained"] = None
    if a.teacher:
        cfg["teacher"] = teacher_name(a.teacher)
    cfg["device"] = a.device
    try:
        check_config(cfg)
    except (ValueError, CheckpointError) as e:
        p.error(str(e))
    return a, cfg


def main(argv=None):
    Dist.quiet_other_ranks()  # under torchrun only rank 0 prints anything, the recipe included
    a, cfg = parse(argv)
    command = "python scripts/train.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    tracker = WandbLogger(a.wandb_project or DEFAULT_PROJECT, a.run_dir) if a.log_wandb else None
    print(json.dumps({k: v for k, v in cfg.items() if k != "description"}))
    return train(cfg, data_dir=a.data_dir, out_dir=a.out, run_dir=a.run_dir, name=a.name, restart=a.restart,
                 run_test=not a.no_test, verify_md5=not a.no_verify, command=command, tracker=tracker)


if __name__ == "__main__":
    # First, before the big allocations: on a CPU, freed activations are kept for the next step (common/memory.py;
    # the checkpoint records it). A CUDA run's host memory holds little but the data set.
    reuse_freed_memory()
    run(main)
