"""cifar-compare dashboard: one image, two CIFAR-100 models, side by side.

    python app.py            # http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT honoured)

UI wiring only: the models, the comparison and the figures live in cifar_models/.
"""
from __future__ import annotations

import base64
import functools
import os
import sys
import threading
import time
from pathlib import Path

import gradio as gr
import torch
from PIL import Image

from cifar_models import serving
from cifar_models.checkpoint import CheckpointError
from cifar_models.compare import (MODEL_NAMES, BatchedCompare, agreement_line, compare, confusions_table,
                                  disagreements, explain, load_models, load_reports, model_card, title)
from cifar_models.corruptions import CORRUPTIONS, scale
from cifar_models.corruptions import TITLES as CORRUPTION_TITLES
from cifar_models.images import ImageInputError, open_image
from cifar_models.plots import corruption_curves, per_class_accuracy, reliability_diagram, topk_bars, training_curves
from cifar_models.robustness import corrupted_comparison, robustness_summary, to_display
from cifar_models.webcam import RateMeter, frame_id, live_predictions

HERE = Path(__file__).resolve().parent
CHECKPOINT_DIR = Path(os.environ.get("CHECKPOINT_DIR", HERE / "checkpoints"))
CSS = ".gradio-container {max-width: 1280px !important; margin: auto;}"
MODELS: dict = {}  # name -> Classifier, loaded once at start-up


def model_titles() -> dict[str, str]:
    """Checkpoint name -> display title (from each model's registry entry)."""
    return {n: title(m) for n, m in MODELS.items()}
BATCHED: list = []  # the BatchedCompare over MODELS (built in `build`)
# Predictions: many requests decode their images at once; their forward passes are batched (serving.py).
ON_MODELS = dict(concurrency_id="models", concurrency_limit=serving.PREDICT_CONCURRENCY)
ON_HEATMAPS = dict(concurrency_id="heatmaps", concurrency_limit=serving.HEATMAP_CONCURRENCY)
SAFE_ROOTS = (HERE / "examples",)  # besides Gradio's upload cache: the only folders an image is read from


def example_images() -> list[str]:
    cifar = sorted(str(p) for p in (HERE / "examples" / "cifar").glob("*.png"))
    try:  # a few real photos that gradio ships as demo media (Apache-2.0 package)
        import gradio.media as media
        photos = [media.get_image(n) for n in ("lion.jpg", "cheetah.jpg", "tower.jpg")]
    except Exception:
        photos = []
    return cifar + [p for p in photos if Path(p).is_file()]


def read_upload(payload):
    """The raw image payload (preprocess=False) -> (PIL image, notes); gr.Error for anything unusable."""
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


def predict(payload) -> dict:
    """Top-5 labels and probabilities of both models for one image, as JSON."""
    image, notes = read_upload(payload)
    for note in notes:
        gr.Warning(note)
    return BATCHED[0](image)


def show(payload, cam_on: bool):
    """UI event: the agreement line, then per model a bar chart, a caption and the Grad-CAM class choice."""
    if payload is None:  # the image was cleared
        return [gr.skip()] * (1 + 3 * len(MODEL_NAMES))
    return render(predict(payload), cam_on)


def render(result: dict, cam_on: bool = False) -> list:
    out = [agreement_line(result, MODELS)]
    for name in MODEL_NAMES:
        r = result[name]
        top = [(t["label"], t["probability"]) for t in r["top"]]
        out.append(topk_bars(top, name, "Top-5 classes"))
        shared = f" (batch of {result['batch']})" if result.get("batch", 1) > 1 else ""
        out.append(f"Superclass: **{r['superclass'].replace('_', ' ')}** · forward pass {r['milliseconds']:.0f} ms{shared}")
        out.append(gr.Radio(choices=[(c.replace("_", " "), c) for c, _ in top], value=top[0][0], visible=cam_on))
    return out


def heat_maps(payload, cam_on: bool, *classes, names=MODEL_NAMES):
    """Grad-CAM per model for its chosen class, computed only when asked for (the image decoded once)."""
    if not cam_on or payload is None:
        return [gr.Image(value=None, visible=False) for _ in names]
    image, _ = read_upload(payload)
    return [gr.Image(value=explain(MODELS[n], image, c), visible=True) if c else gr.Image(value=None, visible=False)
            for n, c in zip(names, classes)]


