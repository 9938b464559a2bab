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
from cifar_models.common.meta import model_card
from cifar_models.train.loop import SPEED_FLAGS, use_amp
from conftest import ROOT


def test_short_cpu_run_learns_far_above_chance(trained_cnn):
    _, meta = trained_cnn
    assert len(meta["history"]) == 6
    assert meta["metrics"]["validation"]["top1"] > 0.5  # chance is 0.01
    assert meta["metrics"]["test"]["top1"] > 0.5
    h = meta["history"][-1]
    assert set(h) >= {"epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds", "images_per_s"}
    assert meta["history"][0]["train_loss"] > h["train_loss"]


@pytest.mark.parametrize("machine, avx512_bf16, amx, onednn, expected", [
    ("x86_64", False, False, True, False),   # AVX-512 without bf16 (Skylake-SP to Ice Lake): oneDNN emulates, slower
    ("x86_64", True, False, True, True),     # AVX-512 bf16 (e.g. AMD Zen 4)
    ("x86_64", False, True, True, True),     # AMX (Sapphire Rapids and later)
    ("x86_64", False, False, False, False),  # AVX2 only
    ("aarch64", False, False, True, True),   # Arm: oneDNN's answer (bf16 instructions)
])
def test_bf16_autocast_only_where_the_cpu_computes_bf16(monkeypatch, machine, avx512_bf16, amx, onednn, expected):
    import platform
    monkeypatch.setattr(platform, "machine", lambda: machine)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn)
    assert use_amp("auto", torch.device("cpu")) is expected
    assert use_amp("auto", torch.device("cuda")) is True
    assert use_amp(False, torch.device("cuda")) is False and use_amp(True, torch.device("cpu")) is True


def test_checkpoint_json_says_everything(trained_cnn):
    base, meta = trained_cnn
    weights, js = checkpoint_paths(base)
    on_disk = json.loads(js.read_text())
    for key in ["model", "arch", "pretrained", "class_names", "superclass_names", "data_config", "recipe",
                "history", "metrics", "data_md5", "train_seconds", "device", "git_commit", "weights_sha256"]:
        assert key in on_disk, key
    assert on_disk["data_config"]["input_size"] == 32 and len(on_disk["data_config"]["mean"]) == 3
    # the processor (lscpu's model name and the flags that set the speed) and, with no frozen stages and no
    # teacher, no backend for them
    cpu = on_disk["processor"]
    assert cpu["model"] and cpu["logical_cpus"] >= 1 and set(cpu["flags"] or []) <= set(SPEED_FLAGS)
    assert on_disk["frozen_backend"] is None
    assert f"on {on_disk['device']}, {cpu['model']}" in model_card(load_classifier(base))
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


def _train_cmd(data, out, *extra):
    """A small end-to-end run with dropout and drop-path, so the global random generator matters."""
    return [sys.executable, "-u", str(ROOT / "scripts" / "train.py"), "--model", "timm:test_efficientnet",
            "--from-scratch", "--input-size", "32", "--drop-rate", "0.3", "--drop-path-rate", "0.2",
            "--data-dir", str(data), "--no-verify", "--out", str(out / "ck"), "--run-dir", str(out / "runs"),
            "--epochs", "4", "--batch-size", "100", "--val-per-class", "2", "--amp", "off", "--device", "cpu",
            "--no-test", *extra]


def _weights(out, name="timm:test_efficientnet"):
    return {k: v for k, v in load_file(str(out / "runs" / name / "state.safetensors")).items()
            if k.startswith("model.")}


def _kill_after_first_state(cmd, state, env):
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if state.exists():
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"


EMA = ("--ema-decay", "0.9", "--cutmix", "0.5")  # the weight average and CutMix's draws resume exactly too


