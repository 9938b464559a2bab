"""cifar-compare dashboard: one image, two CIFAR-100 models, side by side.

    python app.py            # http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT honoured)

UI wiring only: the models, the comparison and the figures live in cifar_models/.
"""
from __future__ import annotations

import base64
import io
import os
import sys
from pathlib import Path

import gradio as gr
import torch

from cifar_models.checkpoint import CheckpointError
from cifar_models.compare import MODEL_NAMES, agreement_line, compare, load_models, model_card
from cifar_models.images import ImageInputError, open_image
from cifar_models.plots import topk_bars, training_curves

HERE = Path(__file__).resolve().parent
CHECKPOINT_DIR = Path(os.environ.get("CHECKPOINT_DIR", HERE / "checkpoints"))
TITLES = {"cnn9": "cnn9 · 9-layer CNN, from scratch", "efficientnet_b0": "EfficientNet-B0 · ImageNet-pretrained"}
CSS = ".gradio-container {max-width: 1280px !important; margin: auto;}"
MODELS: dict = {}  # name -> Classifier, loaded once at start-up


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
            payload = io.BytesIO(base64.b64decode(url.split(",", 1)[1]))
        else:
            payload = path
    if isinstance(payload, io.BytesIO):
        import tempfile
        with tempfile.NamedTemporaryFile(suffix=".img", delete=False) as f:
            f.write(payload.getvalue())
        payload = f.name
    try:
        return open_image(payload)
    except ImageInputError as e:
        raise gr.Error(str(e), title="Cannot use this image") from None


def predict(payload) -> dict:
    """Top-5 labels and probabilities of both models for one image, as JSON."""
    image, notes = read_upload(payload)
    for note in notes:
        gr.Warning(note)
    return compare(MODELS, image)


def show(payload):
    """UI event: the agreement line, then per model a bar chart and a caption."""
    if payload is None:  # the image was cleared
        return [gr.skip()] * (1 + 2 * len(MODEL_NAMES))
    return render(predict(payload))


def render(result: dict) -> list:
    out = [agreement_line(result)]
    for name in MODEL_NAMES:
        r = result[name]
        top = [(t["label"], t["probability"]) for t in r["top"]]
        out.append(topk_bars(top, name, "Top-5 classes"))
        out.append(f"Superclass: **{r['superclass'].replace('_', ' ')}** · forward pass {r['milliseconds']:.0f} ms")
    return out


def build(models) -> gr.Blocks:
    MODELS.update(models)
    examples = example_images()
    first = compare(models, open_image(examples[0])[0]) if examples else None
    initial = render(first) if first else [""] + [None, ""] * len(MODEL_NAMES)
    histories = {n: m.meta["history"] for n, m in models.items()}

    with gr.Blocks(title="cifar-compare") as demo:
        gr.Markdown("# cifar-compare\nTwo CIFAR-100 classifiers, side by side: a 9-layer CNN trained from scratch "
                    "and EfficientNet-B0 fine-tuned from ImageNet. Give them any picture and compare what they see.")
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=300):
                image = gr.Image(value=examples[0] if examples else None, type="filepath", label="Image",
                                 sources=["upload", "webcam", "clipboard"], height=300)
                if examples:
                    gr.Examples(examples=examples, inputs=image, label="Examples: CIFAR-100 test images and photos",
                                examples_per_page=15)
            with gr.Column(scale=5):
                agree = gr.Markdown(initial[0], elem_id="agreement")
                outputs = [agree]
                with gr.Row(equal_height=True):
                    for i, name in enumerate(MODEL_NAMES):
                        with gr.Column(min_width=320):
                            gr.Markdown(f"### {TITLES[name]}")
                            bars = gr.Plot(value=initial[1 + 2 * i], show_label=False, elem_id=f"bars-{name}")
                            caption = gr.Markdown(initial[2 + 2 * i])
                            outputs += [bars, caption]
        gr.Markdown("## How they were trained")
        with gr.Row(equal_height=True):
            for name in MODEL_NAMES:
                with gr.Column(min_width=320):
                    gr.Markdown(f"### {TITLES[name]}\n" + model_card(models[name]))
        with gr.Row(equal_height=True):
            gr.Plot(training_curves(histories, "acc"), show_label=False, elem_id="curve-acc")
            gr.Plot(training_curves(histories, "loss"), show_label=False, elem_id="curve-loss")

        # The UI runs whenever the image changes (upload, drop, paste, webcam, example click).
        image.change(show, image, outputs, preprocess=False, api_visibility="private")
        # The programmatic endpoint: JSON only (gradio_client: client.predict(handle_file(p), api_name="/predict")).
        api_out = gr.JSON(visible=False)
        gr.Button(visible=False).click(predict, image, api_out, preprocess=False, api_name="predict")
    # One request at a time: each forward pass already uses every core of a small CPU.
    demo.queue(default_concurrency_limit=1, max_size=64)
    return demo


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    try:
        models = load_models(CHECKPOINT_DIR)
    except CheckpointError as e:
        sys.exit(f"cifar-compare cannot start: {e}")
    build(models).launch(css=CSS, show_error=True)
