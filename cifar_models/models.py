"""The model registry (in the spirit of timm's `_registry.py`): one entry per model says everything
about it, and nothing outside this file branches on a model's name.

An entry holds
- `build(num_classes, pretrained, **arch)` -> (network, record of the starting weights);
- `data_config`: input size, interpolation, mean and std (saved in every checkpoint, read back by inference);
- `title`, `color`, `description`: how the dashboard shows it;
- `stages(model)`: the network as a list of modules applied in order (the last is the classifier), so a
  recipe can freeze the first k stages and train the rest on their cached output;
- `explain_split(model)` -> (features, head): where Grad-CAM looks, the last spatial feature map and the
  rest of the network (default: timm's `forward_features` / `forward_head`, which cnn9 has too);
- `recipes`: named recipes ("default" for a GPU, "cpu", "cpu-distill", ...), overrides of `recipes.COMMON`.

    register(ModelEntry(...))        add a model (a test can register a toy one)
    get_entry("cnn9")                the entry; "timm:resnet18" makes one for any timm architecture
    build_model(name, arch, pretrained)
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from torch import nn

from .common.files import sha256_file  # noqa: F401  (re-exported)
from .data import CIFAR100_MEAN, CIFAR100_STD
from .common.errors import ConfigError, MissingFileError, UnknownNameError

TIMM_PREFIX = "timm:"
PALETTE = ("#E4572E", "#2E86AB", "#76B041", "#9B5DE5", "#F4A259", "#17BEBB", "#D81159", "#5C6B73")


@dataclass
class ModelEntry:
    name: str
    build: Callable[..., tuple[nn.Module, dict | None]]
    data_config: dict
    title: str
    description: str
    color: str = "#555555"
    recipes: dict[str, dict] = field(default_factory=dict)
    stages: Callable[[nn.Module], list[nn.Module]] | None = None  # None: default_stages
    explain_split: Callable[[nn.Module], tuple[Callable, Callable]] | None = None  # None: forward_features/_head


_REGISTRY: dict[str, ModelEntry] = {}


def register(entry: ModelEntry) -> ModelEntry:
    _REGISTRY[entry.name] = entry
    return entry


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name.startswith(TIMM_PREFIX):
        return timm_entry(name[len(TIMM_PREFIX):])
    raise UnknownNameError(f"unknown model {name!r}; choose from {list_models()} or any timm architecture as "
                           f"'{TIMM_PREFIX}NAME' (e.g. {TIMM_PREFIX}resnet18)")


def build_model(name: str, arch: dict | None = None, pretrained: str | None = None, num_classes: int = 100):
    """Build `name` with its architecture options. pretrained: None (random init), 'hub' (timm download)
    or the path of a local weights file. Returns (model, record of the starting weights)."""
    return get_entry(name).build(num_classes=num_classes, pretrained=pretrained, **(arch or {}))


def model_stages(name: str, model: nn.Module) -> list[nn.Module]:
    entry = get_entry(name)
    return (entry.stages or default_stages)(model)


def explain_split(name: str, model: nn.Module) -> tuple[Callable, Callable]:
    """(features, head) of a network for Grad-CAM: the map it weighs, and the logits computed from it."""
    split = get_entry(name).explain_split
    return split(model) if split else (model.forward_features, model.forward_head)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class Stage(nn.Module):
    """A piece of a network: `fn(x)`, owning `parts` (so their parameters belong to the stage)."""

    def __init__(self, fn: Callable, *parts: nn.Module):
        super().__init__()
        self.parts = nn.ModuleList(parts)
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def default_stages(model: nn.Module) -> list[nn.Module]:
    """Any timm-style network: everything up to the pooled features, then the classifier."""
    body = Stage(lambda x: model.forward_head(model.forward_features(x), pre_logits=True), model)
    return [body, model.get_classifier()]


# ----------------------------------------------------------------------------- timm models
def _timm_build(arch_name: str, num_classes: int, pretrained, **kwargs):
    """timm.create_model with pretrained None / 'hub' / a local file (timm's own offline path)."""
    import timm  # imported here so cnn9 alone never needs timm

    kwargs = dict(num_classes=num_classes, **kwargs)
    if pretrained is None:
        return timm.create_model(arch_name, pretrained=False, **kwargs), None
    if pretrained == "hub":
        return timm.create_model(arch_name, pretrained=True, **kwargs), {"source": "hub", "id": f"timm/{arch_name}"}
    path = Path(pretrained)
    if not path.is_file():
        raise MissingFileError(f"pretrained weights file {path} not found (--pretrained-file)")
    model = timm.create_model(arch_name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)
    return model, {"source": "file", "file": path.name, "sha256": sha256_file(path)}


@functools.lru_cache(maxsize=None)
def timm_entry(arch_name: str) -> ModelEntry:
    """An entry for any timm architecture: its input config comes from timm's pretrained config. Made once per
    architecture (memoised): the throwaway network that timm's config needs is built only the first time."""
    import timm
    from timm.data import resolve_data_config

    if not timm.is_model(arch_name):
        raise UnknownNameError(f"timm has no architecture {arch_name!r} (see timm.list_models())")
    cfg = resolve_data_config({}, model=timm.create_model(arch_name, pretrained=False, num_classes=1))
    data_config = dict(input_size=int(cfg["input_size"][-1]), interpolation=cfg["interpolation"],
                       mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))
    name = TIMM_PREFIX + arch_name
    color = PALETTE[int(hashlib.md5(name.encode()).hexdigest(), 16) % len(PALETTE)]
    common = dict(pretrained="hub", optimizer="adamw", lr=1e-3, weight_decay=0.05, batch_size=128, epochs=10)
    return ModelEntry(
        name=name, build=lambda num_classes=100, pretrained=None, **kw: _timm_build(arch_name, num_classes,
                                                                                    pretrained, **kw),
        data_config=data_config, title=f"{arch_name} · timm", color=color,
        description=f"timm {arch_name} fine-tuned on CIFAR-100",
        recipes={"default": dict(common), "cpu": dict(common, freeze=1, cache_views=2, epochs=30, batch_size=256)})


