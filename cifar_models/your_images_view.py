"""The dashboard's *Your images* tab: drop many images or one ZIP (sub-folders named after classes label them),
and every shown model is evaluated on them (`user_images`, `user_results`): accuracy with 95% intervals side by
side, McNemar's test per pair, per-class counts, each model's mistakes and the disagreements (click one to open
it in the Compare tab), the rejected files with reasons, and the CSV. Also the `/evaluate_images` API.

Torch-free, like the rest of the web process: files are read and decoded here with Pillow (as uploads are), and
the images go to the models in chunks (`host.LocalModels.evaluate_images`), so single predictions of other
visitors are served between chunks. The evaluation has its own queue slots (`ON_EVALUATE`).
"""
from __future__ import annotations

import io
import tempfile
import uuid
from pathlib import Path
from typing import Callable

import gradio as gr
from PIL import Image

from .plots import accuracy_intervals
from .user_images import LIMITS, Collection, UserImagesError, read_uploads
from .user_results import Evaluation, evaluate, per_class, summary_lines

ON_EVALUATE = dict(concurrency_id="evaluate", concurrency_limit=2)  # beside, not inside, the predict slots
CSV_DIR = Path(tempfile.gettempdir()) / "cifar-compare-your-images"
CSV_KEEP = 200  # newest CSV files kept for download
HELP = ("Drop many images, or one **ZIP** whose sub-folders are named after CIFAR-100 classes (`apple/`, "
        "`maple_tree/`, `Maple Tree/`: case, spaces, `-` and `_` do not matter). Each image is labelled by the "
        "nearest enclosing class folder; images elsewhere are evaluated but unlabelled (no accuracy), and a folder "
        "that is *nearly* a class (`apples/`, `bycicle/`) is reported with suggestions. The ZIP is read in memory, "
        f"never extracted. Limits: {LIMITS.images:,} images, {LIMITS.file_bytes >> 20} MB per image, "
        f"{LIMITS.total_bytes >> 20} MB in all, compression at most {LIMITS.ratio:.0f}:1 per file, each upload up to "
        "the page's upload limit.")

Runner = Callable[[list[Image.Image], list[str]], list[dict]]


def upload_paths(payload, roots: tuple) -> list[str]:
    """The uploaded files' paths (Gradio's raw payload: one file or a list); gr.Error for anything else."""
    files = payload if isinstance(payload, list) else [payload] if payload else []
    paths = [f.get("path") if isinstance(f, dict) else f for f in files]
    if not paths or not all(paths):
        raise gr.Error("Please drop some images or a ZIP first.")
    from .serving import is_within
    if not all(is_within(p, roots) for p in paths):
        raise gr.Error("Only uploaded files can be evaluated.", title="Cannot use these files")
    return paths


def run_upload(payload, run: Runner, names: list[str], classes: list[str], roots: tuple,
               progress: Callable[[int, int], None] | None = None) -> Evaluation:
    """Read the upload (the limits' message as a gr.Error) and evaluate `names` on it."""
    try:
        photos: Collection = read_uploads(upload_paths(payload, roots), classes)
    except UserImagesError as e:
        raise gr.Error(str(e), title="Cannot evaluate these files") from None
    return evaluate(photos, run, names, progress=progress)


def write_csv(ev: Evaluation) -> str:
    """The CSV for the download button, in a folder that keeps the newest CSV_KEEP."""
    CSV_DIR.mkdir(exist_ok=True)
    old = sorted(CSV_DIR.glob("*/your_images.csv"), key=lambda p: p.stat().st_mtime)
    for p in old[:max(0, len(old) - CSV_KEEP + 1)]:
        try:  # another evaluation may be removing it at the same moment
            p.unlink(missing_ok=True)
            p.parent.rmdir()
        except OSError:
            pass
    folder = CSV_DIR / uuid.uuid4().hex
    folder.mkdir()
    path = folder / "your_images.csv"
    path.write_text(ev.csv_text(), encoding="utf-8")
    return str(path)


def jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def gallery_views(ev: Evaluation, titles: dict[str, str]) -> dict[str, list[tuple[bytes, str]]]:
    """View name -> [(JPEG of the image, caption)]: each model's mistakes, then the disagreements. JPEG bytes
    keep the session's state small (a few MB at most)."""
    def caption(i: int) -> str:
        said = " · ".join(f"{n}: {ev.tops[n][i][0][0]} ({ev.tops[n][i][0][1]:.0%})" for n in ev.names)
        return (f"{ev.files[i]} · true: {ev.labels[i] or '?'} · {said}").replace("_", " ")

    views = {}
    for name in ev.names:
        wrong = [i for i in ev.wrong(name) if i in ev.kept]
        views[f"{titles.get(name, name)}: wrong ({len(ev.wrong(name))})"] = [(jpeg(ev.kept[i]), caption(i))
                                                                            for i in wrong]
    if len(ev.names) > 1:
        differ = ev.disagreements()
        views[f"The models disagree ({len(differ)})"] = [(jpeg(ev.kept[i]), caption(i)) for i in differ if i in ev.kept]
    return views


