"""The EfficientNet-B0 CPU recipes' code paths on the tiny fixture. `cpu` trains end to end with progressive
resizing: every epoch trains and validates at its own input size and the last size ships. `cpu-frozen` (and
`cpu-v2`): the frozen stages' output is cached (fp16, several views, in resumable parts), the later stages train,
the checkpoint saves, loads and predicts; a lost cache part is recomputed alone, bit for bit."""
import torch
from PIL import Image
from safetensors.torch import load_file

import pytest

from cifar_models import load_classifier
from cifar_models.common.errors import ConfigError
from cifar_models.train.recipes import get_recipe, size_at
from cifar_models.train.loop import finish, run_epoch, setup, train
from conftest import IMAGENET_WEIGHTS, tiny_cnn_cfg


def test_size_schedule_gives_each_epoch_its_size_and_keeps_the_last():
    cfg = dict(sizes=[[128, 2], [160, 1]])
    assert [size_at(cfg, e) for e in range(5)] == [128, 128, 160, 160, 160]
    assert size_at({}, 0) is None and size_at(dict(sizes=None), 3) is None


def test_b0_cpu_recipe_is_end_to_end_and_its_schedule_covers_its_epochs():
    cfg = get_recipe("efficientnet_b0", "cpu")
    assert not cfg["freeze"] and not cfg.get("distill_alpha") and cfg["pretrained"]
    assert sum(n for _, n in cfg["sizes"]) == cfg["epochs"]
    assert size_at(cfg, cfg["epochs"] - 1) == cfg["sizes"][-1][0]


def test_progressive_resizing_trains_and_validates_each_epoch_at_its_size_and_ships_the_last(cifar_fixture,
                                                                                           tmp_path):
    """A tiny cnn9 (any input size: it pools globally) at 32 px for one epoch, then 48 px: the network sees
    each epoch's size in training and in that epoch's validation; the checkpoint predicts at 48 px."""
    cfg = tiny_cnn_cfg(sizes=[[32, 1], [48, 1]], epochs=2, flip_average=False)
    run = setup(cfg, data_dir=cifar_fixture, run_dir=tmp_path / "runs", verify_md5=False)
    seen = []
    run.model.register_forward_pre_hook(lambda m, args: seen.append((m.training, args[0].shape[-1])))
    for epoch in range(2):
        run.history.append(run_epoch(run, epoch))
        assert {size for _, size in seen} == {(32, 48)[epoch]}, (epoch, set(seen))
        assert {training for training, _ in seen} == {True, False}  # training steps and validation
        seen.clear()
    meta = finish(run, tmp_path / "ck")
    assert meta["data_config"]["input_size"] == 48 and meta["recipe"]["sizes"] == [[32, 1], [48, 1]]
    clf = load_classifier(tmp_path / "ck" / "cnn9")
    clf.model.register_forward_pre_hook(lambda m, args: seen.append((m.training, args[0].shape[-1])))
    (top,) = clf.predict([Image.new("RGB", (40, 40), (200, 30, 30))])
    assert len(top) == 5 and seen == [(False, 48)]  # inference reads the shipped size from the checkpoint


def test_progressive_resizing_is_refused_with_frozen_stages(cifar_fixture, tmp_path):
    with pytest.raises(ConfigError, match="end to end"):
        setup(tiny_cnn_cfg(sizes=[[32, 1]], freeze=2, epochs=1), data_dir=cifar_fixture, run_dir=tmp_path,
              verify_md5=False)


