"""Forward-only phases through onnxruntime (train/onnx_forward.py): the rule that picks it, and its outputs
against PyTorch's for frozen stages (fp16 cache) and for a teacher on pixels."""
import pytest
import torch

from cifar_models.common.errors import ConfigError
from cifar_models.models import build_model, get_entry, model_stages
from cifar_models.train.features import cached_stage_outputs, frozen_cache_fields, run_stages, view_params
from cifar_models.train.onnx_forward import onnx_forward, resolve_backend
from cifar_models.data import apply_augment, to_model_input

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_auto_picks_onnxruntime_only_on_a_cpu_without_bf16():
    assert resolve_backend("auto", CPU, amp=False) == "onnxruntime"
    assert resolve_backend("auto", CPU, amp=True) == "torch"  # AMX: bf16 autocast, as the shipped caches were made
    assert resolve_backend("auto", CUDA, amp=True) == "torch"
    assert resolve_backend("torch", CPU, amp=False) == "torch"
    assert resolve_backend("onnxruntime", CPU, amp=True) == "onnxruntime"
    with pytest.raises(ConfigError, match="runs on the CPU"):
        resolve_backend("onnxruntime", CUDA, amp=False)
    with pytest.raises(ConfigError, match="choose one of auto, torch, onnxruntime"):
        resolve_backend("onnx", CPU, amp=False)


def tiny_b0():
    torch.manual_seed(0)
    model, _ = build_model("timm:test_efficientnet", {}, None, 100)
    return model.eval()


def test_frozen_stages_through_onnxruntime_match_pytorch(tmp_path):
    model, data_cfg = tiny_b0(), dict(get_entry("timm:test_efficientnet").data_config, input_size=48)
    stages = model_stages("timm:test_efficientnet", model)[:2]
    images = torch.randint(0, 256, (70, 3, 32, 32), dtype=torch.uint8)
    params = view_params(len(images), 3, seed=0, pad=4, photo=0.5)
    fields = dict(model="m", arch={}, pretrained=None, stages=2, data_config=data_cfg, data_md5="x", amp=False,
                  seed=0, pad=4, photo=0.5, indices="i", views=3)
    out = {}
    for backend in ("torch", "onnxruntime"):
        key = frozen_cache_fields(**fields, backend=backend)
        out[backend], seconds = cached_stage_outputs(stages, images, params, data_cfg, device="cpu", amp=False,
                                                     cache_dir=tmp_path, key=key, pad=4, batch_size=32,
                                                     backend=backend)
        assert out[backend].dtype == torch.float16 and seconds > 0
    assert "backend" not in frozen_cache_fields(**fields)  # caches made before the backend existed keep their names
    assert len(list(tmp_path.iterdir())) == 2  # one cache per backend
    a, b = out["torch"].float(), out["onnxruntime"].float()
    assert a.shape == (3, 70, *a.shape[2:]) and a.abs().max() > 0
    assert torch.allclose(a, b, rtol=1e-2, atol=1e-2 * a.abs().max())  # fp16 storage of fp32 results
    # and the view really is the one given: the stages on view 2's pixels
    pixels = apply_augment(images, {k: v[2] for k, v in params.items()}, 4)
    assert torch.allclose(run_stages(stages, to_model_input(pixels, data_cfg)), b[2], rtol=1e-2, atol=1e-2 * a.abs().max())


def test_a_network_through_onnxruntime_matches_pytorch():
    model, data_cfg = tiny_b0().to(memory_format=torch.channels_last), dict(
        get_entry("timm:test_efficientnet").data_config, input_size=40)
    x = to_model_input(torch.randint(0, 256, (9, 3, 32, 32), dtype=torch.uint8), data_cfg)  # channels_last
    run = onnx_forward([model], x[:2])
    with torch.inference_mode():
        expected = model(x)
    got = run(x)
    assert got.shape == (9, 100) and torch.allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert torch.allclose(run(x[:1]), expected[:1], rtol=1e-4, atol=1e-4)  # any batch size
    assert model.conv_stem.weight.is_contiguous(memory_format=torch.channels_last)  # the caller's model untouched
