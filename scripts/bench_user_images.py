"""Your images at scale: the batch path (/evaluate_images, one ZIP) against sending the same images one by one to
/predict, and what a batch does to other visitors' single predictions. One run, one machine.

    python scripts/bench_user_images.py [--images 1000] [--one-by-one N] [--probes 30] [--per-model]

1. Makes `--images` photo-like JPEGs (CIFAR-100 test images, when the data set is at hand, upscaled to 128-512 px
   and JPEG-compressed at quality 70-95, seeded, in class folders; else generated images, unlabelled) in one ZIP.
2. Starts app.py with the shipped checkpoints on a free loopback port.
3. /predict p50 alone: `--probes` single predictions, one at a time.
4. The batch: the ZIP through /evaluate_images (every model), timed: images/s. Then again while another client
   sends single /predict requests one after the other: their p50 during the batch (and that batch's images/s).
5. One by one: the first `--one-by-one` images (default: all) sent to /predict with gradio_client, one request
   at a time, every model: images/s, and the ratio batch / one-by-one.
6. `--per-model`: 4 and 5 again for each checkpoint alone (both endpoints take `models`), for images/s per model.
Prints the machine, the load average before and after, and every figure (also as JSON with --json OUT).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import platform
import statistics
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
from gradio_client import Client, handle_file
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from bench_app import first_answer, launch  # noqa: E402
from cifar_models.cli import add_debug_flag, non_negative_float, non_negative_int, positive_int  # noqa: E402
from cifar_models.cli import run as run_cli  # noqa: E402

CIFAR = Path(os.environ.get("CIFAR100_DIR") or ROOT.parent / "shared" / "data" / "cifar-100-python")


def source_images(n: int, seed: int = 0) -> tuple[list[np.ndarray], list[str | None], str]:
    """n 32x32 RGB arrays with their class (CIFAR-100 test images), else generated ones (no class)."""
    rng = np.random.default_rng(seed)
    if (CIFAR / "test").is_file() and (CIFAR / "meta").is_file():
        test = pickle.loads((CIFAR / "test").read_bytes(), encoding="latin1")
        names = pickle.loads((CIFAR / "meta").read_bytes(), encoding="latin1")["fine_label_names"]
        idx = rng.choice(len(test["fine_labels"]), size=n, replace=False)
        data = np.asarray(test["data"]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return [data[i] for i in idx], [names[test["fine_labels"][i]] for i in idx], f"CIFAR-100 test ({CIFAR})"
    out = []
    for _ in range(n):  # smooth colour fields with a few blobs: compress like photos, not like noise
        base = rng.integers(0, 256, size=(4, 4, 3)).astype(np.uint8)
        img = np.asarray(Image.fromarray(base).resize((32, 32), Image.Resampling.BICUBIC))
        out.append(np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8))
    return out, [None] * n, "generated (CIFAR-100 not found)"


def make_zip(n: int, folder: Path, seed: int = 0) -> tuple[Path, list[Path], str]:
    """The ZIP of photo-like JPEGs, the same JPEGs as single files (for /predict), and where they came from."""
    arrays, labels, origin = source_images(n, seed)
    rng = np.random.default_rng(seed + 1)
    singles, path = [], folder / "photos.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for i, (a, label) in enumerate(zip(arrays, labels)):
            size = int(rng.choice([128, 192, 256, 384, 512]))
            buf = io.BytesIO()
            Image.fromarray(a).resize((size, size), Image.Resampling.BICUBIC).save(
                buf, "JPEG", quality=int(rng.choice([70, 80, 90, 95])))
            name = f"photos/{label or 'unsorted'}/img{i:04d}.jpg"
            z.writestr(name, buf.getvalue())
            single = folder / f"img{i:04d}.jpg"
            single.write_bytes(buf.getvalue())
            singles.append(single)
    return path, singles, origin


def predict_times(client: Client, files: list[Path], models: str = "", stop: threading.Event | None = None) -> list[float]:
    """Seconds per /predict, one request at a time, over `files` (cycled while `stop` is given and not set)."""
    out, i = [], 0
    while (stop is None and i < len(files)) or (stop is not None and not stop.is_set()):
        t = time.perf_counter()
        client.predict(handle_file(str(files[i % len(files)])), models, api_name="/predict")
        out.append(time.perf_counter() - t)
        i += 1
    return out


def batch(url: str, zip_path: Path, probe_files: list[Path], models: str = "", probe: bool = True) -> dict:
    """/evaluate_images on the ZIP, timed, with single /predict requests sent meanwhile by another client."""
    client, prober = Client(url, verbose=False), Client(url, verbose=False)
    stop, probes = threading.Event(), []
    thread = threading.Thread(target=lambda: probes.extend(predict_times(prober, probe_files, stop=stop)))
    t = time.perf_counter()
    if probe:
        thread.start()
    r = client.predict(handle_file(str(zip_path)), models, api_name="/evaluate_images")
    seconds = time.perf_counter() - t
    stop.set()
    if probe:
        thread.join()
    images = next(iter(r["summary"].values()))["images"]
    out = dict(images=images, seconds=seconds, images_per_s=images / seconds,
               summary={n: {k: s[k] for k in ("labelled", "top1", "top5")} for n, s in r["summary"].items()})
    if probe:
        out.update(predict_during_p50_ms=1000 * statistics.median(probes), predict_during_n=len(probes),
                   predict_during_p95_ms=1000 * float(np.percentile(probes, 95)))
    return out


def one_by_one(url: str, files: list[Path], models: str = "") -> dict:
    client = Client(url, verbose=False)
    t = time.perf_counter()
    times = predict_times(client, files, models)
    seconds = time.perf_counter() - t
    return dict(images=len(files), seconds=seconds, images_per_s=len(files) / seconds,
                p50_ms=1000 * statistics.median(times))


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def run(a: argparse.Namespace, work: Path) -> dict:
    zip_path, singles, origin = make_zip(a.images, work)
    res = dict(machine=machine(), load_before=os.getloadavg(), images=a.images, origin=origin,
               zip_mb=zip_path.stat().st_size / 2 ** 20)
    print(f"{a.images} photo-like JPEGs from {origin} in {zip_path} ({res['zip_mb']:.1f} MB); {res['machine']}; "
          f"load average {res['load_before'][0]:.2f}", flush=True)
    app = launch(ROOT / "app.py", CHECKPOINT_DIR=str(a.checkpoint_dir), MAX_UPLOAD_MB=str(a.max_upload_mb))
    url = app.url
    try:
        client, startup = first_answer(app)
        time.sleep(a.settle)  # the app's background warm-up
        alone = predict_times(client, singles[-a.probes:])
        res["predict_alone_p50_ms"] = 1000 * statistics.median(alone)
        print(f"/predict alone: p50 {res['predict_alone_p50_ms']:.0f} ms ({len(alone)} calls)", flush=True)
        res["batch"] = batch(url, zip_path, [], probe=False)
        print(f"batch alone: {json.dumps(res['batch'])}", flush=True)
        res["batch_probed"] = batch(url, zip_path, singles[-a.probes:])
        print(f"batch with single /predict requests meanwhile: {json.dumps(res['batch_probed'])}", flush=True)
        res["one_by_one"] = one_by_one(url, singles[:a.one_by_one or a.images])
        print(f"one by one: {json.dumps(res['one_by_one'])}", flush=True)
        res["ratio"] = res["batch"]["images_per_s"] / res["one_by_one"]["images_per_s"]
        if a.per_model:
            names = list(client.predict(handle_file(str(singles[0])), api_name="/predict"))
            for name in [n for n in names if n not in ("agree", "batch")]:
                res[f"batch_{name}"] = batch(url, zip_path, [], name, probe=False)
                res[f"one_by_one_{name}"] = one_by_one(url, singles[:a.one_by_one or a.images], name)
                print(f"{name}: batch {res[f'batch_{name}']['images_per_s']:.1f} images/s, one by one "
                      f"{res[f'one_by_one_{name}']['images_per_s']:.1f} images/s", flush=True)
    finally:
        app.stop()
    res["load_after"] = os.getloadavg()
    return res


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=positive_int, default=1000)
    p.add_argument("--one-by-one", type=non_negative_int, default=0,
                   help="images sent one by one to /predict (default: all)")
    p.add_argument("--probes", type=positive_int, default=30, help="single /predict calls alone (p50)")
    p.add_argument("--per-model", action="store_true", help="also each checkpoint alone")
    p.add_argument("--checkpoint-dir", default=str(ROOT / "checkpoints"))
    p.add_argument("--max-upload-mb", type=positive_int, default=100, help="the app's MAX_UPLOAD_MB for the ZIP")
    p.add_argument("--settle", type=non_negative_float, default=10,
                   help="seconds between start-up and the first measurement")
    p.add_argument("--json", help="write the figures here")
    add_debug_flag(p)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-user-images-") as tmp:
        res = run(a, Path(tmp))
    print(f"\nbatch {res['batch']['images_per_s']:.1f} images/s vs one by one {res['one_by_one']['images_per_s']:.1f} "
          f"images/s: {res['ratio']:.1f}x; /predict p50 alone {res['predict_alone_p50_ms']:.0f} ms, during the batch "
          f"{res['batch_probed']['predict_during_p50_ms']:.0f} ms ({res['batch_probed']['predict_during_n']} calls, "
          f"the batch then {res['batch_probed']['images_per_s']:.1f} images/s); load average "
          f"{res['load_before'][0]:.2f} before, {res['load_after'][0]:.2f} after")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    run_cli(main)
