import json
import subprocess
import sys

import pytest
import torch

from cifar_models import load_classifier, load_cifar100
from cifar_models.common.files import atomic_write_json
from cifar_models.common.reports import contrast_pair
from cifar_models.eval.evaluation import evaluate_classifier, validation_split
from conftest import ROOT


def test_analysis_file_round_trips_and_matches_a_direct_count(trained_cnn, cifar_fixture, tmp_path):
    clf = load_classifier(trained_cnn[0])
    data = load_cifar100(cifar_fixture, verify=False)
    report = evaluate_classifier(clf, data.test, val_split=validation_split(data, clf.meta))
    atomic_write_json(tmp_path / "a.json", report, indent=None)
    back = json.loads((tmp_path / "a.json").read_text())
    assert back == json.loads(json.dumps(report))
    # per-class accuracy equals a count over the per-image predictions, and over a fresh forward pass
    preds = clf.logits(data.test.images).argmax(1)
    assert back["images"]["top1"] == preds.tolist() and back["images"]["label"] == data.test.labels.tolist()
    for c, name in enumerate(clf.classes):
        mask = data.test.labels == c
        assert back["per_class_accuracy"][name] == float((preds[mask] == c).float().mean())
    assert back["summary"]["top1"] == float((preds == data.test.labels).float().mean())
    assert sum(map(sum, back["confusion_matrix"])) == len(data.test)
    assert back["calibration"]["fitted_on"] == "validation" and back["calibration"]["temperature"] > 0


def test_temperature_is_applied_by_load_classifier_and_can_be_bypassed(trained_cnn):
    from PIL import Image

    clf = load_classifier(trained_cnn[0])
    t = clf.meta["calibration"]["temperature"]  # written by training's final evaluation
    assert t == clf.temperature and t != 1.0
    images = [Image.effect_noise((40, 40), 60).convert("RGB")]
    logits = clf.logits(clf.preprocess(images))
    assert torch.allclose(clf.predict_proba(images, calibrated=False), logits.softmax(1))
    assert torch.allclose(clf.predict_proba(images), (logits / t).softmax(1))
    assert clf.predict(images, k=1)[0][0][0] == clf.predict(images, k=1, calibrated=False)[0][0][0]


def test_evaluate_script_writes_report_and_updates_checkpoint(trained_cnn, cifar_fixture, tmp_path):
    import shutil

    for f in trained_cnn[0].parent.glob("cnn9.*"):
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "cnn9.eval.json").unlink()
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), "--checkpoint", str(tmp_path / "cnn9"),
                          "--data-dir", str(cifar_fixture), "--no-verify"], capture_output=True, text=True, check=True)
    assert "top-1" in out.stdout and "temperature" in out.stdout
    report = json.loads((tmp_path / "cnn9.eval.json").read_text())
    meta = json.loads((tmp_path / "cnn9.json").read_text())
    assert meta["metrics"]["test"] == report["summary"] and meta["calibration"] == report["calibration"]
    assert load_classifier(tmp_path / "cnn9").temperature == report["calibration"]["temperature"]


def test_the_gallery_opens_on_the_weakest_and_the_strongest_model_with_per_image_results():
    def report(top1, images=True):
        return {"summary": {"top1": top1}} | ({"images": {"top1": [0], "label": [0]}} if images else {})

    reports = {"scratch": report(0.69), "distilled": report(0.70), "transfer": report(0.83),
               "no_images": report(0.95, images=False)}
    names = ["scratch", "distilled", "no_images", "transfer"]
    assert contrast_pair(reports, names) == ["scratch", "transfer"]
    assert contrast_pair(reports, ["transfer", "distilled"]) == ["transfer", "distilled"]  # two: kept as given
    assert contrast_pair(reports, ["no_images", "distilled", "missing"]) == ["distilled"]
    ties = {n: report(0.5) for n in "abc"}
    assert contrast_pair(ties, list("abc")) == ["a", "b"]


