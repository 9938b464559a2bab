"""Named default recipes. `scripts/train.py --model M [--recipe R]` starts from RECIPES[M or M-R];
every value can be overridden by a flag, and the resolved recipe is saved in the checkpoint."""
from __future__ import annotations

import copy

_COMMON = dict(
    seed=0,
    val_per_class=50,        # 5,000 validation images held out of the 50,000 (the test set is never used to choose)
    subset=None,             # train on about N images only (smoke runs)
    optimizer="sgd",         # sgd (Nesterov momentum) or adamw
    momentum=0.9,
    weight_decay=5e-4,       # not applied to biases and batch-norm parameters
    label_smoothing=0.1,
    warmup_epochs=1.0,       # linear warm-up, then the schedule
    schedule="cosine",       # cosine or linear decay to zero
    crop_padding=4,          # random crop with zero padding at 32x32, on whole batches
    flip=True,
    freeze_backbone=False,   # True: train only the classifier, on cached features of the frozen network
    pretrained=None,         # None (from scratch), "hub" (timm download) or the path of a weights file
    amp="auto",              # bf16 autocast: on for CUDA and for CPUs with native bf16
    compile=False,
)

_CPU_NOTE = "CPU-trained interim weights (2-core CPU, no GPU); to be replaced by the GPU recipe's checkpoint."

RECIPES = {
    # GPU recipes (the targets of the GPU-training issue).
    "cnn9": dict(_COMMON, model="cnn9", arch=dict(widths=[64, 128, 256, 512]), epochs=24, batch_size=512,
                 lr=0.4, label_smoothing=0.2, warmup_epochs=2.0, schedule="linear",
                 description="ResNet-9-style CNN from scratch, full width, GPU recipe"),
    "efficientnet_b0": dict(_COMMON, model="efficientnet_b0", arch=dict(drop_rate=0.2, drop_path_rate=0.2),
                            pretrained="hub", epochs=10, batch_size=128, lr=0.04, weight_decay=1e-4,
                            description="EfficientNet-B0 fine-tuned end to end from ImageNet-1k at 224 px, "
                                        "GPU recipe"),
    # CPU recipes: about an hour on a 2-core laptop CPU; interim weights until a GPU run replaces them.
    "cnn9-cpu": dict(_COMMON, model="cnn9", arch=dict(widths=[32, 64, 128, 256]), epochs=15, batch_size=256,
                     lr=0.2, notes=_CPU_NOTE, description="ResNet-9-style CNN from scratch, half width, CPU recipe"),
    "efficientnet_b0-cpu": dict(_COMMON, model="efficientnet_b0", arch=dict(drop_rate=0.2, drop_path_rate=0.2),
                                pretrained="hub", freeze_backbone=True, epochs=30, batch_size=256,
                                optimizer="adamw", lr=1e-3, weight_decay=0.05, crop_padding=0, flip=False, notes=_CPU_NOTE,
                                description="EfficientNet-B0 with frozen ImageNet-1k backbone; new 100-class "
                                            "head trained on cached 224 px features, CPU recipe"),
}


def get_recipe(model: str, recipe: str = "default") -> dict:
    key = model if recipe in (None, "", "default") else f"{model}-{recipe}"
    if key not in RECIPES:
        raise KeyError(f"no recipe {key!r}; known: {sorted(RECIPES)}")
    return copy.deepcopy(dict(RECIPES[key], recipe=key))
