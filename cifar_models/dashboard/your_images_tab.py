"""The dashboard's *Your images* tab: drop many images or one ZIP (sub-folders named after classes label them),
and every shown model is evaluated on them (`user_images`, `user_results`): accuracy with 95% intervals side by
side, McNemar's test per pair, per-class counts, each model's mistakes and the disagreements (click one to open
it in the Compare tab), the rejected files with reasons, and the CSV. Also the `/evaluate_images` API.

Torch-free, like the rest of the web process: files are read and decoded here with Pillow (as uploads are), and
the images go to the models in chunks (`ModelHost.evaluate_images`), so single predictions of other
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

from ..common.hosts import select
from ..common.limits import is_within
from ..common.user_images import LIMITS, Collection, UserImagesError, read_uploads
from ..common.user_results import Evaluation, evaluate, per_class, summary_lines
from .plots import accuracy_intervals
from .requests import PRIVATE, host_errors, upload_roots
from .state import PageState

ON_EVALUATE = dict(concurrency_id="evaluate", concurrency_limit=2)  # beside, not inside, the predict slots
CSV_DIR = Path(tempfile.gettempdir()) / "cifar-compare-your-images"
CSV_KEEP = 200  # newest CSV files kept for download
REJECTED_HEADERS = ["file", "why it was not used"]
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


class YourImagesTab:
    """Laid out inside `with gr.Tab(...)`; `wire` connects it to the Compare tab's image and adds the API."""

    def __init__(self, page: PageState, shown: gr.State):
        self.page, self.shown = page, shown
        self.classes = next(iter(page.models.values())).meta["class_names"]
        gr.Markdown(HELP)
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=300):
                self.files = gr.File(file_count="multiple", label="Images or a ZIP", elem_id="your-files", height=160)
                self.go = gr.Button("Evaluate the shown models", variant="primary", elem_id="your-run")
                self.download = gr.DownloadButton("Download the CSV", visible=False, elem_id="your-csv")
            with gr.Column(scale=3):
                self.report = gr.Markdown(elem_id="your-summary")
        self.accuracy = gr.Plot(show_label=False, elem_id="your-accuracy", visible=False)
        self.per_class = gr.Dataframe(label="Per class (labelled images)", interactive=False, visible=False,
                                      elem_id="your-classes")
        self.views = gr.State({})
        self.view = gr.Radio(choices=[], label="Show", visible=False, elem_id="your-view")
        self.gallery = gr.Gallery(label="Click an image to compare it in the Compare tab", columns=8, height=300,
                                  object_fit="contain", allow_preview=False, visible=False, elem_id="your-gallery")
        self.rejected = gr.Dataframe(headers=REJECTED_HEADERS, label="Rejected files", interactive=False,
                                     visible=False, elem_id="your-rejected")

    def run(self, images: list[Image.Image], names: list[str]) -> list[dict]:
        return self.page.host.evaluate_images(images, names)

    def read_and_run(self, payload, names: list[str], progress=None) -> Evaluation:
        return run_upload(payload, self.run, names, self.classes, upload_roots(self.page.safe_roots), progress)

    @host_errors
    def evaluate(self, payload, shown, progress=gr.Progress()) -> dict:
        names = list(self.page.shown(shown))
        titles = self.page.titles()
        progress(0, desc="reading the files")
        ev = self.read_and_run(payload, names, lambda done, total: progress((done, total), desc="evaluating",
                                                                            unit="images"))
        views = gallery_views(ev, titles)
        first = next(iter(views), None)
        table, headers = per_class(ev)
        bad = [[r["file"], r["error"]] for r in ev.rejected]
        return {self.report: report_text(ev, titles),
                self.accuracy: gr.Plot(accuracy_intervals(ev.summary(), titles) if any(ev.labels) else None,
                                       visible=any(ev.labels)),
                self.per_class: gr.Dataframe(value=table, headers=headers, visible=bool(table)),
                self.views: views, self.view: gr.Radio(choices=list(views), value=first, visible=bool(views)),
                self.gallery: gr.Gallery(value=show_view(views, first), visible=bool(views)),
                self.rejected: gr.Dataframe(value=bad, headers=REJECTED_HEADERS, visible=bool(bad)),
                self.download: gr.DownloadButton(value=write_csv(ev), visible=True)}

    @host_errors
    def evaluate_api(self, payload, models: str | None = None) -> dict:
        """Every loaded model (or the comma-separated `models`) on an uploaded ZIP (sub-folders named after
        classes label the images) or image: {"summary": {checkpoint: {"images", "labelled", "top1", "top5",
        ...}}, "rows": [...], "rejected": [...], "comparisons": [...]}."""
        names = [n.strip() for n in (models or "").split(",") if n.strip()] or list(self.page.models)
        try:
            select(self.page.models, names)
        except KeyError as e:
            raise gr.Error(e.args[0], title="Unknown model") from None
        return self.read_and_run(payload, names).api()

    def wire(self, image: gr.Image, tabs: gr.Tabs) -> None:
        """Clicking a gallery image puts it into the Compare tab's `image` and selects that tab."""
        outputs = [self.report, self.accuracy, self.per_class, self.views, self.view, self.gallery, self.rejected,
                   self.download]
        self.go.click(self.evaluate, [self.files, self.shown], outputs, preprocess=False, **PRIVATE, **ON_EVALUATE)
        self.view.input(lambda views, choice: {self.gallery: show_view(views, choice)}, [self.views, self.view],
                        self.gallery, **PRIVATE)

        def pick(evt: gr.SelectData) -> dict:
            path = selected_path(evt)
            return {image: path, tabs: gr.Tabs(selected="compare")} if path else {}

        self.gallery.select(pick, None, [image, tabs], **PRIVATE)
        api_file, api_models = gr.File(visible=False, label="ZIP or image"), gr.Textbox(visible=False, label="models")
        gr.Button(visible=False).click(self.evaluate_api, [api_file, api_models], gr.JSON(visible=False),
                                       preprocess=False, api_name="evaluate_images", **ON_EVALUATE)
