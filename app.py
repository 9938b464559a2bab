"""cifar-compare dashboard: one image, every CIFAR-100 model in the checkpoint folder, side by side.

    python app.py            # http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT honoured)
    CHECKPOINT_DIR=my_runs python app.py

Every checkpoint in CHECKPOINT_DIR (default checkpoints/) is loaded at start-up, whatever its name; a picker
chooses which 1-4 of them are shown (the shipped pair by default). UI wiring only: the models, the
comparison and the figures live in cifar_models/. The models run in their own process
(cifar_models/worker.py), started before Gradio is imported so that both load at once; this process
never imports torch. MODEL_PROCESS=0 keeps them in this process.
"""
from __future__ import annotations

import os
from pathlib import Path

from cifar_models.serving import limit_malloc_arenas
from cifar_models.worker import ModelProcess, ModelProcessError

limit_malloc_arenas()  # first, before any thread starts: glibc fixes its arena limit when the first thread needs one
HERE = Path(__file__).resolve().parent
CHECKPOINT_DIR = Path(os.environ.get("CHECKPOINT_DIR", HERE / "checkpoints"))
# The models load in their own process (cifar_models/worker.py) while this one imports Gradio and builds the
# page: started here, before `import gradio`, so the two overlap. MODEL_PROCESS=0 loads them in this process.
IN_PROCESS = os.environ.get("MODEL_PROCESS", "1") == "0"
STARTING = (ModelProcess.start(CHECKPOINT_DIR) if __name__ == "__main__" and not IN_PROCESS and CHECKPOINT_DIR.is_dir()
            else None)

import base64  # noqa: E402  (after the model process is on its way)
import functools  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import gradio as gr  # noqa: E402
from PIL import Image  # noqa: E402

from cifar_models import plots, serving  # noqa: E402
from cifar_models.catalog import (ModelInfo, agreement_line, confusions_table, default_shown,  # noqa: E402
                                  load_reports, model_card, model_colors, select, title)
from cifar_models.images import ImageInputError, open_image  # noqa: E402
from cifar_models.plots import (corruption_curves, per_class_accuracy, reliability_diagram, topk_bars,  # noqa: E402
                                training_curves)
from cifar_models.stats import analysis_lines  # noqa: E402
from cifar_models.webcam import RateMeter, frame_id  # noqa: E402
from cifar_models.your_images_view import build_your_images_tab  # noqa: E402

CSS = ".gradio-container {max-width: 1280px !important; margin: auto;}"
MAX_SHOWN = 4  # models side by side at most
MODELS: dict[str, ModelInfo] = {}  # checkpoint name -> what it is (the network itself lives in HOST)
FAILED: dict = {}   # checkpoint name -> why it could not be loaded
REPORTS: dict = {}  # checkpoint name -> its NAME.eval.json (scripts/evaluate.py), where there is one
HOST: list = []     # [the models: a worker.ModelProcess, or a host.LocalModels with MODEL_PROCESS=0]
CORRUPTIONS: list = []  # [(name, title, scale)] of the Robustness lab, as the models' side offers them
PAGE: list = []  # [what a new page loads: the layout and figures of the default choice] (built in `build`)
# Predictions: many requests decode their images at once; their forward passes are batched (serving.py).
ON_MODELS = dict(concurrency_id="models", concurrency_limit=serving.PREDICT_CONCURRENCY)
ON_HEATMAPS = dict(concurrency_id="heatmaps", concurrency_limit=serving.HEATMAP_CONCURRENCY)
SAFE_ROOTS = (HERE / "examples",)  # besides Gradio's upload cache: the only folders an image is read from
PRIVATE = dict(api_visibility="private")
log = logging.getLogger("cifar_compare")


def model_titles() -> dict[str, str]:
    """Checkpoint name -> display title (from each model's registry entry and its checkpoint name)."""
    return {n: title(m) for n, m in MODELS.items()}


def shown_models(shown) -> dict:
    """The picked checkpoints (names) as {name: Classifier}, in the order picked."""
    return select(MODELS, [n for n in (shown or []) if n in MODELS][:MAX_SHOWN] or default_shown(MODELS, MAX_SHOWN))


def example_images() -> list[str]:
    cifar = sorted(str(p) for p in (HERE / "examples" / "cifar").glob("*.png"))
    try:  # a few real photos that gradio ships as demo media (Apache-2.0 package)
        import gradio.media as media
        photos = [media.get_image(n) for n in ("lion.jpg", "cheetah.jpg", "tower.jpg")]
    except Exception:
        photos = []
    return cifar + [p for p in photos if Path(p).is_file()]


