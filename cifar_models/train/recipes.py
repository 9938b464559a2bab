"""Recipes: the defaults every run starts from (`COMMON`), overridden by the model's named recipe in
its registry entry (`models.py`), then by command-line flags. The resolved recipe is saved in the
checkpoint and in the resumable state."""
from __future__ import annotations

import copy

from ..common.errors import UnknownNameError
from ..models import get_entry

COMMON = dict(
    seed=0,
    val_per_class=50,        # 5,000 validation images held out of the 50,000 (the test set is never used to choose)
    subset=None,             # train on about N images only (smoke runs)
    arch={},                 # architecture options passed to the model's builder
    input_size=None,         # None: the model's own input size (registry data_config)
    sizes=None,              # progressive resizing, end to end: [[size, epochs], ...]; the last epoch's size ships
    optimizer="sgd",         # sgd (Nesterov momentum) or adamw
    momentum=0.9,
    weight_decay=5e-4,       # not applied to biases and batch-norm parameters
    label_smoothing=0.1,
    warmup_epochs=1.0,       # linear warm-up, then the schedule
    schedule="cosine",       # cosine or linear decay to zero
    crop_padding=4,          # random crop with zero padding at 32x32, on whole batches
    flip=True,
    photo_augment=0.0,       # share of training images sent through the photo round trip (upscale, area downscale)
    freeze=0,                # 0: train end to end; k: freeze the first k stages and train the rest on their cached output
    cache_views=2,           # with freeze: augmented views cached per training image (original, mirror, random crops)
    pretrained=None,         # None (from scratch), "hub" (timm download) or the path of a weights file
    teacher=None,            # distillation (train/distill.py): the teacher checkpoint, e.g. checkpoints/efficientnet_b0
    distill_alpha=0.0,       # weight of the teacher's term (0: no distillation, labels only; 1: the teacher only)
    distill_temperature=4.0, # softmax temperature T of the teacher's and the student's logits in that term
    distill_views=4,         # fixed augmented views per training image whose teacher logits are cached
    flip_average=False,      # predictions (test report, app, ONNX) average the image and its mirror: twice the compute
    cutmix=0.0,              # share of steps whose inputs (images, or cached maps with freeze) get CutMix (train/mixing.py)
    ema_decay=0.0,           # > 0: validate and ship an exponential moving average of the weights (train/ema.py)
    amp="auto",              # bf16 autocast: on for CUDA and for CPUs with native bf16
    frozen_backend="auto",   # frozen stages and a teacher from pixels: torch, onnxruntime, or auto (onnx_forward.py)
    compile=False,
    channels_last=True,      # memory format of model and inputs (off: exact float agreement across process counts on CPU)
    notes=None,
    description="",
)


def size_at(cfg: dict, epoch: int) -> int | None:
    """The input size of epoch `epoch` (0-based) under the recipe's progressive `sizes` (None without them);
    epochs past the schedule keep its last size."""
    if not cfg.get("sizes"):
        return None
    end = 0
    for size, epochs in cfg["sizes"]:
        end += int(epochs)
        if epoch < end:
            return int(size)
    return int(cfg["sizes"][-1][0])


def list_recipes(model: str) -> list[str]:
    return sorted(get_entry(model).recipes)


def get_recipe(model: str, recipe: str = "default") -> dict:
    recipe = recipe or "default"
    entry = get_entry(model)
    if recipe not in entry.recipes:
        raise UnknownNameError(f"model {model!r} has no recipe {recipe!r}; known: {sorted(entry.recipes)}")
    name = model if recipe == "default" else f"{model}-{recipe}"
    return copy.deepcopy(dict(COMMON, **entry.recipes[recipe], model=model, recipe=name))
