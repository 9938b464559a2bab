"""Every script answers a user's mistake with one line on stderr and exit status 2, never a traceback."""
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cifar_models.cli import DEBUG_ENV, UserError, run

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(name: str, argv: list[str], capsys) -> str:
    """Run scripts/NAME.py's main under cli.run in this process; its stderr (after checking exit status 2)."""
    with pytest.raises(SystemExit) as e:
        run(load_script(name).main, argv)
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert "Traceback" not in err
    assert "error: " in err.strip().splitlines()[-1]  # ours: "error: ...", argparse's: "PROG: error: ..."
    return err


def _fail(message: str):
    def main(argv):
        raise UserError(message)

    return main


def test_run_prints_one_line_and_exits_2(capsys, monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    with pytest.raises(SystemExit) as e:
        run(_fail("checkpoint x not found.\nTrain one first."), [])
    assert e.value.code == 2
    assert capsys.readouterr().err == "error: checkpoint x not found. Train one first.\n"


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(capsys, monkeypatch, how):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    if how == "env":
        monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(SystemExit) as e:
        run(_fail("bad"), ["--debug"] if how == "flag" else [])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" in err and "in main" in err and err.endswith("error: bad\n")


def test_a_bug_keeps_its_traceback():
    def main(argv):
        raise ZeroDivisionError("a bug, not the user's mistake")

    with pytest.raises(ZeroDivisionError):
        run(main, [])


def test_library_errors_are_user_errors():
    from cifar_models.checkpoint import CheckpointError
    from cifar_models.data import DataError
    from cifar_models.models import get_entry
    from cifar_models.train.recipes import get_recipe

    assert issubclass(CheckpointError, UserError) and issubclass(DataError, UserError)
    for call in (lambda: get_entry("nosuch"), lambda: get_recipe("cnn9", "nope"), lambda: get_entry("timm:nosuch")):
        with pytest.raises(UserError) as e:
            call()
        assert isinstance(e.value, KeyError) and not str(e.value).startswith("'")  # still a KeyError, no quotes


@pytest.mark.parametrize("argv, message", [
    (["--model", "nosuch"], "error: unknown model 'nosuch'; choose from ['cnn9', 'efficientnet_b0']"),
    (["--model", "timm:nosuch"], "error: timm has no architecture 'nosuch'"),
    (["--model", "cnn9", "--recipe", "nope"], "error: model 'cnn9' has no recipe 'nope'; known: ['cpu', 'cpu-distill', 'default']"),
    (["--model", "cnn9", "--epochs", "0"], "argument --epochs: '0' is not a whole number above 0"),
    (["--model", "cnn9", "--lr", "-0.1"], "argument --lr: '-0.1' is not a number above 0"),
    (["--model", "cnn9", "--label-smoothing", "2"], "argument --label-smoothing: '2' is not a number from 0 to 1"),
    (["--model", "cnn9", "--optimizer", "adam"], "argument --optimizer: invalid choice: 'adam'"),
    (["--model", "cnn9", "--device", "cuda:99"], "argument --device: 'cuda:99'"),
    (["--model", "cnn9", "--device", "gpu"], "argument --device: 'gpu' is not a device"),
    (["--model", "cnn9", "--widths", "8,x"], "argument --widths"),
    (["--model", "efficientnet_b0", "--sizes", "128x4,160"], "argument --sizes: '128x4,160' is not a size schedule"),
    (["--model", "efficientnet_b0", "--sizes", "0x2"], "argument --sizes: '0x2' is not a size schedule"),
])
def test_train_flags(capsys, argv, message):
    assert message in run_script("train", argv, capsys)


def _meta_only(tmp_path: Path) -> Path:
    """A data folder holding meta but not train/test (so nothing tries to download)."""
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    (d / "meta").write_bytes(b"")
    return d


def test_train_mistakes_found_later(capsys, tmp_path, cifar_fixture, monkeypatch):
    import torchvision.datasets

    common = ["--recipe", "cpu", "--no-verify", "--out", str(tmp_path / "ck"), "--run-dir", str(tmp_path / "runs")]
    err = run_script("train", ["--model", "cnn9", "--data-dir", str(_meta_only(tmp_path))] + common, capsys)
    assert "error: CIFAR-100 file" in err and "train is missing. Pass --data-dir" in err

    def offline(**kw):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", offline)
    err = run_script("train", ["--model", "cnn9", "--data-dir", str(tmp_path / "none")] + common, capsys)
    assert "downloading it failed (network unreachable). Pass --data-dir" in err
    data = ["--data-dir", str(cifar_fixture)]
    err = run_script("train", ["--model", "cnn9", "--pretrained-file", "w.safetensors"] + data + common, capsys)
    assert "error: cnn9 is trained from scratch" in err
    missing = ["--pretrained-file", str(tmp_path / "w.safetensors")]
    err = run_script("train", ["--model", "timm:test_efficientnet"] + missing + data + common, capsys)
    assert f"error: pretrained weights file {tmp_path / 'w.safetensors'} not found" in err
    err = run_script("train", ["--model", "cnn9", "--freeze", "9", "--widths", "8,16,32,64"] + data + common, capsys)
    assert "error: freeze=9: cnn9 has" in err
    err = run_script("train", ["--model", "cnn9", "--freeze", "2", "--sizes", "32x1"] + data + common, capsys)
    assert "error: --sizes (progressive resizing) trains end to end" in err


def _damaged_copy(trained_cnn, tmp_path: Path) -> Path:
    base, _ = trained_cnn
    for suffix in (".safetensors", ".json"):
        shutil.copy(base.with_suffix(suffix), tmp_path / f"cnn9{suffix}")
    weights = tmp_path / "cnn9.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    return tmp_path / "cnn9"


@pytest.mark.slow  # trains the session's tiny cnn9 when no other test has
def test_evaluate_mistakes(capsys, tmp_path, trained_cnn, cifar_fixture):
    err = run_script("evaluate", ["--checkpoint", str(tmp_path / "nothing")], capsys)
    assert "error: checkpoint file" in err and "nothing.safetensors not found" in err
    err = run_script("evaluate", ["--checkpoint", str(_damaged_copy(trained_cnn, tmp_path))], capsys)
    assert "sha256 differs" in err and "Restore both from git or train again" in err
    err = run_script("evaluate", ["--checkpoint", str(trained_cnn[0]), "--data-dir", str(_meta_only(tmp_path))], capsys)
    assert "train is missing" in err
    assert "argument --limit: '0'" in run_script("evaluate", ["--checkpoint", "x", "--limit", "0"], capsys)
    assert "argument --batch-size: 'many'" in run_script("evaluate", ["--checkpoint", "x", "--batch-size", "many"],
                                                         capsys)


def test_make_examples_mistakes(capsys, tmp_path, cifar_fixture):
    err = run_script("make_examples", ["--data-dir", str(cifar_fixture), "--out", str(tmp_path)], capsys)
    assert "train has md5" in err and "it is damaged or not the original" in err  # the fixture is not CIFAR-100
    err = run_script("make_examples", ["--data-dir", str(_meta_only(tmp_path))], capsys)
    assert "train is missing" in err
    assert "argument --disagreements: '-1'" in run_script("make_examples", ["--disagreements", "-1"], capsys)


@pytest.mark.parametrize("script, argv, message", [
    ("bench_decode", ["--size", "12"], "argument --size: '12' is not WIDTHxHEIGHT"),
    ("bench_decode", ["--size", "0x10"], "width and height must be 1 to 40000 px"),
    ("bench_decode", ["--repeat", "0"], "argument --repeat: '0' is not a whole number above 0"),
    ("bench_app", ["--app", "nosuch.py"], "argument --app: file 'nosuch.py' not found"),
    ("bench_app", ["--clients", "-3"], "argument --clients: '-3' is not a whole number above 0"),
    ("screenshots", ["--image", "nosuch.png"], "argument --image: file 'nosuch.png' not found"),
])
def test_bench_flags(capsys, script, argv, message):
    assert message in run_script(script, argv, capsys)


@pytest.mark.slow
def test_a_real_command_line(tmp_path):
    """The shell's view: one line on stderr, status 2; the environment variable brings the traceback back."""
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), "--model", "nosuch"]
    env = {k: v for k, v in os.environ.items() if k != DEBUG_ENV}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.splitlines() == [out.stderr.strip()] and out.stderr.startswith("error: unknown model 'nosuch'")
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(env, **{DEBUG_ENV: "1"}), timeout=300)
    assert out.returncode == 2 and "Traceback" in out.stderr and "UnknownNameError" in out.stderr


def test_gpu_session_script_mistakes(tmp_path):
    """scripts/gpu_session.sh (one call on a lent GPU) answers a wrong call with one line and status 2."""
    script = str(ROOT / "scripts" / "gpu_session.sh")
    out = subprocess.run(["bash", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.startswith("usage: bash scripts/gpu_session.sh DATA_DIR WEIGHTS OUT")
    out = subprocess.run(["bash", script, str(tmp_path / "nodata"), "w.safetensors", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "error: no CIFAR-100 at" in out.stderr and not (tmp_path / "out").exists()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train").write_bytes(b"")
    out = subprocess.run(["bash", script, str(tmp_path / "data"), str(tmp_path / "nosuch.safetensors"),
                          str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "error: no ImageNet weights at" in out.stderr
