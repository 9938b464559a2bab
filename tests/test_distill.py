"""Distillation (train/distill.py) on the tiny fixture: a cnn9 student from random initialisation, taught by the
session's tiny trained cnn9 (`trained_cnn`) on fixed views whose teacher logits are cached; end to end through
scripts/train.py (targets, training, save, load, predict, card), the cached targets against the teacher's own
outputs on the student's views, the errors, and a resumed run."""
import importlib.util
import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from cifar_models import load_classifier
from cifar_models.checkpoint import CheckpointError, checkpoint_paths
from cifar_models.common.meta import model_card
from cifar_models.data import apply_augment, photo_round_trip, to_model_input
from cifar_models.train import distill
from cifar_models.train.features import view_params
from cifar_models.train.loop import run_epoch, setup, train
from cifar_models.train.recipes import get_recipe
from cifar_models.train.state import save_state
from conftest import ROOT

TINY = ["--widths", "8,16,32,64", "--lr", "0.4", "--batch-size", "50", "--val-per-class", "2", "--warmup-epochs",
        "0.5", "--amp", "off", "--device", "cpu", "--no-verify"]


def train_script():
    spec = importlib.util.spec_from_file_location("train_script", ROOT / "scripts" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def distill_cfg(teacher, **overrides) -> dict:
    cfg = get_recipe("cnn9", "cpu-distill")
    cfg.update(arch=dict(widths=[8, 16, 32, 64]), epochs=2, batch_size=50, lr=0.4, val_per_class=2, amp=False,
               device="cpu", warmup_epochs=0.5, distill_views=3, teacher=str(teacher))
    cfg.update(overrides)
    return cfg


def cached_targets(run_dir) -> torch.Tensor:
    """The teacher-target cache of a run (one part per view: the fixture has fewer than PART images)."""
    (folder,) = (run_dir / "teacher-cache").iterdir()
    parts = sorted(folder.glob("view*-part0000.safetensors"))
    return torch.stack([load_file(str(p))["out"] for p in parts])


@pytest.mark.slow
def test_distilled_cnn9_end_to_end_through_the_script(trained_cnn, cifar_fixture, tmp_path):
    teacher_base, teacher_meta = trained_cnn
    out = tmp_path / "ck"
    train_script().main(["--model", "cnn9", "--recipe", "cpu-distill", "--teacher", str(teacher_base) + ".json",
                         "--name", "cnn9_distilled", "--epochs", "3", "--distill-views", "3", *TINY,
                         "--data-dir", str(cifar_fixture), "--out", str(out), "--run-dir", str(tmp_path / "runs")])
    meta = json.loads(checkpoint_paths(out / "cnn9_distilled")[1].read_text())
    assert meta["recipe"]["recipe"] == "cnn9-cpu-distill" and meta["recipe"]["teacher"] == str(teacher_base)
    t = meta["teacher"]
    assert t["checkpoint"] == "cnn9" and t["model"] == "cnn9" and t["weights_sha256"] == json.loads(
        checkpoint_paths(teacher_base)[1].read_text())["weights_sha256"]
    assert t["test_top1"] == teacher_meta["metrics"]["test"]["top1"]
    d = meta["distillation"]
    assert (d["alpha"], d["temperature"], d["views"], d["photo_augment"]) == (0.5, 4.0, 3, 0.5)
    assert d["cache_key"] == t["cache_key"] and (tmp_path / "runs" / "teacher-cache" / d["cache_key"]).is_dir()
    assert meta["frozen_backend"] == "onnxruntime"  # a CPU without bf16 autocast (--amp off): the teacher ran there
    wall = meta["wall_clock_seconds"]
    assert wall["teacher_targets"] > 0 and wall["training"] > 0 and wall["test"] > 0
    assert wall["total"] == pytest.approx(wall["teacher_targets"] + wall["training"] + wall["test"])
    assert len(meta["history"]) == 3 and meta["history"][-1]["train_loss"] < meta["history"][0]["train_loss"]
    assert meta["metrics"]["validation"]["top1"] > 0.2  # chance is 0.01

    student = load_classifier(out / "cnn9_distilled")
    assert student.num_params == meta["num_params"] and student.checkpoint == "cnn9_distilled"
    (top,) = student.predict([Image.new("RGB", (120, 90), (10, 200, 40))])
    assert len(top) == 5 and top[0][1] >= top[-1][1] > 0
    card = model_card(student)
    assert ("Distilled: trained from scratch to match the soft predictions of `cnn9` (cnn9 · 9-layer CNN, from "
            "scratch, ") in card and "on the same augmented views (3 per image), as well as the labels." in card
    assert "for the teacher's targets" in card
    assert "Distilled" not in model_card(load_classifier(teacher_base))  # a plain checkpoint says nothing of it


def test_cached_targets_are_the_teachers_outputs_on_the_students_views(trained_cnn, cifar_fixture, tmp_path):
    teacher_base, _ = trained_cnn
    run = setup(distill_cfg(teacher_base, subset=200), data_dir=cifar_fixture, run_dir=tmp_path / "runs",
                verify_md5=False)
    teacher = load_classifier(teacher_base)
    # The targets are the network's outputs on each view itself, not averaged with its mirror (the fixture's
    # cnn9 recipe flips at test time; load_teacher drops that, test_targets_from_a_frozen_teachers_own_cache...).
    teacher.data_config = dict(teacher.data_config, flip_average=False)
    pad, images = run.cfg["crop_padding"], run.data.train.images[run.train_idx]
    cache = cached_targets(tmp_path / "runs")
    assert cache.dtype == torch.float32 and cache.shape == (3, len(images), 100)
    params = view_params(len(images), 3, run.cfg["seed"], pad, 0.5)
    # Independently of the crop code: view 0 is the image and view 1 its mirror, each through the photo round trip
    # where its seeded share says so.
    for view, pixels in ((0, images), (1, images.flip(3))):
        expected = teacher.logits(photo_round_trip(pixels, params["resample"][view]))
        assert torch.allclose(cache[view], expected, rtol=1e-4, atol=1e-4)
    assert 0.3 < (params["resample"] > 0).float().mean() < 0.7  # the recipe's photo share, in every view
    # An epoch's draw: the targets that come with each image are the teacher's logits for the very pixels the
    # student is given (its input is those pixels, normalised).
    g = torch.Generator().manual_seed(5)
    perm = torch.randperm(len(images), generator=g)[:60]
    choice = run.draw(perm, g)
    assert set(choice["view"].tolist()) == {0, 1, 2}
    pixels = apply_augment(run.gather(run.source, perm, choice), choice, pad)
    assert torch.allclose(choice["teacher"], teacher.logits(pixels), rtol=1e-4, atol=1e-4)
    assert torch.equal(choice["teacher"], cache[choice["view"], perm])
    assert torch.equal(run.inputs(run.gather(run.source, perm, choice), choice),
                       to_model_input(pixels, run.data_cfg).float())
    assert not torch.equal(pixels[choice["view"] == 2], images[perm][choice["view"] == 2])  # crops did move


def test_distillation_loss_is_hintons():
    s, t, y = torch.randn(6, 100), torch.randn(6, 100), torch.randint(0, 100, (6,))
    p_t = (t / 4).softmax(1)
    kl = (p_t * (p_t.log() - (s / 4).log_softmax(1))).sum(1).mean()
    expected = 0.9 * 16 * kl + 0.1 * torch.nn.functional.cross_entropy(s, y)
    assert torch.allclose(distill.distill_loss(s, t, y, 0.9, 4.0), expected, atol=1e-5)
    assert distill.distill_loss(t, t, y, 1.0, 4.0).abs() < 1e-5  # a student that matches its teacher: no loss


def test_missing_or_wrong_teacher_is_a_clear_error(trained_cnn, cifar_fixture, tmp_path, capsys):
    script = train_script()
    with pytest.raises(SystemExit):
        script.parse(["--model", "cnn9", "--recipe", "cpu-distill"])
    assert "distils from a teacher: pass --teacher CHECKPOINT" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.parse(["--model", "cnn9", "--recipe", "cpu", "--teacher", str(trained_cnn[0])])
    assert "does not distil" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.parse(["--model", "cnn9", "--recipe", "cpu-distill", "--teacher", str(tmp_path / "nothing")])
    assert f"teacher {tmp_path / 'nothing'}: checkpoint file" in capsys.readouterr().err
    kw = dict(data_dir=cifar_fixture, out_dir=tmp_path / "ck", run_dir=tmp_path / "runs", verify_md5=False)
    with pytest.raises(CheckpointError, match=r"teacher .*nothing: checkpoint file .*nothing\.safetensors not found"):
        train(distill_cfg(tmp_path / "nothing"), **kw)
    bad = tmp_path / "bad"
    for p in checkpoint_paths(bad):
        p.write_text("{not json")
    with pytest.raises(CheckpointError, match=r"teacher .*bad: checkpoint file .*bad\.json is not valid JSON"):
        train(distill_cfg(bad), **kw)
    with pytest.raises(ValueError, match="distill_alpha=1.5"):
        train(distill_cfg(trained_cnn[0], distill_alpha=1.5), **kw)


@pytest.mark.slow
def test_interrupted_distillation_resumes_to_the_same_weights(trained_cnn, cifar_fixture, tmp_path):
    cfg = distill_cfg(trained_cnn[0], distill_views=2, photo_augment=0.0, channels_last=False)
    kw = dict(data_dir=cifar_fixture, verify_md5=False, run_test=False)
    train(cfg, out_dir=tmp_path / "ref" / "ck", run_dir=tmp_path / "ref" / "runs", **kw)
    run_dir = tmp_path / "run" / "runs"
    run = setup(cfg, kw["data_dir"], run_dir, verify_md5=False)  # one epoch, then "killed"
    row = run_epoch(run, 0)
    run.elapsed += row["seconds"]
    run.history.append(row)
    save_state(run)
    lost = sorted((run_dir / "teacher-cache").rglob("view1-part0000.safetensors"))[0]
    before = load_file(str(lost))["out"]
    lost.unlink()  # a teacher-target part lost too: recomputed alone, identical
    meta = train(cfg, out_dir=tmp_path / "run" / "ck", run_dir=run_dir, **kw)
    assert torch.equal(load_file(str(lost))["out"], before)
    assert [h["train_loss"] for h in meta["history"]][:1] == [row["train_loss"]] and len(meta["history"]) == 2
    a = load_file(str(tmp_path / "ref" / "runs" / "cnn9" / "state.safetensors"))
    b = load_file(str(run_dir / "cnn9" / "state.safetensors"))
    weights = [k for k in a if k.startswith("model.")]
    assert weights and all(torch.equal(a[k], b[k]) for k in weights), "the resumed distillation differs"


def test_targets_from_a_frozen_teachers_own_cache_equal_its_outputs_on_pixels(cifar_fixture, tmp_path):
    """A teacher trained on cached frozen-stage outputs (as EfficientNet-B0's CPU recipe is): when its cache holds
    the student's views, the targets are its trained stages run on that cache, and they are the teacher's own
    outputs on the student's pixels; without the cache, they come from pixels, and agree."""
    teacher_cfg = get_recipe("timm:test_efficientnet", "default")
    teacher_cfg.update(pretrained=None, input_size=32, freeze=1, cache_views=3, photo_augment=0.5, subset=200, epochs=3,
                       batch_size=50, val_per_class=2, amp=False, device="cpu", optimizer="adamw", lr=1e-2,
                       flip_average=True)  # its predictions average image and mirror; its targets must not
    kw = dict(data_dir=cifar_fixture, run_dir=tmp_path / "runs", verify_md5=False)
    train(teacher_cfg, out_dir=tmp_path / "ck", run_test=False, name="frozen_teacher", **kw)
    teacher_path = tmp_path / "ck" / "frozen_teacher"
    cfg = distill_cfg(teacher_path, subset=200, distill_views=2, photo_augment=0.5)

    run = setup(cfg, **kw)
    assert run.teacher["targets_source"].startswith("frozen-stage cache ")
    assert load_classifier(teacher_path).data_config["flip_average"] is True
    teacher = distill.load_teacher(teacher_path, run.data.class_names, "cpu")  # the network on exactly the view
    pad, images = run.cfg["crop_padding"], run.data.train.images[run.train_idx]
    params = view_params(len(images), 2, run.cfg["seed"], pad, 0.5)
    (folder,) = (tmp_path / "runs" / "teacher-cache").iterdir()
    shortcut = cached_targets_in(folder, 2)
    for view in range(2):
        own = teacher.logits(apply_augment(images, {k: p[view] for k, p in params.items()}, pad))
        assert (shortcut[view] - own).abs().max() < distill.TOLERANCE
        assert torch.allclose(shortcut[view], own, rtol=1e-2, atol=1e-3 * own.abs().max())  # fp16 storage only

    for part in (tmp_path / "runs" / "feature-cache").rglob("view*-part*.safetensors"):
        part.unlink()  # the teacher's cache gone: the same run computes its targets from pixels
    run = setup(cfg, **kw)
    assert run.teacher["targets_source"] == "pixels" and run.teacher["cache_key"] != folder.name
    from_pixels = cached_targets_in(tmp_path / "runs" / "teacher-cache" / run.teacher["cache_key"], 2)
    assert (from_pixels - shortcut).abs().max() < distill.TOLERANCE


def cached_targets_in(folder, views: int) -> torch.Tensor:
    return torch.stack([load_file(str(folder / f"view{v}-part0000.safetensors"))["out"] for v in range(views)])


def test_next_b0_recipe_caches_the_views_that_cnn9s_distillation_reads():
    """So that `--recipe cpu-distill --teacher` a checkpoint of `cpu-v2` takes the shortcut on the same machine."""
    teacher, student = get_recipe("efficientnet_b0", "cpu-v2"), get_recipe("cnn9", "cpu-distill")
    assert teacher["freeze"] and teacher["cache_views"] >= student["distill_views"]
    for key in ("photo_augment", "seed", "crop_padding", "val_per_class", "subset"):
        assert teacher[key] == student[key], key
