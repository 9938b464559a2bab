"""`python scripts/evaluate.py --images PATH [--checkpoint-dir DIR] [--csv OUT]`: every checkpoint in DIR on a
folder or ZIP of a person's labelled photos, through the app's own path (decoded at reduced scale by
`common.images.open_image`, brought to 32 px and run by `serve.host.LocalModels.evaluate_images`, calibrated top-5)."""
from __future__ import annotations

import sys
from pathlib import Path

from ..common.user_images import UserImagesError, read_images
from ..common.user_results import Evaluation, evaluate, summary_lines

CLI_CHUNK = 16  # images per call on the command line (nobody else is waiting): one forward pass of 16


def fail(message: str) -> None:
    print(f"evaluate.py --images: {message}", file=sys.stderr)
    raise SystemExit(2)


def run_images(images: str, checkpoint_dir: str = "checkpoints", csv_out: str | None = None,
               progress: bool = True) -> Evaluation:
    """Load every checkpoint of `checkpoint_dir`, evaluate them on `images`, print the figures, write the CSV.
    Bad input (no such path, not a ZIP, over a limit, no usable checkpoint) exits with status 2 and a message."""
    from ..serve.host import LocalModels

    if not Path(checkpoint_dir).is_dir():
        fail(f"the checkpoint folder {checkpoint_dir} does not exist.")
    host = LocalModels(checkpoint_dir)
    if not host.models:
        fail(f"no usable checkpoint in {checkpoint_dir}" + "".join(f"\n- {n}: {w}" for n, w in host.info.failed.items()))
    for name, why in host.info.failed.items():
        print(f"checkpoint {name} skipped: {why}", file=sys.stderr)
    classes = next(iter(host.models.values())).classes
    try:
        photos = read_images(images, classes)
    except UserImagesError as e:
        fail(str(e))
    names = list(host.models)
    print(f"{len(photos.items):,} file(s) to decode in {images} ({sum(1 for i in photos.items if i.label):,} in class "
          f"folders; {len(photos.rejected):,} rejected unread) through {len(names)} checkpoint(s): {', '.join(names)}")
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(photos.items), unit="image", desc="evaluating")
    ev = evaluate(photos, host.evaluate_images, names, chunk=CLI_CHUNK,
                  progress=(lambda done, total: bar.update(done - bar.n)) if bar else None)
    if bar:
        bar.close()
    print(f"{len(ev.files):,} images in {ev.seconds:.1f} s ({len(ev.files) / max(ev.seconds, 1e-9):.1f} images/s, "
          f"{len(names)} model(s))")
    for line in summary_lines(ev):
        print(line)
    if ev.rejected:
        print(f"{len(ev.rejected):,} file(s) rejected:")
        for r in ev.rejected[:20]:
            print(f"  {r['file']}: {r['error']}")
        if len(ev.rejected) > 20:
            print(f"  ... and {len(ev.rejected) - 20:,} more" + (" (all in the CSV)" if csv_out else ""))
    if csv_out:
        try:
            Path(csv_out).write_text(ev.csv_text(), encoding="utf-8")
        except OSError as e:
            fail(f"cannot write {csv_out}: {e.strerror or e}")
        print(f"wrote {csv_out} ({len(ev.files) * len(names) + len(ev.rejected):,} rows)")
    return ev
