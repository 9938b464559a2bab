"""CutMix on whole batches (train/mixing.py): the box, the pasted pixels and the label weights; the loop mixes
when asked and not otherwise; distillation refuses it; a state written before a recipe key existed resumes."""
import json

import pytest
import torch

from cifar_models.train import mixing
from cifar_models.train.distill import check_config
from cifar_models.train.loop import train
from cifar_models.train.recipes import get_recipe
from conftest import tiny_cnn_cfg


@pytest.mark.parametrize("lam", [0.0, 0.25, 0.5, 0.9, 1.0])
def test_box_covers_about_one_minus_lam_and_apply_pastes_the_next_input(lam):
    x = torch.arange(4.0)[:, None, None, None].expand(4, 3, 12, 12).contiguous()  # input i is all i
    out, keep = mixing.apply(x, lam, 0.5, 0.5)
    t, b, l, r = mixing.box(12, 12, lam, 0.5, 0.5)
    assert keep == pytest.approx(1 - (b - t) * (r - l) / 144)
    assert abs(keep - lam) <= 0.1  # rounding the box to whole cells
    for i in range(4):
        pasted = out[i, :, t:b, l:r]
        assert torch.all(pasted == (i - 1) % 4)  # the box comes from the previous input: x.roll(1, 0)
        kept = (out[i] == i).float().mean().item()
        assert kept == pytest.approx(keep)
    assert torch.all(x == torch.arange(4.0)[:, None, None, None])  # the input itself is left alone


def test_box_at_a_corner_is_clipped_and_draws_follow_the_generator():
    t, b, l, r = mixing.box(12, 12, 0.5, 0.0, 0.99)
    assert t == 0 and r == 12 and 0 < b < 12 and 0 < l < 12
    a, b2 = (mixing.draw(50, torch.Generator().manual_seed(3), 0.5) for _ in range(2))
    assert all(torch.equal(a[k], b2[k]) for k in a)
    assert 10 < int(a["apply"].sum()) < 40  # about half of the steps mix
    assert not mixing.draw(50, torch.Generator().manual_seed(3), 0.0)["apply"].any()


@pytest.mark.slow
def test_training_with_cutmix_mixes_and_without_it_does_not(cifar_fixture, tmp_path):
    kw = dict(data_dir=cifar_fixture, verify_md5=False, run_test=False)
    losses = {}
    for share in (0.0, 1.0):
        cfg = tiny_cnn_cfg(epochs=1, cutmix=share)
        meta = train(cfg, out_dir=tmp_path / f"ck{share}", run_dir=tmp_path / f"runs{share}", **kw)
        assert meta["recipe"]["cutmix"] == share
        losses[share] = meta["history"][0]["train_loss"]
    # Same seed, same order and crops: only the mixing differs, and mixed batches are harder to fit.
    assert losses[1.0] != losses[0.0]
    again = train(tiny_cnn_cfg(epochs=1, cutmix=0.0), out_dir=tmp_path / "ck2", run_dir=tmp_path / "runs2", **kw)
    assert again["history"][0]["train_loss"] == losses[0.0]


def test_distillation_refuses_cutmix(tmp_path):
    cfg = get_recipe("cnn9", "cpu-distill")
    cfg.update(teacher=str(tmp_path / "teacher"), cutmix=0.5)
    with pytest.raises(ValueError, match="cutmix"):
        check_config(cfg)


@pytest.mark.slow
def test_a_state_written_before_a_recipe_key_existed_still_resumes(cifar_fixture, tmp_path, capsys):
    """Resuming compares the saved configuration with the command's; a key added to the recipes since (like
    cutmix) is taken at its default, so an interrupted run from an older version continues."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    kw = dict(data_dir=cifar_fixture, verify_md5=False, run_test=False, out_dir=tmp_path / "ck",
              run_dir=tmp_path / "runs")
    first = train(tiny_cnn_cfg(epochs=1), **kw)
    state = tmp_path / "runs" / "cnn9" / "state.safetensors"
    with safe_open(str(state), "pt") as f:
        meta = f.metadata()
    old = json.loads(meta["config"])
    del old["cutmix"]
    save_file(load_file(str(state)), str(state), metadata=dict(meta, config=json.dumps(old)))
    capsys.readouterr()
    again = train(tiny_cnn_cfg(epochs=1), **kw)  # the same command: resumes after its one epoch, trains no more
    assert "resuming cnn9 after epoch 1/1" in capsys.readouterr().out
    assert again["history"] == first["history"]
    old["epochs"] = 2  # a real difference is still refused
    save_file(load_file(str(state)), str(state), metadata=dict(meta, config=json.dumps(old)))
    with pytest.raises(Exception, match="different run configuration"):
        train(tiny_cnn_cfg(epochs=1), **kw)