TRIMMER = serving.Trimmer()  # this process decodes every upload: hand the freed memory back after bursts


def read_upload(payload):
    """The raw image payload (preprocess=False) -> (PIL image, notes); gr.Error for anything unusable."""
    TRIMMER.touch()
    if payload is None:
        raise gr.Error("Please upload, drop, paste or snap an image first.")
    if isinstance(payload, dict):
        path, url = payload.get("path"), payload.get("url") or ""
        if not path and url.startswith("data:"):
            if len(url) > serving.MAX_UPLOAD_MB * (4 << 20) // 3 + 1024:
                raise gr.Error(f"The image is larger than the {serving.MAX_UPLOAD_MB} MB limit.",
                               title="Cannot use this image")
            payload = base64.b64decode(url.split(",", 1)[1])
        else:
            payload = path
    if not payload:
        raise gr.Error("No image was received; please try again.")
    if not isinstance(payload, (bytes, bytearray)) and not serving.is_within(payload, upload_roots()):
        raise gr.Error("Only uploaded images and the app's examples can be used.", title="Cannot use this image")
    try:
        return open_image(payload)
    except ImageInputError as e:
        raise gr.Error(str(e), title="Cannot use this image") from None


def upload_roots() -> tuple:
    from gradio.utils import get_upload_folder
    return (get_upload_folder(), *SAFE_ROOTS)


def predict(payload, models: str | None = None) -> dict:
    """Top-5 labels and probabilities of every loaded model for one image, as JSON keyed by checkpoint name,
    plus `agree` (all their top-1 the same). `models`: optional comma-separated checkpoint names to limit it to."""
    image, notes = read_upload(payload)
    names = [n.strip() for n in (models or "").split(",") if n.strip()]
    try:
        chosen = select(MODELS, names) if names else None
    except KeyError as e:
        raise gr.Error(e.args[0], title="Unknown model") from None
    for note in notes:
        gr.Warning(note)
    return HOST[0].predict(image, list(chosen) if chosen else None)


# ----------------------------------------------------------------------------- the comparison, slot by slot
# The page has MAX_SHOWN (or fewer) slots; slot i shows the i-th picked model. A slot without a model is hidden.
def n_slots() -> int:
    return min(MAX_SHOWN, len(MODELS))


def show(payload, cam_on: bool, shown):
    """UI event: the agreement line, then per slot a bar chart, a caption and the Grad-CAM class choice."""
    if payload is None:  # the image was cleared
        return [gr.skip()] * (1 + 3 * n_slots())
    image, notes = read_upload(payload)
    for note in notes:
        gr.Warning(note)
    models = shown_models(shown)
    return render(HOST[0].predict(image, list(models)), models, cam_on)


def render(result: dict, models: dict, cam_on: bool = False) -> list:
    out = [agreement_line(result, models)]
    names = list(models)
    for i in range(n_slots()):
        if i >= len(names):
            out += [None, "", gr.Radio(choices=[], value=None, visible=False)]
            continue
        r = result[names[i]]
        top = [(t["label"], t["probability"]) for t in r["top"]]
        out.append(topk_bars(top, names[i], "Top-5 classes"))
        shared = f" (batch of {result['batch']})" if result.get("batch", 1) > 1 else ""
        out.append(f"Superclass: **{r['superclass'].replace('_', ' ')}** · forward pass {r['milliseconds']:.0f} ms{shared}")
        out.append(gr.Radio(choices=[(c.replace("_", " "), c) for c, _ in top], value=top[0][0], visible=cam_on))
    return out


def heat_maps(payload, cam_on: bool, shown, *classes, slots=None):
    """Grad-CAM per slot for its chosen class, computed only when asked for (the image decoded once)."""
    names = list(shown_models(shown))
    slots = range(n_slots()) if slots is None else slots
    if not cam_on or payload is None:
        return [gr.Image(value=None, visible=False) for _ in slots]
    image, _ = read_upload(payload)
    return [gr.Image(value=HOST[0].explain(names[i], image, c), visible=True) if i < len(names) and c
            else gr.Image(value=None, visible=False) for i, c in zip(slots, classes)]


