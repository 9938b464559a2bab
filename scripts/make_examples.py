"""Save a dozen CIFAR-100 test images as 32x32 PNGs in examples/cifar/ (the app's example gallery):
the first test image of each class listed below.   python scripts/make_examples.py [--data-dir DIR]"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402

from cifar_models import load_cifar100  # noqa: E402

CLASSES = ["apple", "bicycle", "butterfly", "castle", "cattle", "dolphin", "elephant", "mushroom", "orange",
           "pickup_truck", "sunflower", "tiger"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-dir")
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "examples" / "cifar"))
    a = p.parse_args(argv)
    data = load_cifar100(a.data_dir)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    labels = data.test.labels.tolist()
    for name in CLASSES:
        i = labels.index(data.class_names.index(name))
        Image.fromarray(data.test.images[i].permute(1, 2, 0).numpy()).save(out / f"{name}_test{i}.png")
    print(f"wrote {len(CLASSES)} images to {out}")


if __name__ == "__main__":
    main()
