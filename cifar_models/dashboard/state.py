"""The page's state: one object, made once when the app starts, that every tab reads.

It holds the `ModelHost` (the models, in their own process or in this one), what was loaded and what
failed, the analysis reports, the examples, and the figures made so far (each made once per choice of
models: `figure`).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..common.hosts import HostInfo, ModelHost, ModelInfo, select
from ..common.meta import title
from .catalog import MAX_SHOWN, default_shown

GRADIO_PHOTOS = ("lion.jpg", "cheetah.jpg", "tower.jpg")  # real photos gradio ships as demo media (Apache-2.0)


def example_images(examples_dir: Path) -> list[str]:
    """The CIFAR-100 test images shipped in examples/cifar, then a few real photos from gradio's demo media."""
    cifar = sorted(str(p) for p in (examples_dir / "cifar").glob("*.png"))
    try:
        import gradio.media as media
        photos = [media.get_image(n) for n in GRADIO_PHOTOS]
    except Exception:
        photos = []
    return cifar + [p for p in photos if Path(p).is_file()]


@dataclass
class PageState:
    host: ModelHost
    checkpoint_dir: Path
    reports: dict[str, dict]        # checkpoint name -> its NAME.eval.json, where there is one
    examples_dir: Path              # examples/ (cifar/ and disagreements/)
    examples: list[str] = field(default_factory=list)
    info: HostInfo | None = None    # what the page shows: the host's (default), or the catalog it is loading
    models: dict[str, ModelInfo] = field(init=False)
    failed: dict[str, str] = field(init=False)
    _figures: dict = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self):
        info = self.info or self.host.info
        self.models = dict(info.models)
        self.failed = dict(info.failed)

    @property
    def safe_roots(self) -> tuple[Path, ...]:
        """Besides Gradio's upload cache, the only folders an image is read from."""
        return (self.examples_dir,)

    @property
    def n_slots(self) -> int:
        """How many models side by side the page has room for."""
        return min(MAX_SHOWN, len(self.models))

    @property
    def start(self) -> list[str]:
        """The checkpoints shown before anyone picks."""
        return default_shown(self.models, MAX_SHOWN)

    def titles(self) -> dict[str, str]:
        """Checkpoint name -> display title."""
        return {n: title(m) for n, m in self.models.items()}

    def shown(self, names) -> dict[str, ModelInfo]:
        """The picked checkpoints (names) as {name: ModelInfo}, in the order picked; the default when none."""
        picked = [n for n in (names or []) if n in self.models][:MAX_SHOWN]
        return select(self.models, picked or self.start)

    def with_images(self) -> list[str]:
        """The checkpoints whose reports hold every test image's prediction (for the disagreement gallery)."""
        return [n for n in self.reports if self.reports[n].get("images")]

    def figure(self, key: tuple, make: Callable):
        """The figure for `key` (a kind and a choice of models), made once: plotly figures take tens of ms each,
        so a page gets them when it loads, the default choice's made by the warm-up."""
        with self._lock:
            if key in self._figures:
                return self._figures[key]
        value = make()
        with self._lock:
            if len(self._figures) > 512:
                self._figures.clear()
            return self._figures.setdefault(key, value)
