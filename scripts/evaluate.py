"""Evaluate a checkpoint on the CIFAR-100 test set:
    python scripts/evaluate.py --checkpoint checkpoints/cnn9 [--data-dir DIR] [--limit N]
    python scripts/evaluate.py --checkpoint checkpoints/cnn9 --corruptions [--corruption-limit N] [--seed S]
    python scripts/evaluate.py --checkpoint checkpoints/cnn9 --split validation [--flip-average]  # for choosing
    python scripts/evaluate.py --checkpoint checkpoints/cnn9 --choose-flip-average  # choose it, on validation
    python scripts/evaluate.py --images PATH [--checkpoint-dir DIR] [--csv OUT]   # your own labelled photos
    (--backend onnxruntime: the network through onnxruntime, about 2x faster on a CPU without bf16)

Prints top-1/top-5, NLL, ECE and the worst classes; writes the full report (per-class accuracy,
confusion matrix, reliability bins, every image's top-1...) as JSON next to the checkpoint
(NAME.eval.json, which the app loads) or to --out. It also fits a temperature on the validation
split and, for a full (not --limit) run, stores it and the test metrics in the checkpoint JSON.

--corruptions runs only the corruption benchmark: test top-1 under every corruption of
cifar_models/corruptions.py at severities 1-5 (generated on the fly from a seeded, stratified
subset of the test set: --corruption-limit images, 0 = all 10,000), their mean (mCA) and the clean
top-1 on the same images, merged into the existing report (its other keys are kept). A plain run
keeps those figures when they belong to the same weights and drops them otherwise.

--split validation evaluates on the checkpoint's own held-out validation images instead, for choosing
(a recipe, test-time augmentation) without reading the test set: it prints the figures and writes them
only to --out, never beside the checkpoint. --flip-average / --no-flip-average override the checkpoint's
test-time flip averaging for one evaluation, --input-size its input size (FixRes: test a little larger than the
last training size); the checkpoint's files are then left alone (only --out).

--choose-flip-average evaluates the validation split with test-time flip averaging off and on, and writes the
better setting (off on a tie: it costs a second forward pass per image) into the checkpoint's data config, which
every prediction reads (app, evaluation, export), with both figures and timings under 'test_time_choice'. The
test report and the photo and corruption figures then belong to the old setting: run them again."""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from cifar_models import load_classifier, load_cifar100  # noqa: E402
from cifar_models.cli import add_debug_flag, device_name, non_negative_int, positive_int, run  # noqa: E402
from cifar_models.common.memory import reuse_freed_memory  # noqa: E402
from cifar_models.common.meta import checkpoint_paths, read_meta, update_meta  # noqa: E402
from cifar_models.common.reports import merge_report, replace_report, report_path, save_report  # noqa: E402
from cifar_models.common.stats import wilson  # noqa: E402
from cifar_models.data import indices_digest, stratified_subset  # noqa: E402
from cifar_models.eval.evaluation import evaluate_classifier, validation_split  # noqa: E402
from cifar_models.eval.robustness import corruption_subset, evaluate_corruptions  # noqa: E402

