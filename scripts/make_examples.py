"""Save CIFAR-100 test images as 32x32 PNGs for the app:
- examples/cifar/: the first test image of each class listed below (the example gallery);
- examples/disagreements/ (--disagreements N): N test images on which two checkpoints' top-1 differ
  (--pair A,B; default: the first two of checkpoints/ with a full report), read from their NAME.eval.json
  (run scripts/evaluate.py first).

    python scripts/make_examples.py [--data-dir DIR] [--disagreements 24] [--pair cnn9,efficientnet_b0]"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402

from cifar_models import load_cifar100  # noqa: E402
from cifar_models.cli import add_debug_flag, non_negative_int, run  # noqa: E402
from cifar_models.common.errors import UserError  # noqa: E402
from cifar_models.common.meta import checkpoint_names  # noqa: E402
from cifar_models.common.reports import contrast_pair, load_reports  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

CLASSES = ["apple", "bicycle", "butterfly", "castle", "cattle", "dolphin", "elephant", "mushroom", "orange",
           "pickup_truck", "sunflower", "tiger"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-dir")
    p.add_argument("--out", default=str(ROOT / "examples" / "cifar"))
    p.add_argument("--disagreements", type=non_negative_int, default=0,
                   help="also save N test images the models disagree on")
    p.add_argument("--pair", help="the two checkpoints compared for --disagreements, A,B (default: the weakest and the "
                                  "strongest by test top-1 of checkpoints/ with a full test report, as the "
                                  "dashboard's gallery opens on)")
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
        folder = ROOT / "checkpoints"
        reports = load_reports(folder, a.pair.split(",") if a.pair else checkpoint_names(folder))
        pair = contrast_pair(reports, list(reports))
        if len(pair) < 2:
            raise UserError("--disagreements needs two checkpoints with a full test report: run python "
                            "scripts/evaluate.py --checkpoint checkpoints/NAME first")
        save_disagreements(data, a.disagreements, ROOT / "examples" / "disagreements", {n: reports[n] for n in pair})


def save_disagreements(data, n: int, out: Path, reports: dict) -> None:
    """A third each where only the first checkpoint is right, only the second, and neither; first in test order."""
    (first, ra), (second, rb) = reports.items()
    label, a, b = ra["images"]["label"], ra["images"]["top1"], rb["images"]["top1"]
    groups = {f"{first} right": [], f"{second} right": [], "both wrong": []}
    for i in range(len(label)):
        if a[i] != b[i]:
            key = f"{first} right" if a[i] == label[i] else f"{second} right" if b[i] == label[i] else "both wrong"
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
