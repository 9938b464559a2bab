"""ONNX export: every kind of checkpoint, the app's input in, calibrated probabilities out, metadata, the check."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cifar_models.checkpoint import half_state_dict, save_checkpoint
from cifar_models.inference import load_classifier, to_cifar_uint8
from cifar_models.models import build_model, get_entry
from test_cli import load_script, run_script

ROOT = Path(__file__).resolve().parents[1]


def timm_checkpoint(tmp_path: Path) -> Path:
    """A `timm:` checkpoint (random weights, a temperature far from 1), made without training."""
    name = "timm:test_efficientnet"
    model, _ = build_model(name, {}, pretrained=None, num_classes=100)
    with torch.no_grad():
        model.get_classifier().weight.mul_(50)  # confident, so that the temperature visibly matters
    meta = dict(model=name, name="tiny_timm", arch={}, class_names=[f"class_{i:02d}" for i in range(100)],
                superclass_names=[f"super_{i:02d}" for i in range(20)], superclass_of=[i // 5 for i in range(100)],
                data_config=dict(get_entry(name).data_config, source_size=32), calibration=dict(temperature=0.3))
    save_checkpoint(tmp_path / "tiny_timm", half_state_dict(model), meta)
    return tmp_path / "tiny_timm"


def photos(n: int, seed: int = 0) -> list[Image.Image]:
    """Photo-like pictures of different sizes (smooth colour fields plus grain), as a user would upload."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        w, h = int(rng.integers(40, 300)), int(rng.integers(40, 300))
        base = rng.integers(0, 256, size=(1, 1, 3)) + np.linspace(0, 60, w)[None, :, None]
        out.append(Image.fromarray(np.clip(base + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)))
    return out