# Sized so that both shipped models' full corruption run fits in 30 minutes on a 2-core CPU:
# EfficientNet-B0 at 224 px, fp32, is the slow one (21-36 images/s measured there), and a run is 46
# passes over the subset (clean + 9 corruptions x 5 severities): 32,200 images, 15-26 min; see README.
DEFAULT_CORRUPTION_LIMIT = 700


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="checkpoints/NAME (or NAME.safetensors / NAME.json)")
    p.add_argument("--images", help="instead: every checkpoint of --checkpoint-dir on a folder or .zip of your photos "
                   "(sub-folders named after CIFAR-100 classes label them; see README, Your images)")
    p.add_argument("--checkpoint-dir", default="checkpoints", help="with --images (default checkpoints/)")
    p.add_argument("--csv", help="with --images: one row per (image, checkpoint), then one per rejected file")
    p.add_argument("--data-dir", help="CIFAR-100 folder (default: $CIFAR100_DIR, else data/cifar-100-python)")
    p.add_argument("--limit", type=positive_int, help="evaluate on about N test images (stratified), for quick checks")
    p.add_argument("--out", help="report path (default: NAME.eval.json beside the checkpoint)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", type=device_name)
    p.add_argument("--batch-size", type=positive_int, default=250)
    p.add_argument("--backend", choices=["torch", "onnxruntime"], default="torch",
                   help="what runs the network (CPU only for onnxruntime: about 2x faster on a CPU without bf16, "
                        "the same predictions up to float rounding; for the long --photo and --corruptions runs)")
    p.add_argument("--no-verify", action="store_true", help="skip the md5 check")
    p.add_argument("--photo", action="store_true", help="only the photo-robustness check: top-1 on photo-like "
                   "versions of the images (upscaled, JPEG, seeded) beside the 32 px originals, saved as 'photo' "
                   "in NAME.eval.json (run it after a plain evaluation, which rewrites the file)")
    p.add_argument("--split", choices=["test", "validation"], default="test",
                   help="the test set (reporting) or the checkpoint's held-out validation split (choosing: printed, "
                        "written only to --out); for the plain evaluation and --photo")
    p.add_argument("--flip-average", action=argparse.BooleanOptionalAction, default=None,
                   help="override the checkpoint's test-time flip averaging for this evaluation (e.g. to choose it "
                        "on --split validation); the checkpoint and its report are then left alone (only --out)")
    p.add_argument("--choose-flip-average", action="store_true",
                   help="set the checkpoint's test-time flip averaging to whichever of off / on scores higher on "
                        "its validation split (then re-run the test, --photo and --corruptions evaluations)")
    p.add_argument("--input-size", type=positive_int,
                   help="override the checkpoint's input size for this evaluation (to choose a test size on --split "
                        "validation); the checkpoint and its report are then left alone (only --out)")
    p.add_argument("--corruptions", action="store_true",
                   help="run only the corruption benchmark and merge it into the report")
    p.add_argument("--corruption-limit", type=non_negative_int, default=DEFAULT_CORRUPTION_LIMIT,
                   help=f"test images for --corruptions, stratified (default {DEFAULT_CORRUPTION_LIMIT}; 0 = all)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the --corruptions subset and corruptions")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_debug_flag(p)
    a = p.parse_args(argv)
    if not a.checkpoint and not a.images:
        p.error("--checkpoint is required (or --images PATH)")
    if a.corruptions and a.limit:
        p.error("--limit applies to the plain evaluation; use --corruption-limit with --corruptions")
    if a.corruptions and a.split == "validation":
        p.error("--corruptions runs on the test set; --split validation is for the plain evaluation and --photo")
    if a.choose_flip_average and (a.flip_average is not None or a.input_size or a.limit or a.out or a.corruptions
                                  or a.photo or a.images or a.split != "test"):
        p.error("--choose-flip-average takes only --checkpoint, --data-dir, --backend, --device, --batch-size")
    if a.corruptions and (a.flip_average is not None or a.input_size) and not a.out:
        p.error("--corruptions with --flip-average/--no-flip-average or --input-size needs --out (the checkpoint's "
                "report keeps the checkpoint's own settings)")
    return a


def side_run(a) -> bool:
    """Whether this evaluation must leave the checkpoint's files alone: the validation split, or settings that
    are not the checkpoint's."""
    return a.split == "validation" or a.flip_average is not None or bool(a.input_size)


def main(argv=None):
    a = parse(argv)
    if a.images:
        from cifar_models.eval.your_images import run_images
        return run_images(a.images, a.checkpoint_dir, a.csv, progress=not a.no_progress)
    if a.photo:
        return photo(a)
    clf = load(a)
    data = load_cifar100(a.data_dir, verify=not a.no_verify)
    if a.choose_flip_average:
        return choose_flip_average(a, clf, data)
    if a.corruptions:
        return corruption_run(a, clf, data, Path(a.out) if a.out else report_path(a.checkpoint))
    if a.split == "validation":
        return validation_run(a, clf, data)
    return test_run(a, clf, data)


def load(a):
    """The checkpoint's classifier, its network run by --backend."""
    clf = load_classifier(a.checkpoint, device=a.device)
    if a.flip_average is not None:
        clf.data_config = dict(clf.data_config, flip_average=a.flip_average)
    if a.input_size:
        clf.data_config = dict(clf.data_config, input_size=a.input_size)
    if a.backend == "onnxruntime":
        from cifar_models.onnx_forward import onnx_classifier

        clf = onnx_classifier(clf)
    return clf