@pytest.mark.slow
def test_efficientnet_b0_frozen_recipe_caches_trains_saves_loads_and_predicts(cifar_fixture, tmp_path):
    cfg = get_recipe("efficientnet_b0", "cpu-frozen")
    assert cfg["freeze"] == 6 and cfg["cache_views"] >= 2  # stem + block stages 1-5 frozen
    pretrained = str(IMAGENET_WEIGHTS) if IMAGENET_WEIGHTS.is_file() else None
    # Smaller than the real run, same code path: 64 px (stage 5's output is then 4x4 instead of 12x12),
    # 2 cached views, about 300 training images, one epoch.
    cfg.update(pretrained=pretrained, input_size=64, cache_views=2, subset=300, epochs=1, batch_size=100,
               val_per_class=2, amp=False, device="cpu")
    kw = dict(data_dir=cifar_fixture, out_dir=tmp_path / "ck", run_dir=tmp_path / "runs", verify_md5=False)
    meta = train(cfg, **kw)

    folders = {p.parent for p in (tmp_path / "runs" / "feature-cache").rglob("view*-part*.safetensors")}
    by_views = {len(list(f.glob("view*-part*.safetensors"))): f for f in folders}
    assert sorted(by_views) == [1, 2], by_views  # validation once; training in 2 views (original + mirror/crop)
    train_parts = sorted(by_views[2].glob("view*-part*.safetensors"))
    (x,) = load_file(str(train_parts[0])).values()
    assert x.dtype == torch.float16 and tuple(x.shape[1:]) == (112, 4, 4)  # B0's stage-5 maps, in fp16

    assert meta["recipe"]["freeze"] == 6 and meta["data_config"]["input_size"] == 64
    assert meta["feature_extraction_seconds"] > 0 and len(meta["history"]) == 1
    assert meta["metrics"]["test"]["n"] == 100  # --subset shrinks the test set too (a smoke run)

    clf = load_classifier(tmp_path / "ck" / "efficientnet_b0")
    (top,) = clf.predict([Image.new("RGB", (300, 200), (0, 90, 200))])
    assert len(top) == 5 and top[0][1] >= top[-1][1] > 0

    state = load_file(str(tmp_path / "ck" / "efficientnet_b0.safetensors"))
    if pretrained:  # frozen means frozen: stem and block stages 1-5 are the ImageNet weights, BN statistics too
        imagenet = load_file(pretrained)
        frozen = [k for k in state if k.startswith(("conv_stem.", "bn1.", *(f"blocks.{i}." for i in range(5))))]
        assert frozen and all(torch.equal(state[k], imagenet[k].to(state[k].dtype)) for k in frozen)
        tuned = [k for k in state if k.startswith("blocks.5.") and k.endswith("weight")]
        assert any(not torch.equal(state[k], imagenet[k].to(state[k].dtype)) for k in tuned)

    # A cache part lost (a run killed while writing it, a disk cleaned): the same command recomputes that part
    # only, identical to the lost one (each view's crops and flips are seeded by seed, view and part).
    lost, kept = train_parts[-1], train_parts[0]
    before, kept_mtime = load_file(str(lost)), kept.stat().st_mtime_ns
    lost.unlink()
    train(cfg, restart=True, **kw)
    assert kept.stat().st_mtime_ns == kept_mtime
    after = load_file(str(lost))
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in after)


def test_views_without_photo_are_the_shipped_runs_views():
    """The view rule (features.view_params), which distillation shares, gives with no photo share exactly the crops
    and flips that the shipped EfficientNet-B0 was trained on: the image, its mirror, then per (view, part) a
    generator seeded by seed * 1,000,003 + view * 10,007 + part. With a photo share, the same crops and flips."""
    from cifar_models.data import apply_augment, draw_augment
    from cifar_models.train.features import PART, params_at, view_params

    n, pad = PART + 50, 4
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    params, photo = view_params(n, 4, 0, pad), view_params(n, 4, 0, pad, 0.5)
    for v in range(4):
        for p in range(2):
            part = slice(p * PART, (p + 1) * PART)
            shipped = images[part] if v == 0 else images[part].flip(3) if v == 1 else apply_augment(
                images[part], draw_augment(len(images[part]), torch.Generator().manual_seed(v * 10_007 + p), pad), pad)
            assert torch.equal(apply_augment(images[part], params_at(params, v, part), pad), shipped)
            assert all(torch.equal(photo[k][v, part], params[k][v, part]) for k in ("dy", "dx", "flip"))
    assert 0.3 < (photo["resample"] > 0).float().mean() < 0.7
