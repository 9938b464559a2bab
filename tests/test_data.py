import numpy as np
import pytest
import torch

from cifar_models.data import (CIFAR100_MD5, DataError, augment, check_md5, load_cifar100, stratified_split,
                               stratified_subset, to_model_input)
from conftest import REAL_DATA


def test_fixture_loads_with_names_and_superclasses(cifar_fixture):
    d = load_cifar100(cifar_fixture, verify=False)
    assert d.train.images.shape == (1200, 3, 32, 32) and d.train.images.dtype == torch.uint8
    assert len(d.test) == 300 and len(d.class_names) == 100 and len(d.superclass_names) == 20
    assert d.superclass_of[7] == 1 and d.class_names[7] == "class_07"


def test_parent_folder_is_accepted(cifar_fixture):
    assert load_cifar100(cifar_fixture.parent, verify=False).root == str(cifar_fixture)


def test_md5_mismatch_names_the_file_and_the_fix(cifar_fixture):
    with pytest.raises(DataError) as e:
        load_cifar100(cifar_fixture, verify=True)
    msg = str(e.value)
    assert str(cifar_fixture / "train") in msg and CIFAR100_MD5["train"] in msg and "download" in msg


def test_missing_file_is_reported(tmp_path):
    (tmp_path / "meta").write_bytes(b"x")
    with pytest.raises(DataError, match="train is missing"):
        check_md5(tmp_path)


def test_split_is_stratified_disjoint_and_stable():
    labels = np.repeat(np.arange(100), 30)
    np.random.default_rng(1).shuffle(labels)
    rest, held = stratified_split(labels, 5, seed=0)
    assert len(np.intersect1d(rest, held)) == 0 and len(rest) + len(held) == len(labels)
    assert (np.bincount(labels[held], minlength=100) == 5).all()
    rest2, held2 = stratified_split(labels, 5, seed=0)
    assert (held == held2).all() and (rest == rest2).all()
    assert not np.array_equal(held, stratified_split(labels, 5, seed=1)[1])
    # Pinned: the order is md5-based, so it must never change with numpy or torch versions.
    assert stratified_split(np.repeat(np.arange(3), 4), 1, seed=0)[1].tolist() == [0, 6, 11]


def test_subset_is_stratified():
    labels = np.repeat(np.arange(100), 20)
    idx = stratified_subset(labels, 300)
    assert (np.bincount(labels[idx], minlength=100) == 3).all()


def test_augment_crops_and_flips_whole_batches():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    y = augment(x, g, pad=4, flip=True)
    assert y.shape == x.shape and y.dtype == torch.uint8
    assert not torch.equal(x, y)
    # with no padding, every image is either itself or its mirror
    z = augment(x, torch.Generator().manual_seed(1), pad=0, flip=True)
    same = (z == x).flatten(1).all(1)
    mirrored = (z == x.flip(3)).flatten(1).all(1)
    assert (same | mirrored).all() and same.any() and mirrored.any()
    # a crop is a shifted window: the centre 24x24 of the input appears somewhere in each output
    c = augment(x, torch.Generator().manual_seed(2), pad=4, flip=False)
    for i in range(4):
        centre = x[i, :, 4:28, 4:28]
        found = any(torch.equal(c[i, :, dy:dy + 24, dx:dx + 24], centre) for dy in range(9) for dx in range(9))
        assert found


def test_model_input_resizes_and_normalises():
    cfg = dict(input_size=64, interpolation="bicubic", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    x = torch.full((2, 3, 32, 32), 255, dtype=torch.uint8)
    y = to_model_input(x, cfg)
    assert y.shape == (2, 3, 64, 64) and y.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(y, torch.full_like(y, 2.0))


@pytest.mark.skipif(not (REAL_DATA / "train").exists(), reason="real CIFAR-100 not present")
def test_real_cifar100():
    d = load_cifar100(REAL_DATA, verify=True, download_if_missing=False)
    assert d.md5 == CIFAR100_MD5
    assert len(d.train) == 50_000 and len(d.test) == 10_000
    assert (torch.bincount(d.train.labels, minlength=100) == 500).all()
    assert (torch.bincount(d.test.labels, minlength=100) == 100).all()
    assert d.class_names[:3] == ["apple", "aquarium_fish", "baby"] and len(set(d.superclass_of)) == 20


def test_missing_data_is_downloaded_the_normal_way(tmp_path, monkeypatch, cifar_fixture):
    """Offline here, so torchvision's CIFAR100(download=True) is replaced by a stand-in that writes the files."""
    import shutil

    import torchvision.datasets

    calls = []

    class FakeCIFAR100:
        def __init__(self, root, train, download):
            calls.append((root, download))
            shutil.copytree(cifar_fixture, f"{root}/cifar-100-python")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", FakeCIFAR100)
    d = load_cifar100(tmp_path / "data" / "cifar-100-python", verify=False)
    assert calls == [(str(tmp_path / "data"), True)] and len(d.train) == 1200


def test_failed_download_says_what_to_do(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(**kw):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", offline)
    with pytest.raises(DataError, match="downloading it failed.*--data-dir"):
        load_cifar100(tmp_path / "cifar-100-python")