def readme_example(onnx_path: Path, img: Image.Image) -> tuple[list[str], np.ndarray]:
    """The onnxruntime example of README.md, word for word (a photo -> its 32x32 picture -> probabilities)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path))
    classes = json.loads(session.get_modelmeta().custom_metadata_map["class_names"])
    img = img.convert("RGB")
    w, h = img.size
    s = min(w, h)  # the largest centred square, area-averaged down to 32x32 (what the app does)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    x = np.asarray(img.resize((32, 32), Image.Resampling.BOX, box=box), dtype=np.uint8)
    p = session.run(None, {"images": x[None]})[0][0]  # batch of one: (1, 32, 32, 3) -> (1, 100)
    return classes, p


def check_exported(checkpoint: Path, onnx_path: Path) -> None:
    """What the .onnx file must be, seen from onnxruntime alone."""
    import onnxruntime as ort

    clf = load_classifier(checkpoint)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, inp.shape[1:]) == ("images", "tensor(uint8)", [32, 32, 3])
    assert isinstance(inp.shape[0], str)  # N is dynamic
    assert (out.name, out.type, out.shape[1:]) == ("probabilities", "tensor(float)", [100])
    meta = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    assert meta["class_names"] == clf.classes and meta["superclass_names"] == clf.superclasses
    assert meta["superclass_of"] == clf.superclass_of and meta["temperature"] == clf.temperature != 1.0
    assert meta["weights_sha256"] == clf.meta["weights_sha256"] and meta["data_config"] == clf.data_config
    imgs = photos(5)
    nhwc = np.stack([to_cifar_uint8(im).permute(1, 2, 0).numpy() for im in imgs])
    for batch in (nhwc[:1], nhwc):  # any N
        p = session.run(None, {"images": batch})[0]
        expected = clf.predict_proba(imgs[:len(batch)]).numpy()
        assert p.shape == (len(batch), 100) and np.allclose(p.sum(1), 1, atol=1e-5)
        assert np.abs(p - expected).max() < 1e-4
    raw = clf.predict_proba(imgs, calibrated=False).numpy()
    assert np.abs(p - raw).max() > 1e-3  # the temperature is applied inside
    classes, q = readme_example(onnx_path, imgs[2])
    assert classes == clf.classes and np.abs(q - expected[2]).max() < 1e-4


def _export(checkpoint: Path, out: Path, capsys, *extra: str) -> tuple[dict, str]:
    result = load_script("export").main(["--checkpoint", str(checkpoint), "--onnx", str(out), *extra])
    return result, capsys.readouterr().out


@pytest.mark.slow
def test_timm_checkpoint_exports_and_checks_itself(tmp_path, cifar_fixture, capsys):
    ckpt = timm_checkpoint(tmp_path)
    out = tmp_path / "onnx" / "tiny.onnx"
    result, printed = _export(ckpt, out, capsys, "--data-dir", str(cifar_fixture), "--no-verify", "--images", "200")
    assert result["images"] == 200 and result["top1_agreement"] == 1.0 and result["max_abs_diff"] < 1e-4
    assert "onnxruntime vs PyTorch on 200 validation images: top-1 agreement 100.00%" in printed
    check_exported(ckpt, out)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cnn9", "efficientnet_b0"])
def test_shipped_checkpoints_export(tmp_path, monkeypatch, capsys, name):
    monkeypatch.chdir(tmp_path)  # no data/cifar-100-python here: the check falls back to random images
    monkeypatch.setenv("CIFAR100_DIR", str(tmp_path / "none"))
    out = tmp_path / f"{name}.onnx"
    timed = ["--benchmark", "--repeat", "2", "--threads", "1"] if name == "cnn9" else []  # (B0 at batch 64 is slow)
    threads = torch.get_num_threads()
    try:
        result, printed = _export(ROOT / "checkpoints" / name, out, capsys, "--images", "24", *timed)
    finally:
        torch.set_num_threads(threads)
    assert "using 24 random images instead" in printed and result["max_abs_diff"] < 1e-4
    if timed:
        assert [r["batch"] for r in result["benchmark"]] == [1, 64] and "batch  64: PyTorch" in printed
        assert "torch 1 threads, onnxruntime 1 threads" in printed
        assert all(r["torch_ms_per_image"] > 0 and r["onnxruntime_ms_per_image"] > 0 for r in result["benchmark"])
    check_exported(ROOT / "checkpoints" / name, out)


def test_export_mistakes(tmp_path, capsys):
    err = run_script("export", ["--checkpoint", str(tmp_path / "nothing"), "--onnx", str(tmp_path / "x.onnx")], capsys)
    assert "nothing.safetensors not found" in err
    err = run_script("export", ["--checkpoint", str(ROOT / "checkpoints" / "cnn9"), "--onnx", str(tmp_path)], capsys)
    assert f"--onnx {tmp_path} is a folder; give a file name such as {tmp_path / 'cnn9.onnx'}" in err
    err = run_script("export", ["--checkpoint", str(ROOT / "checkpoints" / "cnn9"), "--onnx", str(tmp_path / "x.onnx"),
                                "--data-dir", str(tmp_path / "none")], capsys)
    assert "CIFAR-100 file" in err and "is missing" in err and not (tmp_path / "x.onnx").exists()
    argv = ["--checkpoint", "c", "--onnx", "o", "--images", "0"]
    assert "argument --images: '0'" in run_script("export", argv, capsys)


def test_a_missing_package_is_one_line(monkeypatch, capsys):
    from cifar_models.cli import run
    from cifar_models.export import ort_session

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(SystemExit) as e:
        run(lambda argv: ort_session("x.onnx"), [])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: onnxruntime is needed for this and is not installed")
    assert "pip install onnxruntime" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_exported_graph_does_the_checkpoints_preprocessing(tmp_path):
    """The resize and normalisation inside the graph are the checkpoint's: 32 px in, its own input size used."""
    import onnx

    from cifar_models.export import export_onnx

    clf = load_classifier(ROOT / "checkpoints" / "efficientnet_b0")
    model = onnx.load(str(export_onnx(clf, tmp_path / "b0.onnx")))
    # (a network whose weights the graph uses twice, as flip averaging does, gets Identity nodes for them)
    ops = [n.op_type for n in model.graph.node if n.op_type not in ("Identity", "Constant")]
    resize = [n for n in model.graph.node if n.op_type == "Resize"]
    assert ops[:2] == ["Transpose", "Cast"] and ops[-1] == "Softmax" and len(resize) == 1
    assert {a.name: a.s for a in resize[0].attribute}["mode"] == b"cubic"
    # one pass of the network per view: the image, and its mirror when the checkpoint averages flips
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in clf.model.modules())
    assert ops.count("Conv") == convs * (2 if clf.data_config.get("flip_average") else 1)
    del clf
    model = onnx.load(str(export_onnx(load_classifier(ROOT / "checkpoints" / "cnn9"), tmp_path / "cnn9.onnx")))
    assert not any(n.op_type == "Resize" for n in model.graph.node)  # cnn9 runs at 32 px