@pytest.mark.slow
def test_sigkill_then_same_command_ends_bit_identical(cifar_fixture, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    ref = tmp_path / "ref"
    subprocess.run(_train_cmd(cifar_fixture, ref, *EMA), check=True, env=env, capture_output=True, timeout=900)
    run = tmp_path / "run"
    state = run / "runs" / "timm:test_efficientnet" / "state.safetensors"
    _kill_after_first_state(_train_cmd(cifar_fixture, run, *EMA), state, env)
    assert not (run / "ck" / "timm:test_efficientnet.json").exists()
    from safetensors import safe_open

    with safe_open(str(state), "pt") as f:
        done_before = int(f.metadata()["epoch"])
    assert 1 <= done_before < 4
    out = subprocess.run(_train_cmd(cifar_fixture, run, *EMA), check=True, env=env, capture_output=True, text=True,
                         timeout=900)
    assert f"resuming timm:test_efficientnet after epoch {done_before}/4" in out.stdout
    a, b = _weights(ref), _weights(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ"
    ref_meta = json.loads((ref / "ck" / "timm:test_efficientnet.json").read_text())
    meta = json.loads((run / "ck" / "timm:test_efficientnet.json").read_text())
    # (the files' sha256 may differ: safetensors writes its metadata dict in no fixed order)
    ref_ck = load_file(str(ref / "ck" / "timm:test_efficientnet.safetensors"))
    run_ck = load_file(str(run / "ck" / "timm:test_efficientnet.safetensors"))
    assert ref_ck.keys() == run_ck.keys() and all(torch.equal(ref_ck[k], run_ck[k]) for k in ref_ck)
    assert [h["train_loss"] for h in meta["history"]] == [h["train_loss"] for h in ref_meta["history"]]
    # both the weight average and the raw weights were validated; the better of the two shipped, and its
    # validation figure is the checkpoint's
    wa, last = meta["weight_average"], meta["history"][-1]
    assert (wa["val_top1_average"], wa["val_top1_raw"]) == (last["val_acc"], last["val_acc_raw"])
    best = wa["val_top1_average"] if wa["shipped"] == "average" else wa["val_top1_raw"]
    assert max(wa["val_top1_average"], wa["val_top1_raw"]) == best == meta["metrics"]["validation"]["top1"]
    # the same command with another configuration is refused
    changed = _train_cmd(cifar_fixture, run, *EMA)
    changed[changed.index("--epochs") + 1] = "5"
    bad = subprocess.run(changed, env=env, capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and "different run configuration" in bad.stderr


def _cnn_cmd(data, out, epochs):
    return ["scripts/train.py", "--model", "cnn9", "--recipe", "cpu", "--widths", "8,16,32,64", "--lr", "0.01",
            "--photo-augment", "0.5", "--data-dir", str(data), "--no-verify", "--out", str(out / "ck"),
            "--run-dir", str(out / "runs"), "--epochs", epochs, "--batch-size", "200", "--val-per-class", "2",
            "--amp", "off", "--device", "cpu", "--no-test", "--no-channels-last"]


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process_and_resume_exactly(tmp_path):
    from conftest import make_cifar_fixture

    # Class colours away from 0 and 255: saturated pixels make identical patches, whose exact ties in max-pooling
    # let the gradient take either (equally valid) path, differently for batches of 200 and of 100.
    data = make_cifar_fixture(tmp_path / "data" / "cifar-100-python", colours=(48, 208))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, *_cnn_cmd(data, one, "1")], cwd=ROOT, check=True, env=env, capture_output=True,
                   timeout=900)
    out = subprocess.run([*torchrun, *_cnn_cmd(data, two, "1")], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "x2" in out.stdout and out.stdout.count("epoch   1/1") == 1  # only rank 0 prints...
    assert out.stdout.count('"recipe": "cnn9-cpu"') == 1  # ...the recipe included
    a, b = _weights(one, "cnn9"), _weights(two, "cnn9")
    assert a.keys() == b.keys()
    # The same global batches (200 = 2 x 100) and synchronised batch norm give the same weights up to float
    # rounding. (Few, small steps: a ReLU/max-pool network amplifies rounding differences step after step.
    # Contiguous memory format: oneDNN's channels-last convolution backward on the CPU is ~1% off fp64.)
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=1e-3, atol=1e-4), k
    # a distributed run killed after its first saved state resumes to the same weights, bit for bit
    three, four = tmp_path / "three", tmp_path / "four"
    subprocess.run([*torchrun, *_cnn_cmd(data, four, "4")], cwd=ROOT, check=True, env=env, capture_output=True,
                   timeout=900)
    state = three / "runs" / "cnn9" / "state.safetensors"
    _kill_after_first_state([*torchrun, *_cnn_cmd(data, three, "4")], state, env)
    from safetensors import safe_open

    with safe_open(str(state), "pt") as f:
        done, before = int(f.metadata()["epoch"]), json.loads(f.metadata()["history"])
    assert 1 <= done < 4
    out = subprocess.run([*torchrun, *_cnn_cmd(data, three, "4")], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    with safe_open(str(state), "pt") as f:
        after = json.loads(f.metadata()["history"])
    assert after[:done] == before, "the epochs done before the kill were run again instead of resumed"
    c, d = _weights(three, "cnn9"), _weights(four, "cnn9")
    assert all(torch.equal(c[k], d[k]) for k in c), "the resumed distributed run differs"


def test_training_keeps_freed_memory_unless_the_user_tunes_malloc(monkeypatch):
    from cifar_models.common import memory

    calls = []
    monkeypatch.setattr(memory, "_TRAINING_MALLOC", None)  # this process's record is restored afterwards
    monkeypatch.setattr(memory, "_libc", lambda name: (lambda param, value: calls.append((param, value)) or 1))
    for k in ("CIFAR_MALLOC", "GLIBC_TUNABLES", *memory.MALLOC_ENVIRONMENT):
        monkeypatch.delenv(k, raising=False)
    assert memory.reuse_freed_memory() == dict(allocator="glibc", mmap=False, trim_threshold=1 << 30)
    assert calls == [(memory.M_MMAP_MAX, 0), (memory.M_TRIM_THRESHOLD, 1 << 30)]
    assert memory.malloc_settings() == dict(allocator="glibc", mmap=False, trim_threshold=1 << 30)  # for the JSON
    monkeypatch.setattr(memory, "_TRAINING_MALLOC", None)
    for env in (dict(CIFAR_MALLOC="default"), dict(MALLOC_MMAP_MAX_="65536"),
                dict(GLIBC_TUNABLES="glibc.malloc.trim_threshold=0")):  # the user's own tuning wins
        calls.clear()
        with monkeypatch.context() as m:
            for k, v in env.items():
                m.setenv(k, v)
            assert memory.reuse_freed_memory() is None and calls == [], env
    monkeypatch.setattr(memory, "_libc", lambda name: (lambda param, value: 0))  # glibc refused the setting
    assert memory.reuse_freed_memory() is None
    monkeypatch.setattr(memory, "_libc", lambda name: None)  # not glibc (macOS, Windows, musl)
    assert memory.reuse_freed_memory() is None and memory.malloc_settings() is None


@pytest.mark.slow
def test_the_training_allocator_changes_speed_only_not_the_weights(cifar_fixture, tmp_path):
    # A CPU run sets glibc's malloc for training (common/memory.py) and says so in its JSON; with CIFAR_MALLOC=default
    # it leaves malloc alone, and the weights come out bit for bit the same.
    import platform

    from cifar_models.common.memory import MALLOC_ENVIRONMENT

    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    for k in ("CIFAR_MALLOC", "GLIBC_TUNABLES", *MALLOC_ENVIRONMENT):
        env.pop(k, None)
    tuned, plain = tmp_path / "tuned", tmp_path / "plain"
    subprocess.run([*_train_cmd(cifar_fixture, tuned), "--epochs", "2"], check=True, env=env, capture_output=True,
                   timeout=900)
    subprocess.run([*_train_cmd(cifar_fixture, plain), "--epochs", "2"], check=True, env=dict(env, CIFAR_MALLOC="default"),
                   capture_output=True, timeout=900)
    name = "timm:test_efficientnet"
    tuned_meta = json.loads((tuned / "ck" / f"{name}.json").read_text())
    assert json.loads((plain / "ck" / f"{name}.json").read_text())["malloc"] is None
    if platform.libc_ver()[0] == "glibc":
        assert tuned_meta["malloc"] == dict(allocator="glibc", mmap=False, trim_threshold=1 << 30)  # glibc took it
    a = load_file(str(tuned / "ck" / f"{name}.safetensors"))
    b = load_file(str(plain / "ck" / f"{name}.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