# ----------------------------------------------------------------------------- cnn9
def conv_bn(c_in: int, c_out: int, pool: bool = False) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class Residual(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn(c, c), conv_bn(c, c))

    def forward(self, x):
        return x + self.body(x)


class CNN9(nn.Module):
    """ResNet-9 (Myrtle.ai / airbench family): 8 conv-BN-ReLU layers, two residual blocks,
    max-pooling, and a linear head: 9 weight layers, made for 32x32 input."""

    def __init__(self, num_classes: int = 100, widths=(64, 128, 256, 512), head_scale: float = 0.125):
        super().__init__()
        w0, w1, w2, w3 = widths
        self.features = nn.Sequential(
            conv_bn(3, w0),                      # 32x32
            conv_bn(w0, w1, pool=True),          # 16x16
            Residual(w1),
            conv_bn(w1, w2, pool=True),          # 8x8
            conv_bn(w2, w3, pool=True),          # 4x4
            Residual(w3),
        )
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(w3, num_classes)
        self.head_scale = head_scale  # small logits at init: a known stabiliser for this net

    def forward_features(self, x):
        """The last spatial feature map (N, C, 4, 4) at 32 px input (timm's naming)."""
        return self.features(x)

    def forward_head(self, x, pre_logits: bool = False):
        x = self.pool(x).flatten(1)
        return x if pre_logits else self.head(x) * self.head_scale

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def _cnn9_build(num_classes=100, pretrained=None, widths=(64, 128, 256, 512)):
    if pretrained:
        raise ConfigError("cnn9 is trained from scratch; it has no pretrained weights (drop --pretrained-file)")
    return CNN9(num_classes, tuple(widths)), None


def _cnn9_stages(m: CNN9) -> list[nn.Module]:
    return [*m.features, Stage(lambda x: m.forward_head(x, pre_logits=True), m.pool),
            Stage(lambda x: m.head(x) * m.head_scale, m.head)]


_CPU_NOTE = "CPU-trained weights (2-core CPU, no GPU); a GPU recipe's checkpoint will replace them."

