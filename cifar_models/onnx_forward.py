"""Forward passes that do not train, through onnxruntime where it is faster than PyTorch.

Two phases of a run only evaluate a fixed network: the frozen stages of a `freeze = k` recipe (features.py)
and a distillation teacher's logits from pixels (distill.py). On a CPU without native bf16 (no bf16
autocast, so PyTorch runs them in fp32), onnxruntime ran the same networks about twice as fast: the shipped
EfficientNet-B0 at 192 px, batch 64, fp32, on the 2-core AVX2-only AMD EPYC: PyTorch 37-38 images/s
(contiguous or channels_last), onnxruntime 78 images/s, largest logit difference 7e-6. Where PyTorch has
bf16 autocast (CUDA, CPUs with AVX-512 bf16 or AMX), it keeps them: that is how the shipped caches were made and timed.

`onnx_classifier` does the same for a whole trained classifier, for the long forward-only evaluations of
`scripts/evaluate.py --backend onnxruntime` (photo-like and corruption checks) and for the dashboard's
predictions on the CPU (`serving_backend`, serve/host.py), there with onnxruntime's threads not spinning
while they wait and no memory arena kept between calls: the model process shares two cores with the web
server, and spinning threads took twice PyTorch's CPU time per request under load.

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

from .common.errors import ConfigError, import_or_explain
from .data import to_model_input
from .export import OPSET  # the opset the ONNX export uses
from .inference import Classifier

BACKENDS = ("auto", "torch", "onnxruntime")


def native_bf16_cpu() -> bool:
    """Whether this CPU computes in bf16 natively (x86: AVX-512 bf16 or AMX; elsewhere: what oneDNN says).
    oneDNN also "supports" bf16 on x86 CPUs with plain AVX-512 (Skylake-SP to Ice Lake) by emulating it, and
    there autocast is slower than fp32: on a 2-core Xeon with AVX-512 but neither, half-width cnn9 trained at
    98-104 images/s with bf16 autocast and 306-315 without, EfficientNet-B0 at 128 px at 23 against 29."""
    import platform

    avx512_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", None)  # both in torch >= 2.3
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    if platform.machine().lower() in ("x86_64", "amd64", "i686", "x86") and avx512_bf16 and amx:
        return bool(avx512_bf16() or amx())
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


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


def serving_backend(setting: str = "auto") -> str:
    """"torch" or "onnxruntime" for the dashboard's forward passes on the CPU (MODEL_BACKEND): "auto" takes
    onnxruntime whenever it is installed. Serving runs fp32 on every CPU (no autocast), and there onnxruntime was
    the faster on each kind of machine measured (README, "Speed, onnxruntime against PyTorch")."""
    if setting not in BACKENDS:
        raise ConfigError(f"MODEL_BACKEND={setting!r}: choose one of {', '.join(BACKENDS)}")
    if setting == "auto":
        return "onnxruntime" if importlib.util.find_spec("onnxruntime") is not None else "torch"
    return setting


def onnx_forward(modules, example: torch.Tensor, spinning: bool = True) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function from a batch of input (N, ...) on the CPU to the output of `modules` applied in order (in eval
    mode), run by onnxruntime in fp32; `example`: a few such inputs, for the export. The graph is exported from
    contiguous-format weights: exported from channels_last ones, the same network ran 20% slower. The modules
    are changed back and forth during the export: pass ones nothing else runs meanwhile. spinning=False: the
    session's threads sleep between calls instead of spinning, and its working memory is handed back after each
    call instead of kept in an arena (for a server that shares its cores and watches its memory)."""
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
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.enable_cpu_mem_arena = False  # and working memory handed back after each call, not kept in an arena
        options.enable_mem_pattern = False
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


def onnx_classifier(clf: Classifier, spinning: bool = True) -> Classifier:
    """A copy of `clf` whose network onnxruntime runs: the same weights in fp32, the same preprocessing (in
    PyTorch) and test-time flip averaging, so the same predictions up to float rounding (logits within about
    1e-5). For forward-only work on a CPU; `clf` itself is left as it was (its network is exported from a copy,
    so it may serve meanwhile). spinning: as in `onnx_forward`."""
    if clf.device.type != "cpu":
        raise ConfigError(f"onnxruntime runs on the CPU, and this classifier is on {clf.device}: use --device cpu")
    size = int(clf.data_config.get("source_size", 32))
    example = to_model_input(torch.zeros(2, 3, size, size, dtype=torch.uint8), clf.data_config)
    out = copy.copy(clf)
    out.model = OnnxNetwork(onnx_forward([copy.deepcopy(clf.model)], example, spinning))
    return out
