"""Everything the dashboard asks of its models, on the checkpoints loaded in this process.

The dashboard runs this in its own process (`worker.py`), so that the web server starts and serves
without importing torch; `MODEL_PROCESS=0 python app.py` runs it inside the app instead. Either way the
app calls the same methods: `predict`, `explain`, `corrupted`, `live`, `gallery`, `warm_up`, `evaluate_images`,
and reads
`info` (what was loaded, what failed, the corruptions on offer).
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from .catalog import ModelInfo, load_reports, select, title
from .compare import BatchedCompare, disagreements, explain, load_all, model_inputs, warm_steps
from .corruptions import CORRUPTIONS, TITLES, scale
from .robustness import corrupted_comparison, robustness_summary, to_display
from .serving import MAX_BATCH
from .webcam import live_predictions

log = logging.getLogger("cifar_compare")


class LocalModels:
    """Every checkpoint in `checkpoint_dir`, loaded once, and the operations the dashboard runs on them.
    Thread-safe: predictions from many threads are batched together (`BatchedCompare`)."""

    def __init__(self, checkpoint_dir, device: str = "cpu"):
        self.checkpoint_dir = Path(checkpoint_dir)
        self.models, self.failed = load_all(checkpoint_dir, device)
        self.batched = BatchedCompare(self.models)
        self._evaluating = ThreadPoolExecutor(MAX_BATCH, thread_name_prefix="evaluate")
        self.reports = load_reports(checkpoint_dir, names=list(self.models))
        self._test_images = None
        self.info = dict(models={n: ModelInfo.of(c) for n, c in self.models.items()}, failed=dict(self.failed),
                         corruptions=[(n, TITLES[n], scale(n)) for n in CORRUPTIONS])

    def predict(self, image: Image.Image, names: list[str] | None = None) -> dict:
        """Top-5 of the named models (default: all) for one PIL image; see `compare.compare_inputs`."""
        return self.batched(image, names)

    def evaluate_images(self, images: list[Image.Image], names: list[str] | None = None) -> list[dict]:
        """`predict` for a chunk of images (Your images, scripts/evaluate.py --images): made into the models'
        inputs in parallel, then queued at once on the same micro-batcher as single predictions (one forward pass
        per model for the chunk, up to MAX_BATCH), where they give way to them: a visitor's /predict waits for
        at most the chunk's pass already running, never for the whole collection. Per image: calibrated top-5
        per model (as `predict`)."""
        chosen = select(self.models, names) if names else self.models
        inputs = list(self._evaluating.map(lambda image: model_inputs(chosen, image), images))
        return self.batched.batcher.submit_many([(x, list(chosen)) for x in inputs])

    def explain(self, name: str, image: Image.Image, class_name: str) -> Image.Image:
        """Grad-CAM of `class_name` for checkpoint `name`, overlaid on the image."""
        return explain(self.models[name], image, class_name)

    def corrupted(self, names: list[str], image: Image.Image, severities: dict[str, int], seed: int = 0) -> dict:
        """The Robustness lab: the image as the models see it, corrupted, and each named model's top-5 on it:
        {"original": PIL, "corrupted": PIL, "summary": markdown, "models": {name: {"top": [...], ...}}}."""
        models = select(self.models, names)
        r = corrupted_comparison(models, image, severities, seed)
        return dict(original=to_display(r["original"]), corrupted=to_display(r["corrupted"]),
                    summary=robustness_summary(r, {n: title(m) for n, m in models.items()}), models=r["models"])

    def live(self, names: list[str], payload) -> tuple[dict, float]:
        """One webcam frame (Gradio's raw payload) through the named models: ({name: {label: p}}, ms)."""
        return live_predictions(select(self.models, names), payload)

    def test_images(self):
        """CIFAR-100's test images when the data set is on this machine (CIFAR100_DIR or ./data), else None."""
        if self._test_images is None:
            from .data import load_test_images
            self._test_images = (load_test_images(),)
        return self._test_images[0]

    def gallery(self, pair: tuple[str, str], folders=()) -> tuple[list, int, bool]:
        """The pair's disagreement gallery: ([(PIL image, caption)], how many test images differ, whether the
        images come from the local test set rather than the shipped PNGs in `folders`)."""
        images = self.test_images()
        items, differ = disagreements({n: self.reports[n] for n in pair}, tuple(pair), folders=folders,
                                      test_images=images)
        return items, differ, images is not None

    def warm_up(self) -> float:
        """The backend's kernels for every batch shape, prepared between requests only (a request waits for
        one small step at most). Returns the seconds it took."""
        t0 = time.perf_counter()
        for step in warm_steps(self.models, MAX_BATCH):
            self.batched.batcher.wait_idle()
            step()
        log.info("warm-up: every batch shape of %d model(s) prepared in %.1f s", len(self.models),
                 time.perf_counter() - t0)
        return time.perf_counter() - t0