def print_report(clf, report: dict, device: str) -> None:
    s = report["summary"]
    lo, hi = wilson(round(s["top1"] * s["n"]), s["n"])
    print(f"{clf.name} on {report['test_images']} test images ({report['seconds']:.0f}s on {device}): top-1 "
          f"{s['top1']:.2%} (95% CI {lo:.1%}-{hi:.1%})  top-5 {s['top5']:.2%}  NLL {s['nll']:.3f}  ECE {s['ece']:.3f}  "
          f"superclass top-1 {report['superclass_top1']:.2%}")
    worst = sorted(report["per_class_accuracy"].items(), key=lambda kv: kv[1])[:5]
    print("weakest classes: " + ", ".join(f"{c} {v:.0%}" for c, v in worst))
    print("top confusions: " + ", ".join(f"{c['true']}->{c['predicted']} ({c['count']})"
                                         for c in report["top_confusions"][:5]))
    cal = report["calibration"]
    print(f"temperature {cal['temperature']:.3f} (fitted on {cal['validation']['before']['n']} validation images): "
          f"test NLL {cal['test']['before']['nll']:.3f} -> {cal['test']['after']['nll']:.3f}, ECE "
          f"{cal['test']['before']['ece']:.3f} -> {cal['test']['after']['ece']:.3f}")


def test_run(a, clf, data) -> dict:
    """The plain evaluation: the test report, written beside the checkpoint (NAME.eval.json), and, for a full
    run, the test metrics and temperature in the checkpoint's JSON."""
    test = data.test
    if a.limit:
        test = test.take(stratified_subset(test.labels.numpy(), a.limit))
    t0 = time.perf_counter()
    val = validation_split(data, clf.meta)  # the temperature is fitted here, never on the test set
    report = evaluate_classifier(clf, test, batch_size=a.batch_size, val_split=val)
    report.update(checkpoint=str(a.checkpoint), test_images=len(test), seconds=time.perf_counter() - t0,
                  device=str(a.device), backend=a.backend, flip_average=flips(clf))
    print_report(clf, report, a.device)
    if side_run(a):  # other settings than the checkpoint's: its report and JSON stay as they are
        return write_side(a, report)
    out = Path(a.out) if a.out else report_path(a.checkpoint, a.limit)
    report, dropped = replace_report(out, report, clf.meta.get("weights_sha256"))
    if dropped:
        print(f"dropped the corruption figures in {out}: they were computed for other weights (run again with "
              f"--corruptions)")
    print(f"wrote {out}")
    if not a.limit:  # a full evaluation also updates the checkpoint's test metrics and temperature
        update_meta(a.checkpoint, metrics=dict(clf.meta["metrics"], test=report["summary"]),
                    calibration=report["calibration"])
        print(f"updated {checkpoint_paths(a.checkpoint)[1]} (metrics.test, calibration)")
    return report


def flips(clf) -> bool:
    return bool(clf.data_config.get("flip_average"))


def write_side(a, report: dict) -> dict:
    if a.out:
        save_report(a.out, report)
        print(f"wrote {a.out}")
    return report


def validation_run(a, clf, data) -> dict:
    """Figures on the checkpoint's held-out validation images (no temperature: it is fitted on them), for
    choosing without reading the test set; printed, and written only to --out."""
    val = validation_split(data, clf.meta)
    if a.limit:
        val = val.take(stratified_subset(val.labels.numpy(), a.limit))
    t0 = time.perf_counter()
    report = evaluate_classifier(clf, val, batch_size=a.batch_size)
    report.update(checkpoint=str(a.checkpoint), split="validation", validation_images=len(val),
                  seconds=time.perf_counter() - t0, device=str(a.device), backend=a.backend, flip_average=flips(clf),
                  input_size=int(clf.data_config["input_size"]))
    s = report["summary"]
    print(f"{clf.name} on {len(val)} validation images at {report['input_size']} px, flip averaging "
          f"{'on' if flips(clf) else 'off'} "
          f"({report['seconds']:.0f}s on {a.device}): top-1 {s['top1']:.2%}  top-5 {s['top5']:.2%}  "
          f"NLL {s['nll']:.3f}  ECE {s['ece']:.3f}")
    return write_side(a, report)