@functools.lru_cache(maxsize=8)
def first_view(path, shown: tuple) -> list:
    """The page's initial result (the first example), computed once; None warms the models up on a blank image."""
    image = open_image(path)[0] if path else Image.new("RGB", (32, 32))
    models = shown_models(shown)
    return render(HOST[0].predict(image, list(models)), models)


def failures_note() -> str:
    if not FAILED:
        return ""
    lines = [f"- **{n}**: {why}" for n, why in FAILED.items()]
    return (f"⚠️ {len(FAILED)} checkpoint(s) in `{CHECKPOINT_DIR}` could not be loaded; the others are served.\n"
            + "\n".join(lines))


class Models:
    """The model process's operations (or host.LocalModels'), with its failure turned into a message on the
    page: if the model process stops, every request says so instead of failing with a bare error."""

    def __init__(self, host):
        self.host, self.info = host, host.info

    def __getattr__(self, op):
        fn = getattr(self.host, op)

        def call(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except ModelProcessError as e:
                log.error("model process: %s", e)
                raise gr.Error(f"The models are not available: {e}.", title="Models stopped") from None

        return call


def build(host, reports: dict | None = None) -> gr.Blocks:
    """The page, over `host` (a worker.ModelProcess that is ready, or a host.LocalModels)."""
    HOST[:] = [Models(host)]
    MODELS.update(host.info["models"])
    FAILED.update(host.info["failed"])
    CORRUPTIONS[:] = host.info["corruptions"]
    REPORTS.update(reports or {})
    plots.use_colors(model_colors(MODELS))
    examples = example_images()
    start = default_shown(MODELS, MAX_SHOWN)
    slots = range(n_slots())
    with gr.Blocks(title="cifar-compare", delete_cache=serving.DELETE_CACHE) as demo:
        gr.Markdown("# cifar-compare\nCIFAR-100 classifiers side by side: by default a 9-layer CNN trained from "
                    "scratch and EfficientNet-B0 started from ImageNet weights, plus every other checkpoint in the "
                    "folder. Give them any picture and compare what they see.")
        gr.Markdown(failures_note(), visible=bool(FAILED), elem_id="load-failures")
        shown = gr.State(start)
        picker = gr.CheckboxGroup(choices=[(t, n) for n, t in model_titles().items()], value=start,
                                  label=f"Models shown ({len(MODELS)} loaded from {CHECKPOINT_DIR.name}/; "
                                        f"pick up to {MAX_SHOWN})", elem_id="picker", visible=len(MODELS) > 1)
        with gr.Tabs() as tabs:
            with gr.Tab("Compare", id="compare"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=2, min_width=300):
                        image = gr.Image(value=examples[0] if examples else None, type="filepath",
                                         label=f"Image (up to {serving.MAX_UPLOAD_MB} MB)",
                                         sources=["upload", "webcam", "clipboard"], height=300)
                        cam_on = gr.Checkbox(False, label="Show where each model looks (Grad-CAM heat maps)")
                        if examples:
                            gr.Examples(examples=examples, inputs=image, examples_per_page=15,
                                        label="Examples: CIFAR-100 test images and photos")
                    with gr.Column(scale=5):
                        agree = gr.Markdown("", elem_id="agreement")
                        outputs, radios, cams, columns, headings = [agree], [], [], [], []
                        with gr.Row(equal_height=True):
                            for i in slots:
                                with gr.Column(min_width=300, visible=i < len(start)) as col:
                                    headings.append(gr.Markdown(slot_heading(start, i), elem_id=f"heading-{i}"))
                                    bars = gr.Plot(show_label=False, elem_id=f"bars-{i}")
                                    caption = gr.Markdown("")
                                    radio = gr.Radio(choices=[], visible=False, label="Heat map for class")
                                    cams.append(gr.Image(visible=False, show_label=False, height=280,
                                                         elem_id=f"cam-{i}", interactive=False))
                                    radios.append(radio)
                                    columns.append(col)
                                    outputs += [bars, caption, radio]
                robust_bars, wire_robustness = robustness_panel(image, shown)
                gr.Markdown("## How they were trained")
                with gr.Row(equal_height=True):
                    cards = [gr.Markdown(slot_card(start, i), visible=i < len(start), elem_id=f"card-{i}")
                             for i in slots]
                with gr.Row(equal_height=True):
                    curve_acc = gr.Plot(show_label=False, elem_id="curve-acc")  # figures: filled when a page loads
                    curve_loss = gr.Plot(show_label=False, elem_id="curve-loss")
            with gr.Tab("Live webcam", id="webcam"):
                live_labels = webcam_view(shown, start)
            with gr.Tab("Your images", id="yours"):  # every shown model on a ZIP of your labelled photos
                build_your_images_tab(lambda images, names: HOST[0].evaluate_images(images, names),
                                      lambda names: list(shown_models(names)), list(MODELS),
                                      next(iter(MODELS.values())).meta["class_names"], model_titles(), upload_roots,
                                      shown, image, tabs)
            with gr.Tab("Analysis", id="analysis"):
                analysis = analysis_view(start)
                corruption = corruption_view(start)

        # Plain prediction on every image change (upload, drop, paste, webcam, example click); heat maps after it,
        # only when asked for, so they never slow the prediction down.
        image.change(show, [image, cam_on, shown], outputs, preprocess=False, **PRIVATE, **ON_MODELS).then(
            heat_maps, [image, cam_on, shown, *radios], cams, preprocess=False, **PRIVATE, **ON_HEATMAPS)
        cam_on.change(lambda on: [gr.Radio(visible=on)] * len(radios), cam_on, radios, **PRIVATE).then(
            heat_maps, [image, cam_on, shown, *radios], cams, preprocess=False, **PRIVATE, **ON_HEATMAPS)
        for i, radio, cam in zip(slots, radios, cams):
            radio.input(lambda p, on, s, c, i=i: heat_maps(p, on, s, c, slots=[i])[0], [image, cam_on, shown, radio],
                        cam, preprocess=False, **PRIVATE, **ON_HEATMAPS)

        # The picker: every part of the page follows the choice (then the current image is run again).
        def relayout(names):
            out = [gr.Column(visible=i < len(names)) for i in slots]
            out += [slot_heading(names, i) for i in slots]
            out += [gr.Markdown(slot_card(names, i), visible=i < len(names)) for i in slots]
            out += [curves(names, "acc"), curves(names, "loss")]
            out += [gr.Plot(visible=i < len(names)) for i in slots]  # robustness lab bars
            out += [gr.Label(value=None, label=title(MODELS[names[i]]), visible=True) if i < len(names)
                    else gr.Label(visible=False) for i in slots]
            return out + analysis.update(names) + corruption.update(names)

        layout_outputs = [*columns, *headings, *cards, curve_acc, curve_loss, *robust_bars, *live_labels,
                          *analysis.outputs, *corruption.outputs]
        # always_last, on every step: ticks made while the page is being redrawn are not lost; the newest choice
        # wins. (A `.then` step is "once" by default: a second tick's redraw was dropped while the first's ran.)
        last = dict(trigger_mode="always_last", **PRIVATE)
        picker.input(choose, [picker, shown], [picker, shown], **last).then(
            relayout, shown, layout_outputs, **last).then(
            show, [image, cam_on, shown], outputs, preprocess=False, **last, **ON_MODELS).then(
            heat_maps, [image, cam_on, shown, *radios], cams, preprocess=False, **last, **ON_HEATMAPS)
        demo.load(relayout, shown, layout_outputs, **PRIVATE)  # the figures, made when a page first needs them
        PAGE[:] = [functools.partial(relayout, start)]
        wire_robustness()
        if analysis.gallery is not None:
            def pick(evt: gr.SelectData, items):  # a disagreement clicked: run it through the main comparison
                return items[evt.index][0], gr.Tabs(selected="compare")

            analysis.gallery.select(pick, analysis.items, [image, tabs], **PRIVATE)

            def fill():
                items, caption = gallery_items(analysis.pair)
                return items, items, caption

            demo.load(fill, None, [analysis.gallery, analysis.items, analysis.count], **PRIVATE)
        if examples:
            demo.load(lambda: first_view(examples[0], tuple(start)), None, outputs, **PRIVATE, **ON_MODELS)
        # The programmatic endpoint: JSON only (gradio_client: client.predict(handle_file(p), api_name="/predict"),
        # optionally models="cnn9,efficientnet_b0").
        api_out = gr.JSON(visible=False)
        api_models = gr.Textbox(visible=False, label="models")
        gr.Button(visible=False).click(predict, [image, api_models], api_out, preprocess=False, api_name="predict",
                                       **ON_MODELS)
    demo.queue(**serving.QUEUE)
    return demo


def warm_up() -> threading.Thread:
    """Nothing computed at start-up that can wait: once the app serves, a background thread prepares the
    first example's result and the figures that a new page shows, the backend's kernels for every batch shape (between
    requests only: a request waits for one small step at most), and the disagreement gallery. Returns the
    thread."""
    examples, start = example_images(), default_shown(MODELS, MAX_SHOWN)
    steps = [functools.partial(first_view, examples[0] if examples else None, tuple(start)), *PAGE, HOST[0].warm_up]
    if len([n for n in REPORTS if REPORTS[n].get("images")]) >= 2:
        steps.append(functools.partial(gallery_items, default_pair(start)))

    def run():
        t0 = time.perf_counter()
        for step in steps:
            step()
        log.info("warm-up done %.1f s after the app started serving (%d steps between requests)",
                 time.perf_counter() - t0, len(steps))

    thread = threading.Thread(target=run, name="warm-up", daemon=True)
    thread.start()
    return thread


def choose(picked, previous):
    """The picker's new value, or the previous one back (with a message) when it is empty or too long."""
    if not picked:
        gr.Warning("Pick at least one model.")
        return previous, previous
    if len(picked) > MAX_SHOWN:
        gr.Warning(f"At most {MAX_SHOWN} models side by side: untick one first.")
        return previous, previous
    return picked, picked


def slot_heading(names, i) -> str:
    return f"### {title(MODELS[names[i]])}" if i < len(names) else ""


def slot_card(names, i) -> str:
    return f"### {title(MODELS[names[i]])}\n" + model_card(MODELS[names[i]]) if i < len(names) else ""


# Plotly figures take tens of milliseconds each to build: each is made once per choice of models (cached), and
# not at start-up: a page gets them when it loads (`relayout`), the default choice's made by the warm-up.
def curves(names, metric: str):
    return _curves(tuple(names), metric)


@functools.lru_cache(maxsize=64)
def _curves(names: tuple, metric: str):
    return training_curves({n: MODELS[n].meta.get("history", []) for n in names}, metric)


# ----------------------------------------------------------------------------- analysis
class analysis_view:
    """Where each shown model fails, from the NAME.eval.json files: per-class accuracy, reliability diagrams,
    confusions, and the disagreement gallery for a pair chosen here."""

    def __init__(self, start):
        slots = range(n_slots())
        self.note = gr.Markdown(self.missing(start), elem_id="analysis-note")
        gr.Markdown("Test-set figures, computed by `scripts/evaluate.py` and loaded at start-up. Probabilities in "
                    "the dashboard are temperature-scaled (fitted on the validation split).")
        self.stats = gr.Markdown(self.stats_text(start), elem_id="analysis-stats")  # 95% intervals, McNemar
        self.per_class = gr.Plot(show_label=False, elem_id="per-class")
        with gr.Row(equal_height=True):
            self.reliability = [gr.Plot(show_label=False,
                                        elem_id=f"reliability-{i}", visible=self.has(start, i)) for i in slots]
        with gr.Row(equal_height=True):
            self.confusions = []
            for i in slots:
                value, headers, label = self.confusion_table(start, i)
                self.confusions.append(gr.Dataframe(value=value, headers=headers, label=label, interactive=False,
                                                    visible=self.has(start, i)))
        self.outputs = [self.note, self.per_class, *self.reliability, *self.confusions, self.stats]
        self.gallery = self.items = None
        with_images = [n for n in REPORTS if REPORTS[n].get("images")]
        if len(with_images) < 2:
            return
        gr.Markdown("### Where two models disagree\nTest images on which the pair's top-1 differ, with raw "
                    "(uncalibrated) confidences: click one to compare all shown models on it.")
        pair = default_pair(start)
        with gr.Row(equal_height=True):
            first = gr.Dropdown([(title(MODELS[n]), n) for n in with_images], value=pair[0], label="Model A",
                                elem_id="pair-a")
            second = gr.Dropdown([(title(MODELS[n]), n) for n in with_images], value=pair[1], label="Model B",
                                 elem_id="pair-b")
        # Filled in when a page loads (from the warm-up's cache): reading the test set can wait.
        self.pair = tuple(pair)
        self.count = gr.Markdown("", elem_id="disagreement-count")
        self.items = gr.State([])
        self.gallery = gr.Gallery(label="Disagreements", columns=8, height=420, allow_preview=False,
                                  elem_id="disagreements")

        def refresh(a, b):
            items, caption = gallery_items((a, b))
            return items, items, caption

        gr.on([first.input, second.input], refresh, [first, second], [self.gallery, self.items, self.count],
              **PRIVATE)

    @staticmethod
    def has(names, i) -> bool:
        return i < len(names) and names[i] in REPORTS

    @staticmethod
    def missing(names) -> str:
        lacking = [n for n in names if n not in REPORTS]
        return ("No analysis file for " + ", ".join(f"`{n}`" for n in lacking) + ": run `python scripts/evaluate.py "
                "--checkpoint checkpoints/NAME` to add it." if lacking else "")

    @staticmethod
    @functools.lru_cache(maxsize=64)
    def _per_class(names: tuple):
        have = {n: REPORTS[n] for n in names if n in REPORTS}
        return per_class_accuracy(have) if have else None

    def per_class_figure(self, names):
        return self._per_class(tuple(names))

    @staticmethod
    @functools.lru_cache(maxsize=64)
    def _reliability(name: str):
        return reliability_diagram(REPORTS[name], name)

    def reliability_figure(self, names, i):
        return self._reliability(names[i]) if self.has(names, i) else None

    def confusion_table(self, names, i):
        if not self.has(names, i):
            return [], ["true class", "predicted as", "test images"], "Most frequent confusions"
        return (confusions_table(REPORTS[names[i]]), ["true class", "predicted as", "test images"],
                f"Most frequent confusions: {names[i]}")

    def update(self, names) -> list:
        slots = range(n_slots())
        out = [self.missing(names), self.per_class_figure(names)]
        out += [gr.Plot(self.reliability_figure(names, i), visible=self.has(names, i)) for i in slots]
        for i in slots:
            value, headers, label = self.confusion_table(names, i)
            out.append(gr.Dataframe(value=value, headers=headers, label=label, visible=self.has(names, i)))
        return out + [self.stats_text(names)]

    @staticmethod
    def stats_text(names) -> str:
        return analysis_lines({n: REPORTS[n] for n in names if n in REPORTS}, model_titles())


def default_pair(start) -> tuple:
    """The disagreement gallery's first pair: the first two shown models with analysis files, else any two."""
    with_images = [n for n in REPORTS if REPORTS[n].get("images")]
    pair = [n for n in start if n in with_images][:2]
    return tuple(pair + [n for n in with_images if n not in pair][:2 - len(pair)])


@functools.lru_cache(maxsize=16)
def gallery_items(pair: tuple) -> tuple[list, str]:
    """The disagreement gallery of a pair: from the local test set when CIFAR-100 is at hand, else from the
    test images shipped in examples/."""
    a, b = pair
    if a == b:
        return [], "Pick two different models."
    items, differ, local = HOST[0].gallery(pair, (HERE / "examples" / "disagreements", HERE / "examples" / "cifar"))
    caption = (f"`{a}` and `{b}` disagree on **{differ:,}** of {len(REPORTS[a]['images']['label']):,} test images; "
               f"{len(items)} shown" + ("" if local else
                                        " (from the images shipped in examples/: set CIFAR100_DIR for all)") + ".")
    return items, caption


class corruption_view:
    """Accuracy against severity for the shown models that have corruption figures in their NAME.eval.json."""

    def __init__(self, start):
        gr.Markdown("## Robustness to corruptions")
        self.table = gr.Markdown(self.text(start), elem_id="corruption-table")
        self.plot = gr.Plot(show_label=False, elem_id="corruption-curves")
        self.outputs = [self.table, self.plot]

    @staticmethod
    def have(names) -> dict:
        return {n: REPORTS[n] for n in names if REPORTS.get(n, {}).get("corruptions")}

    def text(self, names) -> str:
        have = self.have(names)
        if not have:
            return ("No corruption figures for the shown models yet: run `python scripts/evaluate.py --checkpoint "
                    "checkpoints/NAME --corruptions` for each.")
        rows = ["| model | clean top-1 (same images) | mean corruption accuracy (mCA) | mCA / clean | test images |",
                "|---|---|---|---|---|"]
        for n, r in have.items():
            ev = r["corruption_eval"]
            rows.append(f"| {model_titles().get(n, n)} | {ev['clean_top1']:.1%} | **{r['corruption_mca']:.1%}** | "
                        f"{r['corruption_mca'] / ev['clean_top1']:.0%} | {ev['test_images']:,} (seed {ev['seed']}) |")
        return ("Top-1 on test images corrupted on the fly (`scripts/evaluate.py --corruptions`): each corruption "
                "of the Robustness lab at severities 1-5; mCA is the mean over all of them.\n\n" + "\n".join(rows))

    def figure(self, names):
        return self._figure(tuple(names))

    @classmethod
    @functools.lru_cache(maxsize=64)
    def _figure(cls, names: tuple):
        have = cls.have(names)
        return corruption_curves(have, model_titles(), corruption_titles={n: t for n, t, _ in CORRUPTIONS}) if have else None

    def update(self, names) -> list:
        return [self.text(names), self.figure(names)]


# ----------------------------------------------------------------------------- robustness lab
def robustness_panel(image: gr.Image, shown: gr.State):
    """Corrupt the current image (one slider per corruption, 0 = off) and re-run the shown models on it at once.
    Lays the panel out; returns (its bar charts, the function that wires its events, to be called after the
    main prediction's, so that on a new image the main prediction is queued first). Nothing runs while the
    panel is closed."""
    corruptions = [n for n, _, _ in CORRUPTIONS]
    titles, scales = ({n: t for n, t, _ in CORRUPTIONS}, {n: sc for n, _, sc in CORRUPTIONS})
    lab_open = gr.State(False)
    with gr.Accordion("Robustness lab: corrupt the image and see which model holds up", open=False,
                      elem_id="robustness") as lab:
        gr.Markdown("The same corruptions, at the same five severities, as the *Analysis* tab's accuracy curves "
                    "(in the spirit of CIFAR-100-C, Hendrycks & Dietterich 2019). They are applied to the 32x32 "
                    "image the models see; several at once are applied in the order listed.")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                sliders = []
                for i in range(0, len(corruptions), 3):
                    with gr.Row(equal_height=True):
                        sliders += [gr.Slider(0, 5, value=0, step=1, label=titles[n], info=scales[n],
                                              elem_id=f"sev-{n}", min_width=180) for n in corruptions[i:i + 3]]
                with gr.Row(equal_height=True):
                    seed = gr.Number(0, precision=0, minimum=0, label="Seed (noise, rotation direction, occluder place)",
                                     elem_id="robust-seed")
                    reset = gr.Button("All off", size="sm")
            with gr.Column(scale=2, min_width=300):
                with gr.Row(equal_height=True):
                    original = gr.Image(label="What the models see (32x32)", interactive=False, height=180,
                                        elem_id="robust-original", buttons=[])
                    corrupted = gr.Image(label="Corrupted", interactive=False, height=180, elem_id="robust-corrupted",
                                         buttons=[])
                summary = gr.Markdown(elem_id="robust-summary")
        with gr.Row(equal_height=True):
            bars = [gr.Plot(show_label=False, elem_id=f"robust-bars-{i}") for i in range(n_slots())]

    def run(payload, is_open, shown_names, seed_value, *severities):
        if payload is None or not is_open:
            return [gr.skip()] * (3 + len(bars))
        try:
            photo, _ = read_upload(payload)
        except gr.Error as e:  # the main prediction already shows the message as a pop-up
            return [None, None, f"⚠️ {e.message}"] + [None] * len(bars)
        models = shown_models(shown_names)
        r = HOST[0].corrupted(list(models), photo, dict(zip(corruptions, severities)), int(seed_value or 0))
        out = [r["original"], r["corrupted"], r["summary"]]
        for i, name in enumerate(list(models)[:len(bars)]):
            top = [(t["label"], t["probability"]) for t in r["models"][name]["top"]]
            out.append(topk_bars(top, name, f"{name}: top-5 on the corrupted image"))
        return out + [None] * (len(bars) - min(len(models), len(bars)))

    def wire():
        event = dict(fn=run, inputs=[image, lab_open, shown, seed, *sliders],
                     outputs=[original, corrupted, summary, *bars], preprocess=False, show_progress="minimal",
                     **PRIVATE, **ON_MODELS)
        lab.expand(lambda: True, None, lab_open, **PRIVATE).then(**event)
        lab.collapse(lambda: False, None, lab_open, **PRIVATE)
        gr.on([image.change, shown.change, seed.change, *[s.change for s in sliders]], trigger_mode="always_last",
              **event)
        reset.click(lambda: [0] * len(sliders), None, sliders, **PRIVATE)

    return bars, wire


# ----------------------------------------------------------------------------- live webcam
LIVE = dict(stream_every=0.05,  # a frame every 50 ms at most; the server only ever keeps a stream's newest frame
            time_limit=300,     # one stream runs up to 5 minutes (Record again to continue)...
            concurrency_id="webcam", concurrency_limit=2)  # ...and at most two at once, beside uploads
METER = RateMeter()


def webcam_view(shown: gr.State, start) -> list:
    gr.Markdown("Click the camera, allow access, then **Record**: every shown model's top-5 follows the picture "
                "live. Frames are reduced to the models' 32x32 input first, and a slow frame is simply skipped "
                "(the newest one always wins). For a single snapshot, use the camera of the *Compare* tab.")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=300):
            cam = gr.Image(sources=["webcam"], streaming=True, label="Webcam", elem_id="webcam", height=320,
                           webcam_options=gr.WebcamOptions(constraints={
                               "video": {"width": {"ideal": 320}, "height": {"ideal": 240}}}))
        with gr.Column(scale=3):
            status = gr.Markdown("Not streaming.", elem_id="live-status")
            with gr.Row(equal_height=True):
                labels = [gr.Label(num_top_classes=5, label=title(MODELS[start[i]]) if i < len(start) else "",
                                   visible=i < len(start), elem_id=f"live-{i}") for i in range(n_slots())]

    def frame(payload, names, request: gr.Request):
        if payload is None:
            return [gr.skip()] * (1 + len(labels))
        models = shown_models(names)
        path = payload if isinstance(payload, str) else None
        if isinstance(payload, dict) and not (payload.get("url") or "").startswith("data:"):
            path = payload.get("path")
        if path and not path.startswith("data:") and not serving.is_within(path, upload_roots()):
            return ["⚠️ Only frames streamed from the webcam can be used."] + [gr.skip()] * len(labels)
        try:
            tops, ms = HOST[0].live(list(models), payload)
        except ImageInputError as e:  # one bad frame: say so and keep streaming
            return [f"⚠️ {e}"] + [gr.skip()] * len(labels)
        rate = METER.tick(getattr(request, "session_hash", None) or "?")
        now = time.time()
        line = (f"Live · {rate:.1f} updates/s · last frame {ms:.0f} ms (decode + {len(tops)} models) · "
                f"{time.strftime('%H:%M:%S', time.localtime(now))}.{int(now * 1000) % 1000:03d} · frame {frame_id(payload)}")
        values = list(tops.values())[:len(labels)]
        return [line] + values + [gr.skip()] * (len(labels) - len(values))

    cam.stream(frame, [cam, shown], [status, *labels], preprocess=False, show_progress="hidden", **PRIVATE, **LIVE)
    return labels


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log.setLevel(logging.INFO)  # this app's own lines (checkpoints loaded, timings); libraries stay at WARNING
    if not CHECKPOINT_DIR.is_dir():
        sys.exit(f"cifar-compare cannot start: the checkpoint folder {CHECKPOINT_DIR} does not exist. Set "
                 f"CHECKPOINT_DIR, restore the shipped ones (git checkout -- checkpoints/) or train one: "
                 f"python scripts/train.py --model cnn9 --recipe cpu")
    if IN_PROCESS:
        from cifar_models.host import LocalModels
        host = LocalModels(CHECKPOINT_DIR)
    else:
        host = STARTING or ModelProcess.start(CHECKPOINT_DIR)
        try:
            host.wait_ready()
        except ModelProcessError as e:
            sys.exit(f"cifar-compare cannot start: {e}")
    models, failed = host.info["models"], host.info["failed"]
    if not models:
        reasons = "".join(f"\n- {n}: {why}" for n, why in failed.items())
        sys.exit(f"cifar-compare cannot start: no usable checkpoint in {CHECKPOINT_DIR}"
                 + (f" ({len(failed)} failed to load):{reasons}" if failed else " (the folder has none).")
                 + "\nRestore the shipped ones (git checkout -- checkpoints/) or train one: "
                   "python scripts/train.py --model cnn9 --recipe cpu")
    demo = build(host, load_reports(CHECKPOINT_DIR, names=list(models)))
    demo.launch(css=CSS, show_error=True, server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                max_file_size=serving.MAX_FILE_SIZE, state_session_capacity=serving.SESSION_CAPACITY,
                prevent_thread_lock=True)
    warm_up()
    demo.block_thread()


if __name__ == "__main__":
    main()
