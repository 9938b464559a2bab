"""Export a checkpoint to ONNX, then check the file with onnxruntime against PyTorch:

    python scripts/export.py --checkpoint checkpoints/cnn9 --onnx cnn9.onnx [--data-dir DIR] [--images 1000]
    python scripts/export.py --checkpoint checkpoints/efficientnet_b0 --onnx b0.onnx --benchmark

The graph takes uint8 RGB images (N, 32, 32, 3), the 32x32 picture the app makes of a photo, and returns
calibrated class probabilities (N, classes); see cifar_models/export.py. The check runs both on the
checkpoint's validation images (CIFAR-100 from --data-dir, $CIFAR100_DIR or data/cifar-100-python;
random images when none is there and no --data-dir was given) and prints the top-1 agreement and the
largest probability difference; it fails (exit status 1) above --tolerance. --benchmark also times
both per image at batch 1 and 64 on this machine."""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from cifar_models.cli import add_debug_flag, positive_float, positive_int, run  # noqa: E402
from cifar_models.data import DataError, load_cifar100, stratified_subset  # noqa: E402
from cifar_models.eval.evaluation import validation_split  # noqa: E402
from cifar_models.export import benchmark, export_onnx, ort_session, verify  # noqa: E402
from cifar_models.inference import Classifier, load_classifier  # noqa: E402


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoints/NAME (or NAME.safetensors / NAME.json)")
    p.add_argument("--onnx", required=True, help="the .onnx file to write")
    p.add_argument("--data-dir", help="CIFAR-100 folder for the check (default: $CIFAR100_DIR, else "
                                      "data/cifar-100-python; random images when absent)")
    p.add_argument("--no-verify", action="store_true", help="skip the data's md5 check")
    p.add_argument("--images", type=positive_int, default=1000, help="validation images to check on (default 1000)")
    p.add_argument("--tolerance", type=positive_float, default=1e-4,
                   help="largest probability difference accepted (default 1e-4)")
    p.add_argument("--benchmark", action="store_true", help="also time PyTorch and onnxruntime per image")
    p.add_argument("--repeat", type=positive_int, default=20, help="timed runs per batch size (median)")
    p.add_argument("--threads", type=positive_int, help="--benchmark with this many threads in both (default: "
                   "each library's own choice)")
    add_debug_flag(p)
    return p.parse_args(argv)


def check_images(a: argparse.Namespace, clf: Classifier) -> tuple[torch.Tensor, str]:
    """About --images of the checkpoint's validation images, or random ones when there is no data set."""
    try:
        data = load_cifar100(a.data_dir, verify=not a.no_verify, download_if_missing=False)
    except DataError as e:
        if a.data_dir:
            raise
        print(f"no CIFAR-100 for the check ({e}); using {a.images} random images instead")
        return torch.randint(0, 256, (a.images, 3, 32, 32), dtype=torch.uint8,
                             generator=torch.Generator().manual_seed(0)), "random images"
    val = validation_split(data, clf.meta)
    if a.images < len(val):
        val = val.take(stratified_subset(val.labels.numpy(), a.images))
    return val.images, "validation images"


def main(argv: list[str] | None = None) -> dict:
    a = parse(argv)
    clf = load_classifier(a.checkpoint, device="cpu")
    images, source = check_images(a, clf)  # before exporting: a wrong --data-dir fails fast
    path = export_onnx(clf, a.onnx)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {clf.checkpoint} ({clf.name}), uint8 (N, 32, 32, 3) -> "
          f"probabilities (N, {len(clf.classes)}), temperature {clf.temperature:.4f}, input size "
          f"{clf.data_config['input_size']} px ({clf.data_config.get('interpolation', 'bilinear')})")
    session = ort_session(path)
    result = verify(clf, session, images)
    print(f"onnxruntime vs PyTorch on {result['images']} {source}: top-1 agreement {result['top1_agreement']:.2%}, "
          f"largest probability difference {result['max_abs_diff']:.2e}")
    if result["max_abs_diff"] > a.tolerance:
        raise SystemExit(f"the ONNX model differs from PyTorch by {result['max_abs_diff']:.2e} (> --tolerance "
                         f"{a.tolerance:g}): do not use {path}")
    if a.benchmark:
        if a.threads:
            torch.set_num_threads(a.threads)
        timed = ort_session(path, threads=a.threads, spinning=False)
        result["benchmark"] = benchmark(clf, timed, images, repeat=a.repeat)
        print(f"milliseconds per image (median of {a.repeat}, taking turns; torch {torch.get_num_threads()} threads, "
              f"onnxruntime {a.threads or 'its default'} threads, no spinning):")
        for r in result["benchmark"]:
            print(f"  batch {r['batch']:3d}: PyTorch {r['torch_ms_per_image']:.3f}  onnxruntime "
                  f"{r['onnxruntime_ms_per_image']:.3f}  ({r['speedup']:.2f}x)")
    return result


if __name__ == "__main__":
    run(main)
