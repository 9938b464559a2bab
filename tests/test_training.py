import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from cifar_models import load_classifier
from cifar_models.checkpoint import CheckpointError, checkpoint_paths
from conftest import ROOT


def test_short_cpu_run_learns_far_above_chance(trained_cnn):
    _, meta = trained_cnn
    assert len(meta["history"]) == 6
    assert meta["metrics"]["validation"]["top1"] > 0.5  # chance is 0.01
    assert meta["metrics"]["test"]["top1"] > 0.5
    h = meta["history"][-1]
    assert set(h) >= {"epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds", "images_per_s"}
    assert meta["history"][0]["train_loss"] > h["train_loss"]


def test_checkpoint_json_says_everything(trained_cnn):
    base, meta = trained_cnn
    weights, js = checkpoint_paths(base)
    on_disk = json.loads(js.read_text())
    for key in ["model", "arch", "pretrained", "class_names", "superclass_names", "data_config", "recipe",
                "history", "metrics", "data_md5", "train_seconds", "device", "git_commit", "weights_sha256"]:
        assert key in on_disk, key
    assert on_disk["data_config"]["input_size"] == 32 and len(on_disk["data_config"]["mean"]) == 3
    assert all(v.dtype in (torch.float16, torch.int64) for v in load_file(str(weights)).values())
    assert json.loads((js.parent / "cnn9.eval.json").read_text())["summary"] == on_disk["metrics"]["test"]


def test_save_then_load_gives_identical_predictions(trained_cnn, tmp_path):
    from PIL import Image
    from cifar_models.checkpoint import save_checkpoint, half_state_dict

    base, meta = trained_cnn
    a = load_classifier(base)
    b_weights, _ = save_checkpoint(tmp_path / "copy", half_state_dict(a.model), {k: v for k, v in a.meta.items()})
    b = load_classifier(tmp_path / "copy")
    images = [Image.new("RGB", (40, 30), (200, 30, 30)), Image.effect_noise((64, 64), 50).convert("RGB")]
    assert torch.equal(a.predict_proba(images), b.predict_proba(images))


def test_interrupted_save_never_replaces_a_good_checkpoint(trained_cnn, tmp_path, monkeypatch):
    import cifar_models.checkpoint as ck

    base, _ = trained_cnn
    good = load_classifier(base)
    ck.save_checkpoint(tmp_path / "m", ck.half_state_dict(good.model), good.meta)

    def crash(state, path, metadata=None):
        open(path, "wb").write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(ck, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(tmp_path / "m", ck.half_state_dict(good.model), good.meta)
    monkeypatch.undo()
    assert load_classifier(tmp_path / "m").num_params == good.num_params
    # a weights file that does not match its JSON is refused with both names
    other = tmp_path / "m.safetensors"
    other.write_bytes(checkpoint_paths(base)[0].read_bytes()[:-1] + b" ")
    with pytest.raises(CheckpointError, match="does not match"):
        load_classifier(tmp_path / "m")


def test_missing_checkpoint_message(tmp_path):
    with pytest.raises(CheckpointError, match=r"nothing\.safetensors not found.*train"):
        load_classifier(tmp_path / "nothing")


def _train_cmd(data, out):
    return [sys.executable, "-u", str(ROOT / "scripts" / "train.py"), "--model", "cnn9", "--recipe", "cpu",
            "--data-dir", str(data), "--no-verify", "--out", str(out / "ck"), "--run-dir", str(out / "runs"),
            "--widths", "8,16,32,64", "--epochs", "6", "--batch-size", "100", "--val-per-class", "2",
            "--amp", "off", "--device", "cpu", "--no-test"]


def test_sigkill_then_same_command_resumes_to_the_same_result(cifar_fixture, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # Reference: the uninterrupted run.
    ref = tmp_path / "ref"
    subprocess.run(_train_cmd(cifar_fixture, ref), check=True, env=env, capture_output=True, timeout=600)
    # Same run, killed with SIGKILL as soon as two epochs are done, then started again.
    run = tmp_path / "run"
    proc = subprocess.Popen(_train_cmd(cifar_fixture, run), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    history = run / "runs" / "cnn9" / "history.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if history.exists() and len(json.loads(history.read_text())["history"]) >= 2:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (run / "ck" / "cnn9.json").exists()
    done_before = len(json.loads(history.read_text())["history"])
    out = subprocess.run(_train_cmd(cifar_fixture, run), check=True, env=env, capture_output=True, text=True,
                         timeout=600)
    assert f"resuming cnn9 after epoch {done_before}/6" in out.stdout
    ref_meta = json.loads((ref / "ck" / "cnn9.json").read_text())
    meta = json.loads((run / "ck" / "cnn9.json").read_text())
    assert [h["epoch"] for h in meta["history"]] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(ref_meta["history"], meta["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_acc"] == pytest.approx(b["val_acc"], abs=1e-6)
    # the same command after completion is refused if the configuration changed
    changed = _train_cmd(cifar_fixture, run)
    changed[changed.index("--epochs") + 1] = "7"
    bad = subprocess.run(changed, env=env, capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and "different run configuration" in bad.stderr
