"""Models built by name from one small registry (in the spirit of timm's `_registry.py`).

Each entry knows how to build its network and which input it expects (`data_config`): that dict
is saved in every checkpoint and read back by inference.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .data import CIFAR100_MEAN, CIFAR100_STD

TIMM_EFFICIENTNET_B0 = "tf_efficientnet_b0.in1k"  # ImageNet-1k weights; the bare name means Noisy Student


@dataclass
class ModelSpec:
    build: Callable[..., nn.Module]
    data_config: dict
    description: str


_REGISTRY: dict[str, ModelSpec] = {}


def register(name: str, data_config: dict, description: str):
    def wrap(fn):
        _REGISTRY[name] = ModelSpec(fn, data_config, description)
        return fn
    return wrap


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; choose from {list_models()}")
    return _REGISTRY[name]


def build_model(name: str, arch: dict | None = None, pretrained: str | None = None, num_classes: int = 100):
    """Build `name` with its architecture options. pretrained: None (random init), 'hub' (timm download)
    or the path of a local weights file. Returns (model, record of the starting weights)."""
    return get_spec(name).build(num_classes=num_classes, pretrained=pretrained, **(arch or {}))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


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


@register("cnn9", dict(input_size=32, interpolation="bilinear", mean=CIFAR100_MEAN, std=CIFAR100_STD),
          "9-layer ResNet-style CNN for 32x32 input, trained from scratch")
def cnn9(num_classes=100, pretrained=None, widths=(64, 128, 256, 512)):
    if pretrained:
        raise ValueError("cnn9 is trained from scratch; it has no pretrained weights")
    return CNN9(num_classes, tuple(widths)), None


# ----------------------------------------------------------------------------- efficientnet_b0
@register("efficientnet_b0", dict(input_size=224, interpolation="bicubic", mean=(0.485, 0.456, 0.406),
                                  std=(0.229, 0.224, 0.225)),
          "EfficientNet-B0 (timm tf_efficientnet_b0) fine-tuned from ImageNet-1k weights")
def efficientnet_b0(num_classes=100, pretrained=None, drop_rate=0.2, drop_path_rate=0.2):
    import timm  # imported here so cnn9 alone never needs timm

    kwargs = dict(num_classes=num_classes, drop_rate=drop_rate, drop_path_rate=drop_path_rate)
    if pretrained is None:
        return timm.create_model(TIMM_EFFICIENTNET_B0, pretrained=False, **kwargs), None
    if pretrained == "hub":
        model = timm.create_model(TIMM_EFFICIENTNET_B0, pretrained=True, **kwargs)
        return model, {"source": "hub", "id": f"timm/{TIMM_EFFICIENTNET_B0}"}
    path = Path(pretrained)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file {path} not found")
    # timm's own offline path: the file replaces the hub download, the 1000-class head is dropped.
    model = timm.create_model(TIMM_EFFICIENTNET_B0, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                              **kwargs)
    return model, {"source": "file", "file": path.name, "sha256": sha256_file(path)}
