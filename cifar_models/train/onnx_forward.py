"""Forward passes that do not train, through onnxruntime where it is faster than PyTorch.

Two phases of a run only evaluate a fixed network: the frozen stages of a `freeze = k` recipe (features.py)
and a distillation teacher's logits from pixels (distill.py). On a CPU without native bf16 (no bf16
autocast, so PyTorch runs them in fp32), onnxruntime ran the same networks about twice as fast: the shipped
EfficientNet-B0 at 192 px, batch 64, fp32, on the 2-core AVX2-only AMD EPYC: PyTorch 37-38 images/s
(contiguous or channels_last), onnxruntime 78 images/s, largest logit difference 7e-6. Where PyTorch has
bf16 autocast (CUDA, CPUs with AMX), it keeps them: that is how the shipped caches were made and timed.

`onnx_classifier` does the same for a whole trained classifier, for the long forward-only evaluations of
`scripts/evaluate.py --backend onnxruntime` (photo-like and corruption checks).

`frozen_backend` (recipe key, `--frozen-backend`): "auto" (the rule above), "torch" or "onnxruntime". The
graph is exported in memory with torch's TorchScript-based exporter (as export.py does). It takes the
normalised input: the preprocessing (`to_model_input`) stays in PyTorch, which ran it at 379 images/s
there, and onnxruntime's cubic Resize at 73.
"""
from __future__ import annotations

import copy
import importlib.util
import io
import warnings
from typing import Callable

import torch
from torch import nn

from ..common.errors import ConfigError, import_or_explain
from ..data import to_model_input
from ..export import OPSET  # the opset the ONNX export uses
from ..inference import Classifier

BACKENDS = ("auto", "torch", "onnxruntime")


def resolve_backend(setting: str, device: torch.device, amp: bool) -> str:
    """"torch" or "onnxruntime" for a run's forward-only phases (see the module docstring)."""
    if setting not in BACKENDS:
        raise ConfigError(f"frozen_backend={setting!r}: choose one of {', '.join(BACKENDS)}")
    if setting == "auto":
        fast = device.type == "cpu" and not amp and importlib.util.find_spec("onnxruntime") is not None
        return "onnxruntime" if fast else "torch"
    if setting == "onnxruntime" and device.type != "cpu":
        raise ConfigError(f"frozen_backend=onnxruntime runs on the CPU, and this run is on {device}: use auto or torch")
    return setting


def onnx_forward(modules, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function from a batch of input (N, ...) on the CPU to the output of `modules` applied in order (in eval
    mode), run by onnxruntime in fp32; `example`: a few such inputs, for the export. The graph is exported from
    contiguous-format weights: exported from channels_last ones, the same network ran 20% slower."""
    ort = import_or_explain("onnxruntime")
    params = [p for m in modules for p in m.parameters()]
    grads = [p.requires_grad for p in params]
    channels_last = any(p.ndim == 4 and not p.is_contiguous() for p in params)
    buffer = io.BytesIO()
    try:  # exported as the frozen network it is, in contiguous format; the modules are given back as they were
        for p in params:
            p.requires_grad_(False)
        for m in modules:
            m.to(memory_format=torch.contiguous_format)
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation note; tracer notes on constant shapes
            torch.onnx.export(nn.Sequential(*modules).eval(), (example[:2].float().contiguous().cpu(),), buffer,
                              dynamo=False, opset_version=OPSET, input_names=["x"], output_names=["out"],
                              dynamic_axes={"x": {0: "N"}, "out": {0: "N"}})
    finally:
        for m in modules:
            m.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        for p, g in zip(params, grads):
            p.requires_grad_(g)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(["out"], {"x": x.float().cpu().contiguous().numpy()})[0])

    return run


class OnnxNetwork(nn.Module):
    """A network run by onnxruntime behind nn.Module's call (forward only, fp32, CPU), so that code written for
    the network (`Classifier.logits`, flip averaging) runs it unchanged."""

    def __init__(self, run: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.run = run

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)


def onnx_classifier(clf: Classifier) -> Classifier:
    """A copy of `clf` whose network onnxruntime runs: the same weights in fp32, the same preprocessing (in
    PyTorch) and test-time flip averaging, so the same predictions up to float rounding (logits within about
    1e-5). For forward-only work on a CPU; `clf` itself is left as it was."""
    if clf.device.type != "cpu":
        raise ConfigError(f"onnxruntime runs on the CPU, and this classifier is on {clf.device}: use --device cpu")
    size = int(clf.data_config.get("source_size", 32))
    example = to_model_input(torch.zeros(2, 3, size, size, dtype=torch.uint8), clf.data_config)
    out = copy.copy(clf)
    out.model = OnnxNetwork(onnx_forward([clf.model], example))
    return out