def choose_flip_average(a, clf, data) -> dict:
    """Test-time flip averaging off or on, whichever is better on the validation split (off on a tie), written
    into the checkpoint's data config with the figures that chose it."""
    val = validation_split(data, clf.meta)
    figures = {}
    for flip in (False, True):
        clf.data_config = dict(clf.data_config, flip_average=flip)
        t0 = time.perf_counter()
        s = evaluate_classifier(clf, val, batch_size=a.batch_size)["summary"]
        seconds = time.perf_counter() - t0
        figures["on" if flip else "off"] = dict(top1=s["top1"], top5=s["top5"], nll=s["nll"], seconds=seconds,
                                                ms_per_image=1000 * seconds / len(val))
        print(f"validation, flip averaging {'on ' if flip else 'off'}: top-1 {s['top1']:.2%}  top-5 {s['top5']:.2%}  "
              f"NLL {s['nll']:.3f}  ({1000 * seconds / len(val):.1f} ms per image, batches of {a.batch_size})")
    use = figures["on"]["top1"] > figures["off"]["top1"]
    meta = read_meta(a.checkpoint)
    choice = dict(flip_average=use, chosen_on="validation", validation_images=len(val), figures=figures,
                  backend=a.backend, device=str(a.device), created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    update_meta(a.checkpoint, data_config=dict(meta["data_config"], flip_average=use), test_time_choice=choice)
    print(f"flip averaging {'on' if use else 'off'}: wrote it into {checkpoint_paths(a.checkpoint)[1]}; run the plain "
          f"evaluation, --photo and --corruptions again, so that the report is the new setting's")
    return choice


def photo(a) -> dict:
    """The photo-robustness check of one checkpoint (see cifar_models/photo.py)."""
    from cifar_models.eval.photo import photo_report

    clf = load(a)
    data = load_cifar100(a.data_dir, verify=not a.no_verify)
    split = data.test if a.split == "test" else validation_split(data, clf.meta)
    if a.limit:
        split = split.take(stratified_subset(split.labels.numpy(), a.limit))
    r = dict(photo_report(clf, split.images, split.labels, batch_size=a.batch_size, progress=not a.no_progress),
             backend=a.backend, flip_average=flips(clf))
    print(f"{clf.name} on {r['images']} {a.split} images: top-1 {r['top1_32px']:.2%} at 32 px, {r['top1_photo']:.2%} "
          f"photo-like, drop {r['drop'] * 100:.2f} points")
    for key in ("by_size", "by_quality"):
        print(f"  {key}: " + ", ".join(f"{k}: {v['top1_32px'] - v['top1_photo']:+.3f}" for k, v in r[key].items()))
    if not side_run(a) and not a.limit:
        path = report_path(a.checkpoint)
        merge_report(path, dict(photo=r))
        print(f"wrote the photo report into {path}")
    return r


def corruption_run(a, clf, data, out: Path) -> dict:
    test, idx = corruption_subset(data.test, a.corruption_limit, a.seed)
    subset = dict(kind="all") if len(test) == len(data.test) else dict(
        kind="stratified", per_class=len(test) // len(clf.classes), seed=a.seed, indices_sha256_16=indices_digest(idx))
    print(f"{clf.name}: corruption benchmark on {len(test)} of {len(data.test)} test images "
          f"({subset['kind']}, seed {a.seed}), {a.device}")
    res = evaluate_corruptions(clf, test, seed=a.seed, batch_size=a.batch_size, progress=not a.no_progress,
                               subset=subset)
    ev = res["corruption_eval"]
    ev.update(backend=a.backend, flip_average=flips(clf))
    print(f"clean top-1 on these images {ev['clean_top1']:.2%}; top-1 at severity 1..5:")
    for name, row in res["corruptions"].items():
        print(f"  {name:15s} " + "  ".join(f"{v:6.2%}" for v in row))
    print(f"mean corruption accuracy (mCA) {res['corruption_mca']:.2%} ({ev['relative_mca']:.1%} of clean); "
          f"{ev['seconds']:.0f} s, {ev['images_per_second']:.0f} images/s")
    report, existed = merge_report(out, res, new=dict(model=clf.name, checkpoint=str(a.checkpoint)))
    print(f"wrote {out} (" + ("merged into the existing report" if existed else "a new file: run without --corruptions for the rest") + ")")
    return report


if __name__ == "__main__":
    reuse_freed_memory()  # big batches of activations on a CPU: 1.57x faster on the AVX2-only one (common/memory.py)
    run(main)