@functools.lru_cache(maxsize=1)
def first_view(path) -> list:
    """The page's initial result (the first example), computed once; None warms the models up on a blank image."""
    image = open_image(path)[0] if path else Image.new("RGB", (32, 32))
    return render(BATCHED[0](image))


def build(models, reports: dict | None = None) -> gr.Blocks:
    MODELS.update(models)
    BATCHED[:] = [BatchedCompare(MODELS)]
    reports = reports or {}
    examples = example_images()
    # Nothing computed at start-up that can wait: the first example's result is filled in when a page loads
    # (computed once, by a background warm-up that also makes the models' first, slow forward pass).
    initial = [""] + [None, "", gr.Radio(visible=False)] * len(MODEL_NAMES)
    threading.Thread(target=first_view, args=(examples[0] if examples else None,), name="warm-up", daemon=True).start()
    histories = {n: m.meta["history"] for n, m in models.items()}

    with gr.Blocks(title="cifar-compare", delete_cache=serving.DELETE_CACHE) as demo:
        gr.Markdown("# cifar-compare\nTwo CIFAR-100 classifiers, side by side: a 9-layer CNN trained from scratch "
                    "and EfficientNet-B0 started from ImageNet weights. Give them any picture and compare what they see.")
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
                        agree = gr.Markdown(initial[0], elem_id="agreement")
                        outputs, radios, cams = [agree], [], []
                        with gr.Row(equal_height=True):
                            for i, name in enumerate(MODEL_NAMES):
                                with gr.Column(min_width=320):
                                    gr.Markdown(f"### {title(models[name])}")
                                    bars = gr.Plot(value=initial[1 + 3 * i], show_label=False, elem_id=f"bars-{name}")
                                    caption = gr.Markdown(initial[2 + 3 * i])
                                    radio = gr.Radio(choices=initial[3 + 3 * i].choices, value=initial[3 + 3 * i].value,
                                                     visible=False, label="Heat map for class")
                                    cams.append(gr.Image(visible=False, show_label=False, height=280,
                                                         elem_id=f"cam-{name}", interactive=False))
                                    radios.append(radio)
                                    outputs += [bars, caption, radio]
                wire_robustness = robustness_panel(models, image)
                gr.Markdown("## How they were trained")
                with gr.Row(equal_height=True):
                    for name in MODEL_NAMES:
                        with gr.Column(min_width=320):
                            gr.Markdown(f"### {title(models[name])}\n" + model_card(models[name]))
                with gr.Row(equal_height=True):
                    gr.Plot(training_curves(histories, "acc"), show_label=False, elem_id="curve-acc")
                    gr.Plot(training_curves(histories, "loss"), show_label=False, elem_id="curve-loss")
            with gr.Tab("Live webcam", id="webcam"):
                webcam_view(models)
            with gr.Tab("Analysis", id="analysis"):
                gallery = analysis_view(reports)
                corruption_view(reports)

        # Plain prediction on every image change (upload, drop, paste, webcam, example click); heat maps after it,
        # only when asked for, so they never slow the prediction down.
        image.change(show, [image, cam_on], outputs, preprocess=False, api_visibility="private", **ON_MODELS).then(
            heat_maps, [image, cam_on, *radios], cams, preprocess=False, api_visibility="private", **ON_HEATMAPS)
        cam_on.change(lambda on: [gr.Radio(visible=on)] * len(radios), cam_on, radios, api_visibility="private").then(
            heat_maps, [image, cam_on, *radios], cams, preprocess=False, api_visibility="private", **ON_HEATMAPS)
        for name, radio, cam in zip(MODEL_NAMES, radios, cams):
            radio.input(lambda p, on, c, n=name: heat_maps(p, on, c, names=(n,))[0], [image, cam_on, radio], cam,
                        preprocess=False, api_visibility="private", **ON_HEATMAPS)
        wire_robustness()
        if gallery is not None:
            def pick(evt: gr.SelectData):  # a disagreement clicked: run it through the main comparison
                return gallery[1][evt.index][0], gr.Tabs(selected="compare")

            gallery[0].select(pick, None, [image, tabs], api_visibility="private")
        if examples:
            demo.load(lambda: first_view(examples[0]), None, outputs, api_visibility="private", **ON_MODELS)
        # The programmatic endpoint: JSON only (gradio_client: client.predict(handle_file(p), api_name="/predict")).
        api_out = gr.JSON(visible=False)
        gr.Button(visible=False).click(predict, image, api_out, preprocess=False, api_name="predict", **ON_MODELS)
    demo.queue(**serving.QUEUE)
    return demo