def report_text(ev: Evaluation, titles: dict[str, str]) -> str:
    lines = summary_lines(ev, titles)
    head = (f"**{len(ev.files):,} image(s)** evaluated by {len(ev.names)} model(s) in {ev.seconds:.1f} s "
            f"({sum(1 for x in ev.labels if x):,} labelled); **{len(ev.rejected):,} file(s) rejected**.")
    note = ("" if any(ev.labels) else "\n\nNo image was in a class folder, so there is no accuracy: put them in "
            "folders named after classes (`apple/`, `bicycle/`...) inside a ZIP.")
    return head + "\n\n" + "\n".join(f"- {line}" for line in lines) + note


def show_view(views: dict, choice: str | None) -> list:
    items = views.get(choice) or []
    return [(Image.open(io.BytesIO(data)), caption) for data, caption in items]


def selected_path(evt: gr.SelectData) -> str | None:
    """The clicked gallery image's file (Gradio's cached copy), from the select event's value."""
    value = evt.value if isinstance(evt.value, dict) else {}
    image = value.get("image") if isinstance(value.get("image"), dict) else value
    return image.get("path") if isinstance(image, dict) else None


def build_your_images_tab(run: Runner, shown_names: Callable[[list], list[str]], all_names: list[str],
                          classes: list[str], titles: dict[str, str], roots: Callable[[], tuple],
                          shown: gr.State, image: gr.Image, tabs: gr.Tabs) -> gr.Gallery:
    """Lay the tab out (call inside `with gr.Tab(...)`) and wire it, and the `/evaluate_images` API. `run`: the
    models' `evaluate_images`; `shown_names(shown)`: the checkpoints the page shows; clicking a gallery image
    puts it into `image` and selects the `compare` tab of `tabs`. Returns the gallery."""
    gr.Markdown(HELP)
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=300):
            files = gr.File(file_count="multiple", label="Images or a ZIP", elem_id="your-files", height=160)
            go_button = gr.Button("Evaluate the shown models", variant="primary", elem_id="your-run")
            download = gr.DownloadButton("Download the CSV", visible=False, elem_id="your-csv")
        with gr.Column(scale=3):
            report = gr.Markdown(elem_id="your-summary")
    accuracy = gr.Plot(show_label=False, elem_id="your-accuracy", visible=False)
    classes_table = gr.Dataframe(label="Per class (labelled images)", interactive=False, visible=False,
                                 elem_id="your-classes")
    views = gr.State({})
    view = gr.Radio(choices=[], label="Show", visible=False, elem_id="your-view")
    gallery = gr.Gallery(label="Click an image to compare it in the Compare tab", columns=8, height=300,
                         object_fit="contain", allow_preview=False, visible=False, elem_id="your-gallery")
    rejected = gr.Dataframe(headers=["file", "why it was not used"], label="Rejected files", interactive=False,
                            visible=False, elem_id="your-rejected")

    def evaluate_tab(payload, names, progress=gr.Progress()):
        names = shown_names(names)
        progress(0, desc="reading the files")
        ev = run_upload(payload, run, names, classes, roots(),
                        lambda done, total: progress((done, total), desc="evaluating", unit="images"))
        v = gallery_views(ev, titles)
        first = next(iter(v), None)
        table, headers = per_class(ev)
        bad = [[r["file"], r["error"]] for r in ev.rejected]
        summary = ev.summary()
        return [report_text(ev, titles),
                gr.Plot(accuracy_intervals(summary, titles) if any(ev.labels) else None, visible=any(ev.labels)),
                gr.Dataframe(value=table, headers=headers, visible=bool(table)),
                v, gr.Radio(choices=list(v), value=first, visible=bool(v)),
                gr.Gallery(value=show_view(v, first), visible=bool(v)),
                gr.Dataframe(value=bad, headers=["file", "why it was not used"], visible=bool(bad)),
                gr.DownloadButton(value=write_csv(ev), visible=True)]

    go_button.click(evaluate_tab, [files, shown], [report, accuracy, classes_table, views, view, gallery, rejected,
                                                   download], preprocess=False, api_visibility="private", **ON_EVALUATE)
    view.input(show_view, [views, view], gallery, api_visibility="private")

    def pick(evt: gr.SelectData):
        path = selected_path(evt)
        return (path, gr.Tabs(selected="compare")) if path else (gr.skip(), gr.skip())

    gallery.select(pick, None, [image, tabs], api_visibility="private")

    add_api(run, all_names, classes, roots)
    return gallery


def add_api(run: Runner, all_names: list[str], classes: list[str], roots: Callable[[], tuple]) -> None:
    """The `/evaluate_images` endpoint (hidden components, on the evaluation's own queue slots)."""
    def evaluate_images(payload, models: str | None = None) -> dict:
        """Every loaded model (or the comma-separated `models`) on an uploaded ZIP (sub-folders named after
        classes label the images) or image: {"summary": {checkpoint: {"images", "labelled", "top1", "top5",
        ...}}, "rows": [...], "rejected": [...], "comparisons": [...]}."""
        names = [n.strip() for n in (models or "").split(",") if n.strip()] or all_names
        unknown = [n for n in names if n not in all_names]
        if unknown:
            raise gr.Error(f"no loaded model named {', '.join(unknown)}; loaded: {', '.join(all_names)}",
                           title="Unknown model")
        return run_upload(payload, run, names, classes, roots()).api()

    api_file, api_models = gr.File(visible=False, label="ZIP or image"), gr.Textbox(visible=False, label="models")
    gr.Button(visible=False).click(evaluate_images, [api_file, api_models], gr.JSON(visible=False), preprocess=False,
                                   api_name="evaluate_images", **ON_EVALUATE)