register(ModelEntry(
    name="cnn9", build=_cnn9_build, stages=_cnn9_stages,
    data_config=dict(input_size=32, interpolation="bilinear", mean=CIFAR100_MEAN, std=CIFAR100_STD),
    title="cnn9 · 9-layer CNN, from scratch", color="#E4572E",
    description="9-layer ResNet-style CNN for 32x32 input, trained from scratch",
    recipes={
        # GPU: three quarters of the full ResNet-9 width, so that the shipped fp16 weights stay under 10 MB (7.5 MB;
        # the full width, 64-128-256-512, is 13.2 MB). Not yet run on a GPU.
        "default": dict(arch=dict(widths=[48, 96, 192, 384]), epochs=24, batch_size=512, lr=0.4,
                        label_smoothing=0.2, warmup_epochs=2.0, schedule="linear",
                        description="ResNet-9-style CNN from scratch, three-quarter width, GPU recipe"),
        # Predictions average the image and its mirror (flip_average): +1.4 points on validation for the
        # shipped weights (68.92 -> 70.36%, fp32), for a second forward pass (3.3 -> 6.4 ms per image on the
        # AVX2-only 2-core CPU, BENCHMARKS.md).
        "cpu": dict(arch=dict(widths=[32, 64, 128, 256]), epochs=15, batch_size=256, lr=0.2, photo_augment=0.5,
                    flip_average=True, notes=_CPU_NOTE,
                    description="ResNet-9-style CNN from scratch, half width, CPU recipe"),
        # The same network and schedule from random initialisation, taught by a teacher checkpoint (--teacher,
        # required) on 4 fixed views per image whose teacher logits are computed once (train/distill.py).
        # Alpha 0.5 beat 0.9 on validation (70.32 against 68.90%, 15 epochs each, teacher: the shipped B0), and
        # 17 epochs beat 15 (72.60 against 71.64% with flip averaging); 17 is what the time bars leave.
        "cpu-distill": dict(arch=dict(widths=[32, 64, 128, 256]), epochs=17, batch_size=256, lr=0.2,
                            photo_augment=0.5, label_smoothing=0.0, distill_alpha=0.5, distill_temperature=4.0,
                            distill_views=4, flip_average=True, notes=_CPU_NOTE,
                            description="ResNet-9-style CNN from scratch, distilled from a teacher on fixed "
                                        "augmented views per image, half width, CPU recipe"),
    }))


# ----------------------------------------------------------------------------- efficientnet_b0
TIMM_EFFICIENTNET_B0 = "tf_efficientnet_b0.in1k"  # ImageNet-1k weights; the bare name means Noisy Student


def _efficientnet_stages(m: nn.Module) -> list[nn.Module]:
    """stem, the 7 block stages, conv_head (+ pooling), classifier (+ dropout): 10 stages, composing forward()."""
    import torch.nn.functional as F

    def pooled(x):
        return m.global_pool(m.bn2(m.conv_head(x)))

    def classify(x):
        return m.classifier(F.dropout(x, m.drop_rate, m.classifier.training) if m.drop_rate else x)

    return [nn.Sequential(m.conv_stem, m.bn1), *m.blocks, Stage(pooled, m.conv_head, m.bn2, m.global_pool),
            Stage(classify, m.classifier)]


