"""ONNX export of any checkpoint: the graph takes what the app makes of a photo and returns calibrated
class probabilities.

    images         uint8 (N, 32, 32, 3), RGB, N dynamic: the 32x32 CIFAR-like picture (`to_cifar_uint8`)
    probabilities  float32 (N, classes): softmax(logits / temperature)

Inside: NHWC -> NCHW, then exactly `to_model_input` (resize to the checkpoint's input size with its
interpolation, normalise with its mean and std), the network, the temperature, softmax. Class names,
superclasses, the temperature, the data config and the weights' sha256 are in the model's metadata
(`metadata_props`, JSON strings; onnxruntime: `session.get_modelmeta().custom_metadata_map`).

Exported with torch's TorchScript-based exporter (`dynamo=False`): on both shipped checkpoints it
agrees with PyTorch to about 3e-6 and takes 1-4 s. The torch.export-based one (the default since
torch 2.9) took 12 s here, needs onnxscript, and traced `to_model_input` with fake tensors that stayed
in `data._mean_std`'s cache, which broke every later PyTorch call in the same process.
"""
from __future__ import annotations

import json
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .data import to_model_input
from .common.errors import UserError, import_or_explain
from .inference import Classifier, forward_logits

OPSET = 17  # Resize with cubic mode is exact there; onnxruntime (also web and mobile) runs it
INPUT, OUTPUT = "images", "probabilities"


class OnnxClassifier(nn.Module):
    """uint8 NHWC images -> calibrated probabilities, with the checkpoint's own preprocessing."""

    def __init__(self, clf: Classifier):
        super().__init__()
        self.model = clf.model
        self.data_config = dict(clf.data_config)
        self.temperature = float(clf.temperature)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = to_model_input(images.permute(0, 3, 1, 2), self.data_config)
        return (forward_logits(self.model, x, self.data_config).float() / self.temperature).softmax(1)


def metadata(clf: Classifier) -> dict[str, str]:
    """What a user of the .onnx file needs besides the graph, as JSON strings."""
    meta = clf.meta
    values = dict(model=clf.name, checkpoint=clf.checkpoint, class_names=clf.classes,
                  superclass_names=clf.superclasses, superclass_of=clf.superclass_of, temperature=clf.temperature,
                  weights_sha256=meta.get("weights_sha256"), data_config=clf.data_config,
                  input=f"{INPUT}: uint8 (N, 32, 32, 3) RGB, the 32x32 CIFAR-like picture of a photo",
                  output=f"{OUTPUT}: float32 (N, {len(clf.classes)}) calibrated class probabilities",
                  test_metrics=(meta.get("metrics") or {}).get("test"), format="cifar-compare-onnx/1")
    return {k: json.dumps(v) for k, v in values.items()}


def export_onnx(clf: Classifier, path: str | Path) -> Path:
    """Write clf as an ONNX file at path (atomically), metadata included."""
    onnx = import_or_explain("onnx")
    path = Path(path)
    if path.is_dir():
        raise UserError(f"--onnx {path} is a folder; give a file name such as {path / (clf.checkpoint + '.onnx')}")
    path.parent.mkdir(parents=True, exist_ok=True)
    module = OnnxClassifier(clf).eval()  # eval: the exporter restores this mode on every submodule afterwards
    example = torch.zeros(2, 32, 32, 3, dtype=torch.uint8, device=clf.device)
    tmp = path.with_name(path.name + ".partial")
    with warnings.catch_warnings():  # the legacy exporter's deprecation note; tracer notes on constant shapes
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(tmp), dynamo=False, opset_version=OPSET, input_names=[INPUT],
                          output_names=[OUTPUT], dynamic_axes={INPUT: {0: "N"}, OUTPUT: {0: "N"}})
    model = onnx.load(str(tmp))
    onnx.helper.set_model_props(model, metadata(clf))
    model.doc_string = f"{clf.checkpoint} ({clf.name}): CIFAR-100 classifier exported by cifar-compare"
    onnx.checker.check_model(model)
    onnx.save(model, str(tmp))
    tmp.replace(path)
    return path


def ort_session(path: str | Path, threads: int | None = None, spinning: bool = True):
    ort = import_or_explain("onnxruntime")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if not spinning:  # idle worker threads sleep instead of busy-waiting for the next run
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_proba(session, images_uint8: torch.Tensor, batch_size: int = 250) -> np.ndarray:
    """Probabilities from the ONNX model for uint8 (N, 3, 32, 32) images, as the project holds them."""
    nhwc = images_uint8.permute(0, 2, 3, 1).contiguous().numpy()
    return np.concatenate([session.run([OUTPUT], {INPUT: nhwc[i:i + batch_size]})[0]
                           for i in range(0, len(nhwc), batch_size)])


def verify(clf: Classifier, session, images_uint8: torch.Tensor) -> dict:
    """The ONNX model against Classifier.proba (PyTorch, calibrated) on the same images."""
    ours = clf.proba(images_uint8).numpy()
    theirs = ort_proba(session, images_uint8)
    return dict(images=len(ours), top1_agreement=float((ours.argmax(1) == theirs.argmax(1)).mean()),
                max_abs_diff=float(np.abs(ours - theirs).max()), shape=list(theirs.shape))


def _alternating_median_ms(fns: list, repeat: int) -> list[float]:
    """Median milliseconds of each function, timed in turn (so that a shared machine's load hits both alike)."""
    for fn in fns:
        fn()  # warm-up
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, out in zip(fns, times):
            t = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t) * 1000)
    return [statistics.median(t) for t in times]


def benchmark(clf: Classifier, session, images_uint8: torch.Tensor, batch_sizes=(1, 64), repeat: int = 20) -> list:
    """Median milliseconds per image, PyTorch (Classifier.proba) and onnxruntime, per batch size. Use a session
    without spinning threads (`ort_session(path, spinning=False)`): they would take CPU from PyTorch's turn."""
    rows = []
    for b in batch_sizes:
        x = images_uint8[:b]
        if len(x) < b:
            x = x.repeat((b + len(x) - 1) // len(x), 1, 1, 1)[:b]
        nhwc = x.permute(0, 2, 3, 1).contiguous().numpy()
        torch_ms, ort_ms = (ms / b for ms in _alternating_median_ms(
            [lambda: clf.proba(x), lambda: session.run([OUTPUT], {INPUT: nhwc})], repeat))
        rows.append(dict(batch=b, torch_ms_per_image=torch_ms, onnxruntime_ms_per_image=ort_ms,
                         speedup=torch_ms / ort_ms))
    return rows
