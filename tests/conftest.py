"""Shared fixtures: a tiny, learnable data set in the exact CIFAR-100 python format."""
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from cifar_models.dashboard.launch import CHROMIUM, launch_chromium  # noqa: E402  (the tests' and scripts' browser)

REAL_DATA = Path(os.environ.get("CIFAR100_DIR") or ROOT.parent / "shared" / "data" / "cifar-100-python")
IMAGENET_WEIGHTS = ROOT.parent / "shared" / "weights" / "tf_efficientnet_b0.in1k_tfhub_bnrecal.safetensors"
N_CLASSES = 100


def make_cifar_fixture(root: Path, train_per_class: int = 12, test_per_class: int = 3, seed: int = 0,
                       colours=(0, 256)) -> Path:
    """Write train/test/meta like the originals; class c is a fixed colour plus noise (easy to learn).
    `colours`: the range of the class colours (a narrower one leaves no pixel saturated at 0 or 255)."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(*colours, size=(N_CLASSES, 3))
    root.mkdir(parents=True, exist_ok=True)

    def split(per_class):
        fine = np.repeat(np.arange(N_CLASSES), per_class)
        rng.shuffle(fine)
        img = colours[fine][:, :, None, None] + rng.normal(0, 12, size=(len(fine), 3, 32, 32))
        data = np.clip(img, 0, 255).astype(np.uint8).reshape(len(fine), -1)
        return {"data": data, "fine_labels": fine.tolist(), "coarse_labels": (fine // 5).tolist(),
                "filenames": [f"img_{i}.png" for i in range(len(fine))]}

    for name, per_class in (("train", train_per_class), ("test", test_per_class)):
        with open(root / name, "wb") as f:
            pickle.dump(split(per_class), f)
    meta = {"fine_label_names": [f"class_{i:02d}" for i in range(N_CLASSES)],
            "coarse_label_names": [f"super_{i:02d}" for i in range(N_CLASSES // 5)]}
    with open(root / "meta", "wb") as f:
        pickle.dump(meta, f)
    return root


@pytest.fixture(scope="session")
def cifar_fixture(tmp_path_factory) -> Path:
    return make_cifar_fixture(tmp_path_factory.mktemp("data") / "cifar-100-python")


def tiny_cnn_cfg(**overrides) -> dict:
    from cifar_models.train.recipes import get_recipe

    cfg = get_recipe("cnn9", "cpu")
    cfg.update(arch=dict(widths=[8, 16, 32, 64]), epochs=6, batch_size=50, lr=0.4, val_per_class=2, amp=False,
               device="cpu", warmup_epochs=0.5)
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="session")
def trained_cnn(cifar_fixture, tmp_path_factory):
    """A tiny cnn9 trained on the fixture once for the whole session: (checkpoint base path, meta)."""
    from cifar_models.train.loop import train

    out = tmp_path_factory.mktemp("ckpt")
    meta = train(tiny_cnn_cfg(), data_dir=cifar_fixture, out_dir=out / "checkpoints", run_dir=out / "runs",
                 verify_md5=False)
    return out / "checkpoints" / "cnn9", meta


def start_app(checkpoint_dir: Path, log_path: Path):
    """app.py on a free loopback port over `checkpoint_dir`, its log in `log_path`: (process, url) once it listens."""
    from cifar_models.dashboard.launch import AppProcess, AppStartError

    app = AppProcess.start(ROOT / "app.py", log_path, CHECKPOINT_DIR=str(checkpoint_dir))
    try:
        app.wait_listening()
    except AppStartError as e:
        pytest.fail(str(e))
    return app.proc, app.url


def chromium_or_skip():
    if not CHROMIUM:
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail("chromium is required here (REQUIRE_BROWSER is set) but not installed")
        pytest.skip("chromium not installed")


def new_page(playwright, fake_camera: bool = False):
    """Headless Chromium (Debian's) and a tall page: (browser, page). fake_camera: its fake webcam, allowed."""
    browser = launch_chromium(playwright, fake_camera)
    return browser, browser.new_page(viewport={"width": 1400, "height": 1800})