register(ModelEntry(
    name="efficientnet_b0", stages=_efficientnet_stages,
    build=lambda num_classes=100, pretrained=None, drop_rate=0.2, drop_path_rate=0.2: _timm_build(
        TIMM_EFFICIENTNET_B0, num_classes, pretrained, drop_rate=drop_rate, drop_path_rate=drop_path_rate),
    data_config=dict(input_size=224, interpolation="bicubic", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    title="EfficientNet-B0 · ImageNet-pretrained", color="#2E86AB",
    description="EfficientNet-B0 (timm tf_efficientnet_b0) fine-tuned from ImageNet-1k weights",
    recipes={
        "default": dict(arch=dict(drop_rate=0.2, drop_path_rate=0.2), pretrained="hub", epochs=10, batch_size=128,
                        lr=0.04, weight_decay=1e-4,
                        description="EfficientNet-B0 fine-tuned end to end from ImageNet-1k at 224 px, GPU recipe"),
        # CPU: end to end, with progressive resizing (as FFCV and EfficientNetV2 do): 4 epochs at 128 px, then 2 at
        # 160, whose size ships. Every layer adapts to upscaled 32 px images, with fresh crops every epoch, which the
        # frozen-stage recipes (cpu-frozen, cpu-v2) cannot: they flatten at 82-82.5% on validation (BENCHMARKS.md).
        # AdamW at 5e-4 learnt fastest of four one-epoch pilots on 8,000 images (SGD 0.03 / 0.01: 26.5 / 32.2%,
        # AdamW 5e-4 / 1e-3: 46.6 / 46.4% on 800 validation images). Predictions average the image and its mirror
        # (flip_average): +0.40 points on validation (82.96 -> 83.36%, `evaluate.py --choose-flip-average`, session
        # 14) for a second forward pass; the app's throughput stays at its bar with it (85-86% of bare Gradio on
        # the AMX machine, README, Speed).
        "cpu": dict(arch=dict(drop_rate=0.2, drop_path_rate=0.1), pretrained="hub", sizes=[[128, 4], [160, 2]],
                    epochs=6, batch_size=128, optimizer="adamw", lr=5e-4, weight_decay=0.05, warmup_epochs=0.3,
                    photo_augment=0.25, flip_average=True, notes=_CPU_NOTE,
                    description="EfficientNet-B0 from ImageNet-1k, fine-tuned end to end at 128 then 160 px "
                                "(progressive resizing), flip averaging, CPU recipe"),
        # CPU, the earlier recipe (shipped until session 8): the first 6 stages (stem + block stages 1-5) stay
        # frozen; their 12x12 output at 192 px is computed once for 4 views of every training image (original,
        # mirror, 2 random crops) and cached in fp16; block stages 6-7, conv_head and a new classifier are
        # fine-tuned on it.
        "cpu-frozen": dict(arch=dict(drop_rate=0.2, drop_path_rate=0.2), pretrained="hub", input_size=192, freeze=6,
                    cache_views=4, epochs=8, batch_size=128, optimizer="adamw", lr=1e-3, weight_decay=0.05,
                    warmup_epochs=0.5, notes=_CPU_NOTE,
                    description="EfficientNet-B0 from ImageNet-1k, stages 6-7 + head fine-tuned on cached "
                                "stage-5 feature maps at 192 px, CPU recipe"),
        # A second CPU recipe (one full run: no gain on validation over cpu, BENCHMARKS.md): the same cut, 6 views,
        # half of each view through the photo round trip (the view rule of cnn9's distillation, so that a student
        # of this checkpoint takes its teacher targets from this run's cache, train/distill.py), 9 epochs, a
        # weight average validated and shipped, and predictions that average the image and its mirror.
        "cpu-v2": dict(arch=dict(drop_rate=0.2, drop_path_rate=0.2), pretrained="hub", input_size=192, freeze=6,
                       cache_views=6, photo_augment=0.5, epochs=9, batch_size=128, optimizer="adamw", lr=1e-3,
                       weight_decay=0.05, warmup_epochs=0.5, ema_decay=0.998, flip_average=True, notes=_CPU_NOTE,
                       description="EfficientNet-B0 from ImageNet-1k, stages 6-7 + head fine-tuned on 6 cached "
                                   "views of stage-5 maps at 192 px, weight average, flip averaging, CPU recipe"),
        # The earlier CPU recipe: frozen network, new classifier on cached pooled features.
        "cpu-head": dict(arch=dict(drop_rate=0.2, drop_path_rate=0.2), pretrained="hub", freeze=9, cache_views=1,
                         epochs=30, batch_size=256, optimizer="adamw", lr=1e-3, weight_decay=0.05, crop_padding=0,
                         flip=False, notes=_CPU_NOTE,
                         description="EfficientNet-B0 with frozen ImageNet-1k backbone; new 100-class head "
                                     "trained on cached 224 px features, CPU recipe"),
    }))