@pytest.mark.slow  # runs scripts/evaluate.py in a subprocess (several seconds)
def test_evaluate_on_validation_and_with_flip_override_leaves_the_checkpoint_alone(trained_cnn, cifar_fixture,
                                                                                 tmp_path):
    """`--split validation` (choosing) reads the held-out split, not the test set; `--flip-average` overrides the
    checkpoint's test-time augmentation for one run. Neither touches the checkpoint's JSON or report."""
    import shutil

    for f in trained_cnn[0].parent.glob("cnn9.*"):
        shutil.copy(f, tmp_path / f.name)
    before = {f.name: f.read_bytes() for f in tmp_path.glob("cnn9.*")}
    data = load_cifar100(cifar_fixture, verify=False)
    clf = load_classifier(tmp_path / "cnn9")
    val = validation_split(data, clf.meta)
    reports = {}
    for flip in ("--no-flip-average", "--flip-average"):
        out = tmp_path / f"val{flip}.json"
        run = subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), "--checkpoint", str(tmp_path / "cnn9"),
                              "--data-dir", str(cifar_fixture), "--no-verify", "--split", "validation", flip,
                              "--out", str(out)], capture_output=True, text=True, check=True)
        assert f"on {len(val)} validation images" in run.stdout
        reports[flip] = json.loads(out.read_text())
    assert {f.name: f.read_bytes() for f in tmp_path.glob("cnn9.*")} == before
    for flip, on in (("--no-flip-average", False), ("--flip-average", True)):
        clf.data_config = dict(clf.data_config, flip_average=on)
        preds = clf.logits(val.images).argmax(1)
        r = reports[flip]
        assert r["split"] == "validation" and r["flip_average"] is on and "calibration" not in r
        assert r["images"]["label"] == val.labels.tolist() and r["images"]["top1"] == preds.tolist()
    assert reports["--flip-average"]["images"]["confidence"] != reports["--no-flip-average"]["images"]["confidence"]
    # an override on the test set reports to --out only; without --out, it prints and writes nothing
    subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), "--checkpoint", str(tmp_path / "cnn9"),
                    "--data-dir", str(cifar_fixture), "--no-verify", "--flip-average"], capture_output=True,
                   text=True, check=True)
    assert {f.name: f.read_bytes() for f in tmp_path.glob("cnn9.*")} == before
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), "--checkpoint", str(tmp_path / "cnn9"),
                          "--corruptions", "--split", "validation"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--split validation is for" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow  # runs scripts/evaluate.py in a subprocess (several seconds)
def test_choose_flip_average_writes_the_setting_that_validates_better(trained_cnn, cifar_fixture, tmp_path):
    """`--choose-flip-average` evaluates the validation split both ways and writes the better setting (off on a
    tie) into the checkpoint's data config, with the figures; the weights stay as they are."""
    import shutil

    for f in trained_cnn[0].parent.glob("cnn9.*"):
        shutil.copy(f, tmp_path / f.name)
    weights = (tmp_path / "cnn9.safetensors").read_bytes()
    data = load_cifar100(cifar_fixture, verify=False)
    clf = load_classifier(tmp_path / "cnn9")
    val = validation_split(data, clf.meta)
    expected = {}
    for on in (False, True):
        clf.data_config = dict(clf.data_config, flip_average=on)
        expected[on] = (clf.logits(val.images).argmax(1) == val.labels).float().mean().item()
    cmd = [sys.executable, str(ROOT / "scripts" / "evaluate.py"), "--checkpoint", str(tmp_path / "cnn9"),
           "--data-dir", str(cifar_fixture), "--no-verify", "--choose-flip-average"]
    run = subprocess.run(cmd, capture_output=True, text=True, check=True)
    meta = json.loads((tmp_path / "cnn9.json").read_text())
    choice = meta["test_time_choice"]
    assert choice["figures"]["off"]["top1"] == pytest.approx(expected[False])
    assert choice["figures"]["on"]["top1"] == pytest.approx(expected[True])
    assert meta["data_config"]["flip_average"] is choice["flip_average"] is (expected[True] > expected[False])
    assert choice["validation_images"] == len(val) and "run the plain evaluation" in run.stdout
    assert (tmp_path / "cnn9.safetensors").read_bytes() == weights
    assert load_classifier(tmp_path / "cnn9").data_config["flip_average"] is choice["flip_average"]
    bad = subprocess.run(cmd + ["--split", "validation"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--choose-flip-average takes only" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow  # runs scripts/evaluate.py in a subprocess (several seconds)
def test_input_size_override_evaluates_at_that_size_and_leaves_the_checkpoint_alone(trained_cnn, cifar_fixture,
                                                                                  tmp_path):
    """`--input-size N` (choosing a test size on validation, FixRes) runs the network at N px: the same top-1 per
    image as the classifier with that size; the checkpoint's files stay as they are."""
    import shutil

    for f in trained_cnn[0].parent.glob("cnn9.*"):
        shutil.copy(f, tmp_path / f.name)
    before = {f.name: f.read_bytes() for f in tmp_path.glob("cnn9.*")}
    out = tmp_path / "val48.json"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), "--checkpoint", str(tmp_path / "cnn9"),
                          "--data-dir", str(cifar_fixture), "--no-verify", "--split", "validation", "--input-size", "48",
                          "--out", str(out)], capture_output=True, text=True, check=True)
    assert "validation images at 48 px" in run.stdout
    assert {f.name: f.read_bytes() for f in tmp_path.glob("cnn9.*")} == before
    clf = load_classifier(tmp_path / "cnn9")
    val = validation_split(load_cifar100(cifar_fixture, verify=False), clf.meta)
    r = json.loads(out.read_text())
    at32 = clf.logits(val.images)
    clf.data_config = dict(clf.data_config, input_size=48)
    at48 = clf.logits(val.images)
    assert r["input_size"] == 48 and r["images"]["top1"] == at48.argmax(1).tolist()
    assert not torch.allclose(at48, at32, atol=1e-3)  # the size changed what the network saw
