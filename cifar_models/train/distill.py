"""Distillation (recipes with `distill_alpha > 0`, e.g. cnn9's `cpu-distill`): the student trains from random
initialisation on a teacher checkpoint's soft targets, computed for exactly the views it is trained on
("consistent teaching", Beyer et al. 2022), as well as on the labels.

Views. Every training image has `distill_views` fixed augmented views, given by their parameters (crop
offsets, flip, photo round trip: `data.draw_augment`'s choices), drawn once by `features.view_params`, the
rule the frozen-stage caches use too: view 0 is the image itself, view 1 its mirror, views 2.. random crops
(zero padding) with a random flip; in every view, a seeded share `photo_augment` of the images also goes
through the photo round trip (as in the plain CPU recipe, to keep the photo-like drop small).

Teacher targets. The teacher (any checkpoint with the same classes, `inference.load_classifier`) computes
its raw logits (no calibration temperature, no flip averaging) for every (view, image) once, at its own
input size and normalisation (`Classifier.logits`, fp32), on the run's device. They are kept in fp32 under
`runs/teacher-cache/KEY/` in resumable parts (`features.cached_parts`); KEY digests everything they depend
on (the teacher's weights sha256 and input config, the data, the training indices, views, seed, padding,
photo share, source). The seconds they took are the run's `teacher_targets` phase.

A shortcut, when the teacher was trained with frozen stages (EfficientNet-B0's CPU recipe): its training
run cached the output of those stages for its views (features.py), and the views are the same rule, so
with the same seed, padding, photo share and training images, the student's views are the first
`distill_views` of the teacher's. The targets are then its trained stages run on that cache (`FrozenMaps`),
several times faster than the whole network on pixels. Before it is used, the shortcut's logits are
compared with the teacher's own on a few images (`check_frozen`); if they differ by more than `TOLERANCE`,
or the cache is missing, the targets come from pixels, and the run says which.

Each epoch the student draws one view per image (seeded by (seed, epoch)), sees that view's pixels, and
minimises (Hinton et al. 2015)

    alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, label)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ..common.meta import CheckpointError, checkpoint_paths, read_meta
from ..data import apply_augment, to_model_input
from ..inference import Classifier, load_classifier
from ..models import model_stages
from .features import (PART, cache_key, cached_parts, complete, fields_of_checkpoint, params_at, read_part,
                       run_stages)
from ..onnx_forward import onnx_forward

TOLERANCE = 0.1  # largest |logit| difference allowed between the frozen-cache shortcut and the teacher on pixels

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
    if cfg.get("cutmix"):
        raise ValueError("cutmix mixes two images, but the teacher's targets are for single views: "
                         "use --cutmix 0 with distillation")
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
    # The targets are the network's outputs on exactly the student's view: not averaged with its mirror, even
    # when the checkpoint's predictions are (data_config.flip_average).
    teacher.data_config = dict(teacher.data_config, flip_average=False)
    return teacher


def teacher_record(teacher: Classifier, path) -> dict:
    """What the student's checkpoint says about its teacher (the dashboard's card reads it; no torch there)."""
    test = (teacher.meta.get("metrics") or {}).get("test") or {}
    return dict(checkpoint=teacher.checkpoint, path=str(path), model=teacher.name, title=teacher.entry_title,
                weights_sha256=teacher.meta.get("weights_sha256"), recipe=teacher.meta.get("recipe", {}).get("recipe"),
                input_size=teacher.data_config["input_size"], test_top1=test.get("top1"))


@dataclass
class FrozenMaps:
    """A teacher's own training cache: the output of its first `k` stages for its views, and its later stages."""
    folder: Path
    key: str
    k: int
    stages: list


