"""Forward-only phases through onnxruntime (onnx_forward.py): the rules that pick it, and its outputs
against PyTorch's for frozen stages (fp16 cache), for a teacher on pixels, and for a whole classifier
(`scripts/evaluate.py --backend onnxruntime`, the dashboard's predictions)."""
import json
import subprocess
import sys

import pytest
import torch

from cifar_models import load_classifier
from cifar_models.common.errors import ConfigError
from cifar_models.models import build_model, get_entry, model_stages
from cifar_models.train.features import cached_stage_outputs, frozen_cache_fields, run_stages, view_params
from cifar_models.onnx_forward import OnnxNetwork, onnx_classifier, onnx_forward, resolve_backend
from cifar_models.data import apply_augment, to_model_input
from conftest import ROOT

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


def test_a_classifier_through_onnxruntime_predicts_as_pytorch(trained_cnn):
    clf = load_classifier(trained_cnn[0])
    clf.data_config = dict(clf.data_config, flip_average=True)  # the test-time mirror goes through the graph too
    fast = onnx_classifier(clf)
    images = torch.randint(0, 256, (37, 3, 32, 32), dtype=torch.uint8)
    expected, got = clf.logits(images, batch_size=16), fast.logits(images, batch_size=16)
    assert got.shape == (37, 100) and torch.allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert torch.equal(got.argmax(1), expected.argmax(1))
    assert isinstance(fast.model, OnnxNetwork) and not isinstance(clf.model, OnnxNetwork)  # clf left as it was
    assert fast.temperature == clf.temperature and fast.classes == clf.classes
    with pytest.raises(ConfigError, match="on the CPU"):
        onnx_classifier(type("OnGpu", (), {"device": CUDA})())


@pytest.mark.slow  # runs scripts/evaluate.py in a subprocess (several seconds)
def test_evaluate_backend_onnxruntime_gives_the_same_report_and_says_which_ran(trained_cnn, cifar_fixture, tmp_path):
    reports = {}
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / f"{backend}.json"
        subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), "--checkpoint", str(trained_cnn[0]),
                        "--data-dir", str(cifar_fixture), "--no-verify", "--limit", "100", "--out", str(out),
                        "--backend", backend], capture_output=True, text=True, check=True)
        reports[backend] = json.loads(out.read_text())
    assert reports["onnxruntime"]["backend"] == "onnxruntime" and reports["torch"]["backend"] == "torch"
    fast, slow = reports["onnxruntime"]["images"], reports["torch"]["images"]
    assert fast["top1"] == slow["top1"] and fast["label"] == slow["label"]  # every image's top-1, the same
    assert fast["confidence"] == pytest.approx(slow["confidence"], abs=2e-4)  # 4 decimals: rounding may differ
    assert reports["onnxruntime"]["summary"]["top1"] == reports["torch"]["summary"]["top1"]


def test_serving_backend_auto_is_onnxruntime_when_installed(monkeypatch):
    import importlib.util

    from cifar_models.onnx_forward import serving_backend
    assert serving_backend("auto") == "onnxruntime"  # a requirement: installed here
    assert serving_backend("torch") == "torch" and serving_backend("onnxruntime") == "onnxruntime"
    with pytest.raises(ConfigError, match="MODEL_BACKEND='onnx': choose one of auto, torch, onnxruntime"):
        serving_backend("onnx")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    assert serving_backend("auto") == "torch"


@pytest.fixture
def cnn9_folder(trained_cnn, tmp_path):
    import shutil
    for suffix in (".json", ".safetensors"):
        shutil.copy(trained_cnn[0].with_suffix(suffix), tmp_path / f"cnn9{suffix}")
    return tmp_path


def test_the_dashboard_moves_its_predictions_to_onnxruntime_in_the_warm_up(cnn9_folder):
    from PIL import Image

    from cifar_models.serve.host import LocalModels
    image = Image.open(ROOT / "examples" / "cifar" / "tiger_test422.png")
    host = LocalModels(cnn9_folder, backend="onnxruntime")
    torch_clf = host.models["cnn9"]
    assert host.serving["cnn9"] is torch_clf  # PyTorch until the warm-up
    before = host.predict(image)
    lab_before = host.corrupted(["cnn9"], image, {"gaussian_noise": 3}, seed=1)["models"]["cnn9"]["top"]
    host.warm_up()
    assert isinstance(host.serving["cnn9"].model, OnnxNetwork) and host.models["cnn9"] is torch_clf
    assert not isinstance(torch_clf.model, OnnxNetwork)
    after = host.predict(image)
    assert [t["label"] for t in after["cnn9"]["top"]] == [t["label"] for t in before["cnn9"]["top"]]
    assert [t["probability"] for t in after["cnn9"]["top"]] == pytest.approx(
        [t["probability"] for t in before["cnn9"]["top"]], abs=1e-5)
    lab_after = host.corrupted(["cnn9"], image, {"gaussian_noise": 3}, seed=1)["models"]["cnn9"]["top"]
    assert [t["label"] for t in lab_after] == [t["label"] for t in lab_before]
    cam = host.explain("cnn9", image, after["cnn9"]["top"][0]["label"])  # heat maps: PyTorch's network, gradients
    assert isinstance(cam, Image.Image)


def test_torch_backend_and_a_failed_export_keep_pytorch(cnn9_folder, monkeypatch, caplog):
    import cifar_models.onnx_forward as of
    from cifar_models.serve.host import LocalModels
    host = LocalModels(cnn9_folder, backend="torch")
    host.warm_up()
    assert host.serving["cnn9"] is host.models["cnn9"]

    def cannot(clf, spinning=True):
        raise RuntimeError("unsupported operator")
    monkeypatch.setattr(of, "onnx_classifier", cannot)
    host = LocalModels(cnn9_folder, backend="onnxruntime")
    with caplog.at_level("WARNING", logger="cifar_compare"):
        host.warm_up()
    assert host.serving["cnn9"] is host.models["cnn9"]
    assert "cnn9 stays on PyTorch: onnxruntime could not take it (unsupported operator)" in caplog.text