def analysis_view(reports: dict):
    """Where each model fails, from the NAME.eval.json files. Returns (gallery, items) or None."""
    if set(reports) != set(MODEL_NAMES):
        gr.Markdown("No analysis files found in the checkpoint folder: run `python scripts/evaluate.py "
                    "--checkpoint checkpoints/NAME` for both models.")
        return None
    gr.Markdown("Test-set figures of both models, computed by `scripts/evaluate.py` and loaded at start-up. "
                "Probabilities in the dashboard are temperature-scaled (fitted on the validation split).")
    gr.Plot(per_class_accuracy(reports), show_label=False, elem_id="per-class")
    with gr.Row(equal_height=True):
        for name in MODEL_NAMES:
            gr.Plot(reliability_diagram(reports[name], name), show_label=False, elem_id=f"reliability-{name}")
    with gr.Row(equal_height=True):
        for name in MODEL_NAMES:
            gr.Dataframe(confusions_table(reports[name]), headers=["true class", "predicted as", "test images"],
                         label=f"Most frequent confusions: {name}", interactive=False)
    items = disagreements(reports, HERE / "examples" / "disagreements")
    if not items:
        return None
    gallery = gr.Gallery(items, label="Test images the two models disagree on, with raw (uncalibrated) confidences: click one to compare", columns=8,
                         height=420, allow_preview=False, elem_id="disagreements")
    return gallery, items


# ----------------------------------------------------------------------------- robustness lab
def robustness_panel(models: dict, image: gr.Image):
    """Corrupt the current image (one slider per corruption, 0 = off) and re-run every model on it at once.
    Lays the panel out; returns the function that wires its events, to be called after the main prediction's
    (so that on a new image the main prediction is queued first). Nothing runs while the panel is closed."""
    names = list(CORRUPTIONS)
    lab_open = gr.State(False)
    with gr.Accordion("Robustness lab: corrupt the image and see which model holds up", open=False,
                      elem_id="robustness") as lab:
        gr.Markdown("The same corruptions, at the same five severities, as the *Analysis* tab's accuracy curves "
                    "(in the spirit of CIFAR-100-C, Hendrycks & Dietterich 2019). They are applied to the 32x32 "
                    "image the models see; several at once are applied in the order listed.")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                sliders = []
                for i in range(0, len(names), 3):
                    with gr.Row(equal_height=True):
                        sliders += [gr.Slider(0, 5, value=0, step=1, label=CORRUPTION_TITLES[n], info=scale(n),
                                              elem_id=f"sev-{n}", min_width=180) for n in names[i:i + 3]]
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
            bars = [gr.Plot(show_label=False, elem_id=f"robust-bars-{n}") for n in models]

    def run(payload, is_open, seed_value, *severities):
        if payload is None or not is_open:
            return [gr.skip()] * (3 + len(models))
        try:
            photo, _ = read_upload(payload)
        except gr.Error as e:  # the main prediction already shows the message as a pop-up
            return [None, None, f"⚠️ {e.message}"] + [None] * len(models)
        r = corrupted_comparison(MODELS, photo, dict(zip(names, severities)), int(seed_value or 0))
        out = [to_display(r["original"]), to_display(r["corrupted"]), robustness_summary(r, model_titles())]
        for name in models:
            top = [(t["label"], t["probability"]) for t in r["models"][name]["top"]]
            out.append(topk_bars(top, name, f"{name}: top-5 on the corrupted image"))
        return out

    def wire():
        event = dict(fn=run, inputs=[image, lab_open, seed, *sliders], outputs=[original, corrupted, summary, *bars],
                  preprocess=False, show_progress="minimal", api_visibility="private", **ON_MODELS)
        lab.expand(lambda: True, None, lab_open, api_visibility="private").then(**event)
        lab.collapse(lambda: False, None, lab_open, api_visibility="private")
        gr.on([image.change, seed.change, *[s.change for s in sliders]], trigger_mode="always_last", **event)
        reset.click(lambda: [0] * len(sliders), None, sliders, api_visibility="private")

    return wire


