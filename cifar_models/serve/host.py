"""`LocalModels`: the `ModelHost` over checkpoints loaded in this process.

The dashboard runs it in its model process (`serve/worker.py`), so that the web server starts and serves
without importing torch; `MODEL_PROCESS=0 python app.py` runs it inside the app instead. Either way the
dashboard calls the same typed methods (`common/hosts.py`).

Forward passes: PyTorch at first; then the warm-up moves predictions (compare, the Robustness lab, the webcam,
Your images) to onnxruntime, one model at a time between requests (`MODEL_BACKEND=auto`, the default, when
onnxruntime is installed; `torch` keeps PyTorch; `onnx_forward.serving_backend`). Heat maps keep the PyTorch
network: Grad-CAM needs its gradients.
"""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from ..common.hosts import HostInfo, ModelHost, ModelInfo, select
from ..common.limits import MAX_BATCH
from ..common.meta import CheckpointError, checkpoint_names, title
from ..common.reports import load_reports
from ..explain import heat_map
from ..inference import Classifier, checked_meta, load_classifier
from ..models import get_entry
from ..onnx_forward import serving_backend
from .batching import BatchedCompare, model_inputs, warm_steps
from .gallery import disagreements
from .lab import corrupted_comparison, live_predictions, robustness_summary, to_display

log = logging.getLogger("cifar_compare")


def load_all(checkpoint_dir="checkpoints", device="cpu") -> tuple[dict[str, Classifier], dict[str, str]]:
    """Every checkpoint in the folder, whatever its name (each one knows its model from its own JSON).
    Returns (name -> Classifier, name -> why it could not be loaded); each is logged, with the time taken."""
    t0 = time.perf_counter()
    models, failed = {}, {}
    for name in checkpoint_names(checkpoint_dir):
        t = time.perf_counter()
        try:
            models[name] = load_classifier(Path(checkpoint_dir) / name, device=device)
        except CheckpointError as e:
            failed[name] = str(e)
            log.warning("checkpoint %s not loaded: %s", name, e)
            continue
        log.info("loaded checkpoint %s (%s) in %.2f s", name, models[name].name, time.perf_counter() - t)
    log.info("%d checkpoint(s) loaded from %s in %.2f s%s", len(models), checkpoint_dir, time.perf_counter() - t0,
             f"; {len(failed)} failed" if failed else "")
    return models, failed


def catalog(checkpoint_dir) -> HostInfo:
    """What `load_all` will most likely give, from the checkpoints' JSON alone (no network built, no weights read),
    so that the page can be built while the networks load: the same names, descriptions and failures of the
    JSON. Weights that turn out damaged or not to fit are only found by loading them (then the two differ)."""
    models, failed = {}, {}
    for name in checkpoint_names(checkpoint_dir):
        try:
            meta = checked_meta(Path(checkpoint_dir) / name)
        except CheckpointError as e:
            failed[name] = str(e)
            continue
        entry = get_entry(meta["model"])
        models[name] = ModelInfo(name, meta["model"], entry.title, entry.color, meta, meta.get("num_params"))
    return HostInfo(models=models, failed=failed)


class LocalModels(ModelHost):
    """Every checkpoint in `checkpoint_dir`, loaded once, and the operations the dashboard runs on them.
    Thread-safe: predictions from many threads are batched together (`BatchedCompare`)."""

    def __init__(self, checkpoint_dir, device: str = "cpu", backend: str | None = None):
        self.checkpoint_dir = Path(checkpoint_dir)
        self.backend = serving_backend(backend or os.environ.get("MODEL_BACKEND", "auto")) if device == "cpu" else "torch"
        self.models, failed = load_all(checkpoint_dir, device)  # the PyTorch networks (heat maps use these)
        self.serving = dict(self.models)  # what predictions run: these, or their onnxruntime copies once made
        self.batched = BatchedCompare(self.serving)
        self._converting = ThreadPoolExecutor(MAX_BATCH, thread_name_prefix="evaluate")  # a chunk's 32 px inputs
        self.reports = load_reports(checkpoint_dir, names=list(self.models))
        self._test_images = None
        self.info = HostInfo(models={n: ModelInfo.of(c) for n, c in self.models.items()}, failed=dict(failed))

    def predict(self, image: Image.Image, names: list[str] | None = None) -> dict:
        return self.batched(image, names)

    def evaluate_images(self, images: list[Image.Image], names: list[str] | None = None) -> list[dict]:
        """The chunk's inputs made in parallel, then queued at once on the micro-batcher that serves single
        predictions (one forward pass per model for the chunk, up to MAX_BATCH), where they give way to them."""
        chosen = select(self.serving, names) if names else self.serving
        inputs = list(self._converting.map(lambda image: model_inputs(chosen, image), images))
        return self.batched.batcher.submit_many([(x, list(chosen)) for x in inputs])

    def explain(self, name: str, image: Image.Image, class_name: str) -> Image.Image:
        return heat_map(select(self.models, [name])[name], image, class_name)

    def corrupted(self, names: list[str], image: Image.Image, severities: dict[str, int], seed: int = 0) -> dict:
        models = select(self.serving, names)
        r = corrupted_comparison(models, image, severities, seed)
        return dict(original=to_display(r["original"]), corrupted=to_display(r["corrupted"]),
                    summary=robustness_summary(r, {n: title(m) for n, m in models.items()}), models=r["models"])

    def live(self, names: list[str], payload) -> tuple[dict, float]:
        return live_predictions(select(self.serving, names), payload)

    def test_images(self):
        """CIFAR-100's test images when the data set is on this machine (CIFAR100_DIR or ./data), else None."""
        if self._test_images is None:
            from ..data import load_test_images
            self._test_images = (load_test_images(),)
        return self._test_images[0]

    def gallery(self, pair: tuple[str, str], folders: tuple = ()) -> tuple[list, int, bool]:
        images = self.test_images()
        items, differ = disagreements({n: self.reports[n] for n in pair}, tuple(pair), folders=folders,
                                      test_images=images)
        return items, differ, images is not None

    def to_backend(self) -> None:
        """With the onnxruntime backend, each model's predictions moved there (exported from a copy of its network,
        between requests); a model that cannot be exported keeps PyTorch."""
        if self.backend != "onnxruntime":
            return
        from ..onnx_forward import onnx_classifier
        for name, clf in self.models.items():
            if self.serving[name] is not clf:
                continue
            self.batched.batcher.wait_idle()
            t0 = time.perf_counter()
            try:
                self.serving[name] = onnx_classifier(clf, spinning=False)  # one entry replaced: no pass sees half
            except Exception as e:  # noqa: BLE001  (an architecture the exporter cannot take: PyTorch serves it)
                log.warning("%s stays on PyTorch: onnxruntime could not take it (%s)", name, e)
                continue
            log.info("%s: predictions run by onnxruntime (exported in %.1f s)", name, time.perf_counter() - t0)

    def warm_up(self) -> float:
        """The serving backend (`to_backend`), then every batch shape's kernels, prepared between requests only (a
        request waits for one small step at most)."""
        t0 = time.perf_counter()
        self.to_backend()
        for step in warm_steps(self.serving, MAX_BATCH):
            self.batched.batcher.wait_idle()
            step()
        log.info("warm-up: every batch shape of %d model(s) prepared in %.1f s (%s)", len(self.serving),
                 time.perf_counter() - t0, self.backend)
        return time.perf_counter() - t0
