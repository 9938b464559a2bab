"""Save CIFAR-100 test images as 32x32 PNGs for the app:
- examples/cifar/: the first test image of each class listed below (the example gallery);
- examples/disagreements/ (--disagreements N): N test images on which the shipped models' top-1
  differ, read from checkpoints/*.eval.json (run scripts/evaluate.py first).

    python scripts/make_examples.py [--data-dir DIR] [--disagreements 24]"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402

from cifar_models import load_cifar100  # noqa: E402
from cifar_models.cli import UserError, add_debug_flag, non_negative_int, run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

CLASSES = ["apple", "bicycle", "butterfly", "castle", "cattle", "dolphin", "elephant", "mushroom", "orange",
           "pickup_truck", "sunflower", "tiger"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-dir")
    p.add_argument("--out", default=str(ROOT / "examples" / "cifar"))
    p.add_argument("--disagreements", type=non_negative_int, default=0,
                   help="also save N test images the models disagree on")
    add_debug_flag(p)
    a = p.parse_args(argv)
    data = load_cifar100(a.data_dir)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    labels = data.test.labels.tolist()
    for name in CLASSES:
        i = labels.index(data.class_names.index(name))
        Image.fromarray(data.test.images[i].permute(1, 2, 0).numpy()).save(out / f"{name}_test{i}.png")
    print(f"wrote {len(CLASSES)} images to {out}")
    if a.disagreements:
        save_disagreements(data, a.disagreements, ROOT / "examples" / "disagreements")


def save_disagreements(data, n: int, out: Path) -> None:
    """A third each where only cnn9 is right, only EfficientNet-B0 is right, and neither is; first in test order."""
    paths = [ROOT / "checkpoints" / f"{m}.eval.json" for m in ("cnn9", "efficientnet_b0")]
    for path in paths:
        if not path.is_file():
            ckpt = path.with_name(path.name.removesuffix(".eval.json"))
            raise UserError(f"{path} not found: run python scripts/evaluate.py --checkpoint {ckpt} first")
    ims = [json.loads(path.read_text())["images"] for path in paths]
    label = ims[0]["label"]
    a, b = ims[0]["top1"], ims[1]["top1"]
    groups = {"cnn9 right": [], "efficientnet right": [], "both wrong": []}
    for i in range(len(label)):
        if a[i] != b[i]:
            key = "cnn9 right" if a[i] == label[i] else "efficientnet right" if b[i] == label[i] else "both wrong"
            groups[key].append(i)
    chosen = sorted(i for g in groups.values() for i in g[: n // 3])
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("test*.png"):
        old.unlink()
    for i in chosen:
        Image.fromarray(data.test.images[i].permute(1, 2, 0).numpy()).save(out / f"test{i}.png")
    print(f"wrote {len(chosen)} images to {out} (disagreements: " +
          ", ".join(f"{k} {len(v)}" for k, v in groups.items()) + ")")


if __name__ == "__main__":
    run(main)
