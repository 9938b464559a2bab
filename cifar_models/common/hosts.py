"""The one interface between the dashboard and its models: `ModelHost`.

Two classes implement it: `serve.host.LocalModels` runs the operations on checkpoints loaded in this
process; `dashboard.client.ModelProcess` sends the same calls to the model process (`serve/worker.py`),
so that the web process never imports torch. The dashboard only ever holds a `ModelHost`.

No torch here: the web process imports this module.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image


WORKER_ENV = "CIFAR_COMPARE_WORKER"  # how the model process finds the web process: host:port:key (hex)


class ModelProcessError(RuntimeError):
    """The models are not available: the model process could not start, or stopped."""


@dataclass(frozen=True)
class ModelInfo:
    """A loaded checkpoint as the web process sees it: everything but the network."""
    checkpoint: str   # the checkpoint's name (its file name)
    name: str         # the registry model it is (cnn9, efficientnet_b0, timm:...)
    entry_title: str  # its registry entry's title
    color: str        # its registry entry's colour
    meta: dict        # the checkpoint's JSON
    num_params: int

    @property
    def data_config(self) -> dict:
        return self.meta["data_config"]

    @classmethod
    def of(cls, clf) -> "ModelInfo":
        """The description of an `inference.Classifier`."""
        return cls(clf.checkpoint, clf.name, clf.entry_title, clf.color, clf.meta, clf.num_params)


@dataclass(frozen=True)
class HostInfo:
    """What a host loaded: checkpoint name -> ModelInfo, in the folder's order, and name -> why it failed."""
    models: dict[str, ModelInfo] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


class ModelHost(ABC):
    """Everything the dashboard asks of its models. Results are plain data (dicts, lists, PIL images), so they
    cross a process boundary unchanged. Unknown checkpoint names raise KeyError; an image that cannot be used
    raises `images.ImageInputError`; models that are not available raise ModelProcessError."""

    info: HostInfo

    @abstractmethod
    def predict(self, image: "Image.Image", names: list[str] | None = None) -> dict:
        """Top-5 of the named checkpoints (default: all) for one PIL image: {name: {"top": [{"label",
        "probability"}], "superclass", "milliseconds"}, "agree": bool, "batch": int}."""

    @abstractmethod
    def explain(self, name: str, image: "Image.Image", class_name: str) -> "Image.Image":
        """Grad-CAM of `class_name` for checkpoint `name`, overlaid on the image."""

    @abstractmethod
    def corrupted(self, names: list[str], image: "Image.Image", severities: dict[str, int], seed: int = 0) -> dict:
        """The Robustness lab: {"original": PIL, "corrupted": PIL, "summary": markdown, "models": {name:
        {"top": [...], "clean_top": [...], ...}}}."""

    @abstractmethod
    def live(self, names: list[str], payload) -> tuple[dict, float]:
        """One webcam frame (Gradio's raw payload) through the named models: ({name: {label: p}}, ms)."""

    @abstractmethod
    def gallery(self, pair: tuple[str, str], folders: tuple = ()) -> tuple[list, int, bool]:
        """The pair's disagreement gallery: ([(PIL image, caption)], how many test images differ, whether the
        images come from the local test set rather than the shipped PNGs in `folders`)."""

    @abstractmethod
    def evaluate_images(self, images: list["Image.Image"], names: list[str] | None = None) -> list[dict]:
        """`predict` for a chunk of images (Your images): one answer per image, each as `predict`'s. The chunk
        gives way to single predictions: a visitor's `predict` waits for at most the chunk's pass running."""

    @abstractmethod
    def warm_up(self) -> float:
        """Prepare the backend's kernels for every batch shape, between requests only; the seconds it took."""

    def close(self) -> None:
        """Release what the host holds (the model process ends); nothing by default."""


def select(models: dict, names) -> dict:
    """The named models, in the order asked; KeyError naming what is loaded for an unknown name."""
    unknown = [n for n in names if n not in models]
    if unknown:
        raise KeyError(f"no loaded model named {', '.join(map(repr, unknown))}; loaded: {', '.join(models)}")
    return {n: models[n] for n in dict.fromkeys(names)}
