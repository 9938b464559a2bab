"""Time and memory of turning one large photo into the models' 32x32 input, as the app does it
(`open_image`, then `Classifier.preprocess`'s `to_cifar_uint8`).

    python scripts/bench_decode.py [--size 6000x4000] [--repeat 5]

Each measurement runs in a fresh subprocess: the peak is the process's high-water mark (VmHWM)
minus its resident memory just before decoding, so Pillow's own allocations are counted."""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cifar_models.cli import add_debug_flag, positive_int, run  # noqa: E402

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from cifar_models.common.images import open_image
from cifar_models.inference import to_cifar_uint8

def vm(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
before = vm('VmRSS:')
t = time.perf_counter()
img, _ = open_image(sys.argv[2])
x = to_cifar_uint8(img)
seconds = time.perf_counter() - t
print(json.dumps(dict(seconds=seconds, peak_mb=vm('VmHWM:') - before, decoded=list(img.size), out=list(x.shape))))
"""


def photo(w: int, h: int) -> Image.Image:
    """A photo-like picture (smooth gradients plus grain) that compresses like a real one."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = np.stack([128 + 100 * np.sin(xx / 400), 128 + 100 * np.cos(yy / 300), 128 + 80 * np.sin((xx + yy) / 700)], -1)
    rgb += np.random.default_rng(0).normal(0, 6, rgb.shape).astype(np.float32)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def image_size(text: str) -> tuple[int, int]:
    """'WIDTHxHEIGHT' -> (w, h), each 1..40000 px."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT (e.g. 6000x4000)") from None
    if not (0 < w <= 40_000 and 0 < h <= 40_000):
        raise argparse.ArgumentTypeError(f"{text!r}: width and height must be 1 to 40000 px")
    return w, h


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--size", default=(6000, 4000), type=image_size, help="WIDTHxHEIGHT of the photo")
    p.add_argument("--repeat", type=positive_int, default=5)
    add_debug_flag(p)
    a = p.parse_args(argv)
    w, h = a.size
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "photo.jpg"
        photo(w, h).save(path, "JPEG", quality=92)
        mb = path.stat().st_size / 1e6
        runs = [json.loads(subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(path)], check=True,
                                          capture_output=True, text=True).stdout) for _ in range(a.repeat)]
    print(f"{w}x{h} JPEG ({mb:.1f} MB) -> decoded at {runs[0]['decoded'][0]}x{runs[0]['decoded'][1]} -> "
          f"{tuple(runs[0]['out'])}")
    print(f"decode + 32 px conversion, {a.repeat} fresh processes: median {statistics.median(r['seconds'] for r in runs):.3f} s "
          f"(max {max(r['seconds'] for r in runs):.3f} s); peak extra memory median "
          f"{statistics.median(r['peak_mb'] for r in runs):.0f} MB (max {max(r['peak_mb'] for r in runs):.0f} MB)")


if __name__ == "__main__":
    run(main)
