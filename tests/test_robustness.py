"""Accuracy against severity, end to end on the tiny fixture, and the dashboard's corrupted comparison."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cifar_models import load_classifier, load_cifar100
from cifar_models.eval.corruptions import CORRUPTIONS, SEVERITIES, apply_corruptions, corrupt
from cifar_models.eval.robustness import evaluate_corruptions
from cifar_models.serve.lab import corrupted_comparison, robustness_summary, to_display
from conftest import ROOT

EVALUATE = [sys.executable, str(ROOT / "scripts" / "evaluate.py")]


@pytest.fixture
def ckpt(trained_cnn, tmp_path):
    for f in trained_cnn[0].parent.glob("cnn9.*"):
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "cnn9.eval.json").unlink(missing_ok=True)
    return tmp_path / "cnn9"


def run(*args):
    return subprocess.run([*EVALUATE, *map(str, args)], capture_output=True, text=True, check=True)


@pytest.mark.slow
def test_corruption_evaluation_end_to_end_merges_into_the_report(ckpt, cifar_fixture):
    run("--checkpoint", ckpt, "--data-dir", cifar_fixture, "--no-verify")
    plain = json.loads(ckpt.with_suffix(".eval.json").read_text())
    out = run("--checkpoint", ckpt, "--data-dir", cifar_fixture, "--no-verify", "--corruptions",
              "--corruption-limit", 0, "--seed", 7)
    assert "mean corruption accuracy (mCA)" in out.stdout and "merged into the existing report" in out.stdout
    assert "img" in out.stderr  # the tqdm progress bar
    report = json.loads(ckpt.with_suffix(".eval.json").read_text())
    assert {k: report[k] for k in plain} == plain  # nothing of the plain report was dropped or changed
    table, ev = report["corruptions"], report["corruption_eval"]
    assert list(table) == list(CORRUPTIONS) and all(len(row) == len(SEVERITIES) for row in table.values())
    assert report["corruption_mca"] == pytest.approx(np.mean([v for row in table.values() for v in row]))
    assert ev["test_images"] == 300 and ev["seed"] == 7 and ev["subset"] == {"kind": "all"}
    assert ev["clean_top1"] == pytest.approx(plain["summary"]["top1"])  # same images, same model, no corruption
    # every figure is a real count: recompute two of them directly
    clf = load_classifier(ckpt)
    test = load_cifar100(cifar_fixture, verify=False).test
    for name, s in (("darkness", 5), ("gaussian_noise", 3)):
        preds = clf.logits(corrupt(test.images, name, s, seed=7)).argmax(1)
        assert table[name][s - 1] == pytest.approx(float((preds == test.labels).float().mean()))
    # the darkest severity must hurt the fixture's colour-coded classes
    assert table["darkness"][-1] < ev["clean_top1"]

    # a plain re-run keeps the figures of the same weights...
    run("--checkpoint", ckpt, "--data-dir", cifar_fixture, "--no-verify")
    assert json.loads(ckpt.with_suffix(".eval.json").read_text())["corruptions"] == table
    # ...and drops those of other weights
    report["corruption_eval"]["weights_sha256"] = "other weights"
    ckpt.with_suffix(".eval.json").write_text(json.dumps(report))
    out = run("--checkpoint", ckpt, "--data-dir", cifar_fixture, "--no-verify")
    assert "dropped the corruption figures" in out.stdout
    assert "corruptions" not in json.loads(ckpt.with_suffix(".eval.json").read_text())


@pytest.mark.slow
def test_corruption_subset_is_stratified_seeded_and_limit_is_refused_with_it(ckpt, cifar_fixture, tmp_path):
    out = tmp_path / "r.json"
    run("--checkpoint", ckpt, "--data-dir", cifar_fixture, "--no-verify", "--corruptions", "--corruption-limit", 200,
        "--out", out, "--no-progress")
    ev = json.loads(out.read_text())["corruption_eval"]
    assert ev["test_images"] == 200 and ev["subset"]["kind"] == "stratified" and ev["subset"]["per_class"] == 2
    bad = subprocess.run([*EVALUATE, "--checkpoint", str(ckpt), "--corruptions", "--limit", "5"], capture_output=True,
                         text=True)
    assert bad.returncode != 0 and "--corruption-limit" in bad.stderr


def test_evaluate_corruptions_is_deterministic(trained_cnn, cifar_fixture):
    clf = load_classifier(trained_cnn[0])
    test = load_cifar100(cifar_fixture, verify=False).test.take(range(60))
    a = evaluate_corruptions(clf, test, seed=1, names=["rotation", "jpeg"], progress=False)
    b = evaluate_corruptions(clf, test, seed=1, names=["rotation", "jpeg"], progress=False)
    assert a["corruptions"] == b["corruptions"] and list(a["corruptions"]) == ["rotation", "jpeg"]


def test_corrupted_comparison_runs_every_model_on_the_corrupted_image(trained_cnn):
    clf = load_classifier(trained_cnn[0])
    models = {"first": clf, "second": clf}  # any names, any number of models
    photo = Image.effect_noise((90, 60), 70).convert("RGB")
    severities = {"occlusion": 4, "gaussian_noise": 5, "contrast": 0}
    r = corrupted_comparison(models, photo, severities, seed=2)
    clean = clf.preprocess([photo])
    assert torch.equal(r["original"], clean[0])
    assert torch.equal(r["corrupted"], apply_corruptions(clean, severities, seed=2)[0])
    assert not torch.equal(r["original"], r["corrupted"])
    assert r["active"] == {"occlusion": 4, "gaussian_noise": 5}
    expected = clf.top_k(r["corrupted"][None])[0]
    for name in models:
        got = r["models"][name]["top"]
        assert [t["label"] for t in got] == [c for c, _ in expected]  # (batch of 2 vs 1: float noise only)
        assert [t["probability"] for t in got] == pytest.approx([p for _, p in expected], abs=1e-4)
        assert r["models"][name]["clean_top"][0]["label"] == clf.top_k(clean)[0][0][0]
    assert r["agree"] is True
    text = robustness_summary(r, {"first": "Model one"})
    assert "Occlusion, severity 4" in text and "Model one" in text and "second" in text
    off = corrupted_comparison(models, photo, {})
    assert torch.equal(off["original"], off["corrupted"]) and "No corruption" in robustness_summary(off)
    assert off["models"]["first"]["top"] == off["models"]["first"]["clean_top"]
    assert to_display(r["corrupted"], 96).size == (96, 96)