def frozen_maps(teacher: Classifier, feature_cache: Path, *, views: int, n: int, seed: int, pad: int, photo: float,
                indices: str) -> tuple[FrozenMaps | None, str]:
    """The teacher's training cache when it holds the student's views (see the module docstring), and why not."""
    fields = fields_of_checkpoint(teacher.meta)
    if fields is None:
        return None, "the teacher trained end to end (no frozen-stage cache)"
    differ = [k for k, v in dict(seed=seed, pad=pad, photo=float(photo), indices=indices).items() if fields[k] != v]
    if differ:
        return None, f"the teacher's frozen-stage cache has other {', '.join(differ)}"
    if fields["views"] < views:
        return None, f"the teacher's frozen-stage cache has {fields['views']} views, {views} needed"
    folder = Path(feature_cache) / cache_key(**fields)
    if not complete(folder, views, n):
        return None, f"the teacher's frozen-stage cache is not in {folder}"
    k = int(fields["stages"])
    return FrozenMaps(folder, folder.name, k, model_stages(teacher.name, teacher.model)[k:]), f"in {folder}"


def maps_logits(maps: FrozenMaps, x: torch.Tensor, device) -> torch.Tensor:
    """The teacher's logits (fp32, on the CPU) from a batch of its cached maps."""
    x = x.to(device).float()
    return run_stages(maps.stages, x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x).float().cpu()


def check_frozen(teacher: Classifier, maps: FrozenMaps, images: torch.Tensor, params: dict, pad: int, device,
                 n: int = 32) -> float:
    """Largest |logit| difference between the shortcut and the teacher on pixels, on the first n images of view 0
    (fp16 storage of the maps, and bf16 when the cache was made with autocast, make it small but not zero)."""
    n = min(n, len(images))
    pixels = apply_augment(images[:n], params_at(params, 0, slice(0, n)), pad)
    return float((teacher.logits(pixels) - maps_logits(maps, read_part(maps.folder, 0, 0)[:n], device)).abs().max())


def teacher_targets(teacher: Classifier, images: torch.Tensor, params: dict, *, device, pad: int, cache_dir,
                    key: dict, maps: FrozenMaps | None = None, batch_size: int = 128, rank: int = 0, world: int = 1,
                    barrier=lambda: None, desc: str = "teacher targets",
                    backend: str = "torch") -> tuple[torch.Tensor, float]:
    """fp32 (views, N, classes) teacher logits for every view of the uint8 `images` (host), computed once (from
    pixels, or from the teacher's frozen-stage `maps`) and cached in resumable parts, and the seconds they took.
    From pixels, backend "onnxruntime" (onnx_forward.py) runs the teacher there (fp32, as `teacher.logits`)."""
    views = len(params["dy"])
    pixels_logits = teacher.logits
    if maps is None and backend != "torch":
        cfg = teacher.data_config
        network = onnx_forward([teacher.model], to_model_input(images[:2], cfg))
        pixels_logits = lambda x, _: network(to_model_input(x, cfg))  # noqa: E731

    def compute(v: int, p: int, bar) -> torch.Tensor:
        part = slice(p * PART, (p + 1) * PART)
        if maps is None:  # the view's pixels, as the student sees them
            chunk, logits = apply_augment(images[part].to(device), params_at(params, v, part), pad), pixels_logits
        else:
            chunk, logits = read_part(maps.folder, v, p), lambda x, _: maps_logits(maps, x, device)
        out = []
        for i in range(0, len(chunk), batch_size):
            out.append(logits(chunk[i:i + batch_size], batch_size))
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


def settings(cfg: dict, teacher: dict) -> dict:
    """The distillation settings a checkpoint records (`teacher`: the run's record of it)."""
    return dict(alpha=float(cfg["distill_alpha"]), temperature=float(cfg["distill_temperature"]),
                views=int(cfg["distill_views"]), photo_augment=float(cfg.get("photo_augment") or 0.0),
                crop_padding=int(cfg["crop_padding"]), loss=LOSS, label_smoothing=float(cfg["label_smoothing"]),
                targets="the teacher's raw logits (no calibration temperature, no flip averaging) for each "
                        "(view, image), fp32",
                targets_source=teacher.get("targets_source"), cache_key=teacher["cache_key"])
