"""W&B tracking: a tiny offline run through scripts/train.py, read back from the run's own log file."""
import base64
import hashlib
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from test_cli import load_script, run_script

ROOT = Path(__file__).resolve().parents[1]


def wandb_records(path: Path) -> list:
    """The records of a run's .wandb file (wandb's LevelDB-style log: 32 KiB blocks of chunks with a 7-byte header
    crc32, length, type; protobuf Records), which only wandb's Go core reads otherwise."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, buf, out = 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = pb.Record()
            record.ParseFromString(buf)
            out.append(record)
            buf = b""
    return out


def read_offline_run(run_dir: Path) -> dict:
    """config, history rows, summary and artifacts of an offline run."""
    (log,) = run_dir.glob("run-*.wandb")
    run = dict(config={}, history=[], summary={}, artifacts=[])
    for r in wandb_records(log):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run["config"].update({u.key: json.loads(u.value_json) for u in r.run.config.update})
        elif kind == "config":
            run["config"].update({u.key: json.loads(u.value_json) for u in r.config.update})
        elif kind == "history":
            run["history"].append({"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item})
        elif kind == "summary":
            run["summary"].update({"/".join(u.nested_key) or u.key: json.loads(u.value_json) for u in r.summary.update})
        elif kind == "artifact":
            run["artifacts"].append(r.artifact)
        elif kind == "exit":
            run["exit_code"] = r.exit.exit_code
    return run


def _train_argv(data: Path, out: Path, epochs: str = "2") -> list[str]:
    return ["--model", "cnn9", "--recipe", "cpu", "--widths", "8,16,32,64", "--data-dir", str(data), "--no-verify",
            "--out", str(out / "ck"), "--run-dir", str(out / "runs"), "--epochs", epochs, "--batch-size", "200",
            "--val-per-class", "2", "--amp", "off", "--device", "cpu"]


@pytest.fixture
def wandb_env(tmp_path, monkeypatch) -> Path:
    """No API key anywhere, no WANDB_MODE: the run must go offline by itself; everything W&B writes in tmp_path."""
    for key in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    for key in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(key, str(tmp_path / "wandb-home" / key.lower()))
    return tmp_path / "wandb-home" / "wandb_dir"


def _md5_b64(path: Path) -> str:
    return base64.b64encode(hashlib.md5(path.read_bytes()).digest()).decode()


@pytest.mark.slow
def test_offline_run_has_config_epochs_summary_and_checkpoint(cifar_fixture, tmp_path, wandb_env, capsys):
    meta = load_script("train").main(_train_argv(cifar_fixture, tmp_path) + ["--log-wandb", "--wandb-project", "t"])
    printed = capsys.readouterr().out
    (run_dir,) = (wandb_env / "wandb").glob("offline-run-*")
    assert f"wandb sync {run_dir}" in printed  # offline by itself, and says how to upload
    run = read_offline_run(run_dir)
    assert run["exit_code"] == 0  # the whole log was written before training returned
    assert {k: run["config"][k] for k in meta["recipe"]} == meta["recipe"] and run["config"]["processes"] == 1
    assert [h["epoch"] for h in run["history"]] == [1, 2] and [h["_step"] for h in run["history"]] == [1, 2]
    for logged, row in zip(run["history"], meta["history"]):
        assert logged["train/loss"] == pytest.approx(row["train_loss"]) and logged["val/acc"] == row["val_acc"]
        assert logged["lr"] == row["lr"] and logged["images_per_s"] == pytest.approx(row["images_per_s"])
        assert {"train/acc", "val/loss", "epoch_seconds"} <= logged.keys()
    for split in ("validation", "test"):
        for key, value in meta["metrics"][split].items():
            assert run["summary"][f"{split}/{key}"] == pytest.approx(value)
    assert run["summary"]["temperature"] == pytest.approx(meta["calibration"]["temperature"])
    (artifact,) = run["artifacts"]
    assert (artifact.type, artifact.name) == ("model", "cnn9")
    info = json.loads(artifact.metadata)
    files = {p: tmp_path / "ck" / p for p in ("cnn9.safetensors", "cnn9.json")}
    assert info["data_md5"] == meta["data_md5"] and info["metrics"]["test"] == pytest.approx(meta["metrics"]["test"])
    assert info["weights_sha256"] == json.loads(files["cnn9.json"].read_text())["weights_sha256"]
    assert {c.path: c.digest for c in artifact.manifest.contents} == {p: _md5_b64(f) for p, f in files.items()}


def test_offline_without_a_key_online_with_one(tmp_path, monkeypatch, wandb_env):
    from cifar_models.train.tracking import WandbLogger, artifact_name

    assert WandbLogger().mode == "offline"
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert WandbLogger().mode == "online"  # `wandb login` wrote a key
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert WandbLogger().mode == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert WandbLogger().mode == "disabled"  # an explicit mode wins
    assert artifact_name("timm:resnet18") == "timm-resnet18" and artifact_name("cnn9_long.v2") == "cnn9_long.v2"


def test_missing_wandb_and_flag_mistakes(capsys, monkeypatch, cifar_fixture, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    err = run_script("train", _train_argv(cifar_fixture, tmp_path) + ["--log-wandb"], capsys)
    assert err.startswith("error: wandb is needed for this and is not installed") and "pip install wandb" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "ck").exists()  # before any training
    err = run_script("train", ["--model", "cnn9", "--wandb-project", "p"], capsys)
    assert "--wandb-project needs --log-wandb" in err


def test_wandb_is_imported_only_when_asked_for():
    code = ("import runpy, sys; m = runpy.run_path('scripts/train.py'); a, cfg = m['parse'](['--model', 'cnn9']); "
            "assert 'wandb' not in sys.modules and not a.log_wandb; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "ok", out.stderr


@pytest.mark.slow
def test_under_torchrun_only_rank_0_logs(tmp_path, wandb_env):
    from conftest import make_cifar_fixture

    data = make_cifar_fixture(tmp_path / "data" / "cifar-100-python")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    out = subprocess.run([*torchrun, "scripts/train.py", *_train_argv(data, tmp_path, "1"), "--no-test", "--log-wandb"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = list((wandb_env / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and out.stdout.count("wandb sync") == 1
    run = read_offline_run(runs[0])
    assert run["config"]["processes"] == 2 and [h["epoch"] for h in run["history"]] == [1]
    assert re.search(r"test/", " ".join(run["summary"])) is None  # --no-test: no test metrics


@pytest.mark.slow
def test_a_resumed_run_logs_every_epoch(cifar_fixture, tmp_path, wandb_env):
    from conftest import tiny_cnn_cfg

    from cifar_models.train.tracking import WandbLogger
    from cifar_models.train.loop import train

    class Interrupted(Exception):
        pass

    class StopAtEpoch2(WandbLogger):  # the process dies after epoch 1 was saved, before epoch 2 is
        def log_epoch(self, row: dict) -> None:
            if row["epoch"] == 2:
                raise Interrupted
            super().log_epoch(row)

    cfg = tiny_cnn_cfg(epochs=2, batch_size=200)
    where = dict(data_dir=cifar_fixture, out_dir=tmp_path / "ck", run_dir=tmp_path / "runs", verify_md5=False,
                 run_test=False)
    with pytest.raises(Interrupted):
        train(cfg, tracker=StopAtEpoch2(), **where)
    train(cfg, tracker=WandbLogger(), **where)  # the same run again: resumes at epoch 2
    first, second = sorted((wandb_env / "wandb").glob("offline-run-*"))
    assert [h["epoch"] for h in read_offline_run(first)["history"]] == [1] and read_offline_run(first)["exit_code"] == 1
    history = json.loads((tmp_path / "ck" / "cnn9.json").read_text())["history"]
    logged = read_offline_run(second)["history"]
    assert [h["epoch"] for h in logged] == [1, 2] and [h["train/loss"] for h in logged] == pytest.approx(
        [h["train_loss"] for h in history])
