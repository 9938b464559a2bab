"""Distillation (recipes with `distill_alpha > 0`, e.g. cnn9's `cpu-distill`): the student trains from random
initialisation on a teacher checkpoint's soft targets, computed for exactly the views it is trained on
("consistent teaching", Beyer et al. 2022), as well as on the labels.

Views. Every training image has `distill_views` fixed augmented views, given by their parameters (crop
offsets, flip, photo round trip: `data.draw_augment`'s choices) drawn once from a generator seeded by the
run's seed: view 0 is the image itself, view 1 its mirror, views 2.. random crops (zero padding) with a
random flip; in every view, a seeded share `photo_augment` of the images also goes through the photo round
trip (as in the plain CPU recipe, to keep the photo-like drop small).

Teacher targets. The teacher (any checkpoint with the same classes, `inference.load_classifier`) computes
its raw logits (no calibration temperature) for every (view, image) once, at its own input size and
normalisation (`Classifier.logits`, fp32), on the run's device. They are kept in fp32 under
`runs/teacher-cache/KEY/` in resumable parts (`features.cached_parts`); KEY digests everything they depend
on (the teacher's weights sha256 and input config, the data, the training indices, views, seed, padding,
photo share). The seconds they took are the run's `teacher_targets` phase.

Each epoch the student draws one view per image (seeded by (seed, epoch)), sees that view's pixels, and
minimises (Hinton et al. 2015)

    alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, label)
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ..common.meta import CheckpointError, checkpoint_paths, read_meta
from ..data import apply_augment, draw_augment
from ..inference import Classifier, load_classifier
from .features import PART, cache_key, cached_parts

LOSS = "alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE(student, label)"


def check_config(cfg: dict) -> None:
    """A distillation needs a teacher checkpoint that exists and sane settings; a teacher without distillation is
    a mistake too. Raises ValueError, or CheckpointError (missing or damaged teacher), saying what to do."""
    alpha, teacher = float(cfg.get("distill_alpha") or 0.0), cfg.get("teacher")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"distill_alpha={alpha}: the weight of the teacher's term must be in [0, 1]")
    if alpha == 0.0:
        if teacher:
            raise ValueError(f"a teacher ({teacher}) was given but recipe {cfg.get('recipe')} does not distil "
                             f"(distill_alpha=0): use a distillation recipe (e.g. --model cnn9 --recipe cpu-distill) "
                             f"or set --distill-alpha")
        return
    if not teacher:
        raise ValueError(f"recipe {cfg.get('recipe')} distils from a teacher: pass --teacher CHECKPOINT "
                         f"(e.g. --teacher checkpoints/efficientnet_b0)")
    if cfg.get("freeze"):
        raise ValueError("distillation trains the student end to end: freeze must be 0")
    if int(cfg["distill_views"]) < 1 or float(cfg["distill_temperature"]) <= 0:
        raise ValueError("distill_views must be at least 1 and distill_temperature positive")
    try:
        read_meta(teacher)  # both files there and a checkpoint description (the weights are checked on loading)
    except CheckpointError as e:
        raise CheckpointError(f"teacher {teacher}: {e}") from None


def teacher_name(path) -> str:
    """'checkpoints/efficientnet_b0', '.json' or '.safetensors' -> 'checkpoints/efficientnet_b0' (one spelling,
    so that a resumed run's recipe matches)."""
    return str(checkpoint_paths(path)[0].with_suffix(""))


def load_teacher(path, class_names: list[str], device) -> Classifier:
    """The teacher checkpoint, or an error that names it and what to do."""
    try:
        with torch.random.fork_rng(devices=[]):  # building it must not move the student's random stream
            teacher = load_classifier(path, device)
    except CheckpointError as e:
        raise CheckpointError(f"teacher {path}: {e}") from None
    if teacher.classes != list(class_names):
        raise ValueError(f"teacher {path} predicts other classes than this data set's ({len(teacher.classes)} "
                         f"classes, first {teacher.classes[:3]}): distil from a CIFAR-100 checkpoint")
    return teacher


def teacher_record(teacher: Classifier, path) -> dict:
    """What the student's checkpoint says about its teacher (the dashboard's card reads it; no torch there)."""
    test = (teacher.meta.get("metrics") or {}).get("test") or {}
    return dict(checkpoint=teacher.checkpoint, path=str(path), model=teacher.name, title=teacher.entry_title,
                weights_sha256=teacher.meta.get("weights_sha256"), recipe=teacher.meta.get("recipe", {}).get("recipe"),
                input_size=teacher.data_config["input_size"], test_top1=test.get("top1"))


def view_params(n: int, views: int, seed: int, pad: int, photo: float) -> dict[str, torch.Tensor]:
    """The augmentation choices of every view of n images, each (views, n): dy, dx, flip (and resample with
    photo > 0), for `data.apply_augment`. View 0 is the image, view 1 its mirror (see the module docstring)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + 977)
    p = {k: v.view(views, n) for k, v in draw_augment(views * n, g, pad, True, photo).items()}
    p["dy"][:2] = p["dx"][:2] = pad  # padded by `pad` and cropped at (pad, pad): the image itself...
    p["flip"][0], p["flip"][1:2] = False, True  # ...and its mirror
    return p


def params_at(params: dict, view, index) -> dict:
    """The choices of (view, image) pairs: view and index are equal-length tensors (or a view and a slice)."""
    return {k: v[view, index] for k, v in params.items()}


def teacher_targets(teacher: Classifier, images: torch.Tensor, params: dict, *, device, pad: int, cache_dir,
                    key: dict, batch_size: int = 128, rank: int = 0, world: int = 1, barrier=lambda: None,
                    desc: str = "teacher targets") -> tuple[torch.Tensor, float]:
    """fp32 (views, N, classes) teacher logits for every view of the uint8 `images` (host), computed once
    and cached in resumable parts, and the seconds they took in all."""
    views = len(params["dy"])

    def compute(v: int, p: int, bar) -> torch.Tensor:
        part = slice(p * PART, (p + 1) * PART)
        chunk = apply_augment(images[part].to(device), params_at(params, v, part), pad)  # as the student sees it
        out = []
        for i in range(0, len(chunk), batch_size):
            out.append(teacher.logits(chunk[i:i + batch_size], batch_size))
            bar.update(len(out[-1]))
        return torch.cat(out).float()

    return cached_parts(Path(cache_dir) / cache_key(**key), key, views, len(images), compute, rank=rank,
                        world=world, barrier=barrier, desc=desc)


def epoch_choices(perm: torch.Tensor, g: torch.Generator, params: dict, targets: torch.Tensor) -> dict:
    """An epoch's draw: one view per image, its augmentation choices and the teacher's logits, per position."""
    view = torch.randint(0, len(targets), (len(perm),), generator=g)
    return dict(params_at(params, view, perm), view=view, teacher=targets[view, perm])


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, alpha: float,
                 temperature: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """Hinton's loss (see the module docstring); the KL term is averaged over the batch."""
    t = temperature
    soft = F.kl_div(F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1), reduction="batchmean",
                    log_target=True) * (t * t)
    if alpha == 1.0:
        return soft
    return alpha * soft + (1 - alpha) * F.cross_entropy(student, labels, label_smoothing=label_smoothing)


def loss_for(cfg: dict, device) -> Callable:
    """The run's loss: (float logits, labels, the batch's choices, which hold the teacher's logits)."""
    alpha, t, ls = float(cfg["distill_alpha"]), float(cfg["distill_temperature"]), float(cfg["label_smoothing"])
    return lambda logits, y, choice: distill_loss(logits, choice["teacher"].to(device, non_blocking=True), y,
                                                  alpha, t, ls)


def settings(cfg: dict, cache: str) -> dict:
    """The distillation settings a checkpoint records."""
    return dict(alpha=float(cfg["distill_alpha"]), temperature=float(cfg["distill_temperature"]),
                views=int(cfg["distill_views"]), photo_augment=float(cfg.get("photo_augment") or 0.0),
                crop_padding=int(cfg["crop_padding"]), loss=LOSS, label_smoothing=float(cfg["label_smoothing"]),
                targets="the teacher's raw logits (no calibration temperature) for each (view, image), fp32",
                cache_key=cache)