# ----------------------------------------------------------------------------- live webcam
LIVE = dict(stream_every=0.05,  # a frame every 50 ms at most; the server only ever keeps a stream's newest frame
            time_limit=300,     # one stream runs up to 5 minutes (Record again to continue)...
            concurrency_id="webcam", concurrency_limit=2)  # ...and at most two at once, beside uploads
METER = RateMeter()


def webcam_view(models: dict) -> None:
    gr.Markdown("Click the camera, allow access, then **Record**: every model's top-5 follows the picture live. "
                "Frames are reduced to the models' 32x32 input first, and a slow frame is simply skipped "
                "(the newest one always wins). For a single snapshot, use the camera of the *Compare* tab.")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=300):
            cam = gr.Image(sources=["webcam"], streaming=True, label="Webcam", elem_id="webcam", height=320,
                           webcam_options=gr.WebcamOptions(constraints={
                               "video": {"width": {"ideal": 320}, "height": {"ideal": 240}}}))
        with gr.Column(scale=3):
            status = gr.Markdown("Not streaming.", elem_id="live-status")
            with gr.Row(equal_height=True):
                labels = [gr.Label(num_top_classes=5, label=model_titles().get(n, n), elem_id=f"live-{n}") for n in models]

    def frame(payload, request: gr.Request):
        if payload is None:
            return [gr.skip()] * (1 + len(labels))
        try:
            tops, ms = live_predictions(MODELS, payload)
        except ImageInputError as e:  # one bad frame: say so and keep streaming
            return [f"⚠️ {e}"] + [gr.skip()] * len(labels)
        rate = METER.tick(getattr(request, "session_hash", None) or "?")
        now = time.time()
        line = (f"Live · {rate:.1f} updates/s · last frame {ms:.0f} ms (decode + {len(tops)} models) · "
                f"{time.strftime('%H:%M:%S', time.localtime(now))}.{int(now * 1000) % 1000:03d} · frame {frame_id(payload)}")
        return [line] + [tops[n] for n in models]

    cam.stream(frame, cam, [status, *labels], preprocess=False, show_progress="hidden", api_visibility="private",
               **LIVE)


def corruption_view(reports: dict) -> None:
    """Accuracy against severity for every model that has corruption figures in its NAME.eval.json."""
    have = {n: r for n, r in reports.items() if r.get("corruptions")}
    gr.Markdown("## Robustness to corruptions")
    if not have:
        gr.Markdown("No corruption figures yet: run `python scripts/evaluate.py --checkpoint checkpoints/NAME "
                    "--corruptions` for each model.")
        return
    rows = ["| model | clean top-1 (same images) | mean corruption accuracy (mCA) | mCA / clean | test images |",
            "|---|---|---|---|---|"]
    for n, r in have.items():
        ev = r["corruption_eval"]
        rows.append(f"| {model_titles().get(n, n)} | {ev['clean_top1']:.1%} | **{r['corruption_mca']:.1%}** | "
                    f"{r['corruption_mca'] / ev['clean_top1']:.0%} | {ev['test_images']:,} (seed {ev['seed']}) |")
    gr.Markdown("Top-1 on test images corrupted on the fly (`scripts/evaluate.py --corruptions`): each corruption "
                "of the Robustness lab at severities 1-5; mCA is the mean over all of them.\n\n" + "\n".join(rows))
    gr.Plot(corruption_curves(have, model_titles()), show_label=False, elem_id="corruption-curves")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    try:
        models = load_models(CHECKPOINT_DIR)
    except CheckpointError as e:
        sys.exit(f"cifar-compare cannot start: {e}")
    build(models, load_reports(CHECKPOINT_DIR)).launch(
        css=CSS, show_error=True, server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        max_file_size=serving.MAX_FILE_SIZE)
