"""Evaluate a checkpoint on the CIFAR-100 test set:
    python scripts/evaluate.py --checkpoint checkpoints/cnn9 [--data-dir DIR] [--limit N]

Prints top-1/top-5, NLL, ECE and the worst classes; writes the full report (per-class accuracy,
confusion matrix, reliability bins, every image's top-1...) as JSON next to the checkpoint
(NAME.eval.json, which the app loads) or to --out. It also fits a temperature on the validation
split and, for a full (not --limit) run, stores it and the test metrics in the checkpoint JSON."""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from cifar_models import load_classifier, load_cifar100  # noqa: E402
from cifar_models.checkpoint import atomic_write_json, checkpoint_paths, update_meta  # noqa: E402
from cifar_models.data import stratified_subset  # noqa: E402
from cifar_models.evaluation import evaluate_classifier, validation_split  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoints/NAME (or NAME.safetensors / NAME.json)")
    p.add_argument("--data-dir", help="CIFAR-100 folder (default: $CIFAR100_DIR, else data/cifar-100-python)")
    p.add_argument("--limit", type=int, help="evaluate on about N test images (stratified), for quick checks")
    p.add_argument("--out", help="report path (default: NAME.eval.json beside the checkpoint)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--no-verify", action="store_true", help="skip the md5 check")
    p.add_argument("--photo", action="store_true", help="only the photo-robustness check: top-1 on photo-like "
                   "versions of the images (upscaled, JPEG, seeded) beside the 32 px originals, saved as 'photo' "
                   "in NAME.eval.json")
    p.add_argument("--split", choices=["test", "validation"], default="test",
                   help="--photo on the validation split (for choosing) or the test set (for reporting)")
    a = p.parse_args(argv)
    if a.photo:
        return photo(a)

    clf = load_classifier(a.checkpoint, device=a.device)
    data = load_cifar100(a.data_dir, verify=not a.no_verify)
    test = data.test
    if a.limit:
        test = test.take(stratified_subset(test.labels.numpy(), a.limit))
    t0 = time.perf_counter()
    val = validation_split(data, clf.meta)  # the temperature is fitted here, never on the test set
    report = evaluate_classifier(clf, test, batch_size=a.batch_size, val_split=val)
    report.update(checkpoint=str(a.checkpoint), test_images=len(test), seconds=time.perf_counter() - t0,
                  device=str(a.device))
    s = report["summary"]
    print(f"{clf.name} on {len(test)} test images ({report['seconds']:.0f}s on {a.device}): top-1 {s['top1']:.2%}  "
          f"top-5 {s['top5']:.2%}  NLL {s['nll']:.3f}  ECE {s['ece']:.3f}  superclass top-1 "
          f"{report['superclass_top1']:.2%}")
    worst = sorted(report["per_class_accuracy"].items(), key=lambda kv: kv[1])[:5]
    print("weakest classes: " + ", ".join(f"{c} {v:.0%}" for c, v in worst))
    print("top confusions: " + ", ".join(f"{c['true']}->{c['predicted']} ({c['count']})"
                                         for c in report["top_confusions"][:5]))
    cal = report["calibration"]
    print(f"temperature {cal['temperature']:.3f} (fitted on {len(val)} validation images): test NLL "
          f"{cal['test']['before']['nll']:.3f} -> {cal['test']['after']['nll']:.3f}, ECE "
          f"{cal['test']['before']['ece']:.3f} -> {cal['test']['after']['ece']:.3f}")
    js = checkpoint_paths(a.checkpoint)[1]
    default_out = js.with_suffix(".eval.json") if not a.limit else js.with_suffix(f".eval-limit{a.limit}.json")
    out = Path(a.out) if a.out else default_out
    atomic_write_json(out, report, indent=None)
    print(f"wrote {out}")
    if not a.limit:  # a full evaluation also updates the checkpoint's test metrics and temperature
        update_meta(a.checkpoint, metrics=dict(clf.meta["metrics"], test=report["summary"]), calibration=cal)
        print(f"updated {js} (metrics.test, calibration)")
    return report


def photo(a) -> dict:
    """The photo-robustness check of one checkpoint (see cifar_models/photo.py)."""
    from cifar_models.photo import photo_report

    clf = load_classifier(a.checkpoint, device=a.device)
    data = load_cifar100(a.data_dir, verify=not a.no_verify)
    split = data.test if a.split == "test" else validation_split(data, clf.meta)
    if a.limit:
        split = split.take(stratified_subset(split.labels.numpy(), a.limit))
    r = photo_report(clf, split.images, split.labels, batch_size=a.batch_size)
    print(f"{clf.name} on {r['images']} {a.split} images: top-1 {r['top1_32px']:.2%} at 32 px, {r['top1_photo']:.2%} "
          f"photo-like, drop {r['drop'] * 100:.2f} points")
    for key in ("by_size", "by_quality"):
        print(f"  {key}: " + ", ".join(f"{k}: {v['top1_32px'] - v['top1_photo']:+.3f}" for k, v in r[key].items()))
    if a.split == "test" and not a.limit:
        path = checkpoint_paths(a.checkpoint)[1].with_suffix(".eval.json")
        report = json.loads(path.read_text()) if path.is_file() else {}
        atomic_write_json(path, dict(report, photo=r), indent=None)
        print(f"wrote the photo report into {path}")
    return r


if __name__ == "__main__":
    main()
