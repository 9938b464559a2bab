"""Gradio's own floor: the dashboard's /predict endpoint with nothing behind it. Same input component,
same raw (preprocess=False) payload, same queue settings and limits as app.py; it returns a constant.
`scripts/bench_app.py` starts it beside the real app and compares the two.

    python scripts/bare_app.py        # GRADIO_SERVER_NAME / GRADIO_SERVER_PORT honoured"""
import sys
from pathlib import Path

import gradio as gr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cifar_models.common import limits as serving  # noqa: E402  (no torch)

ONE = {"top": [{"label": "tiger", "probability": 1.0}], "superclass": "large_carnivores", "milliseconds": 0}
ANSWER = {"model_a": ONE, "model_b": ONE, "agree": True}  # the shape of the app's answer for two models


def predict(payload) -> dict:
    return ANSWER


with gr.Blocks(title="bare", delete_cache=serving.DELETE_CACHE) as demo:
    image = gr.Image(type="filepath", label="Image")
    out = gr.JSON(visible=False)
    gr.Button(visible=False).click(predict, image, out, preprocess=False, api_name="predict",
                                   concurrency_id="models", concurrency_limit=serving.PREDICT_CONCURRENCY)
demo.queue(**serving.QUEUE)

if __name__ == "__main__":
    demo.launch(max_file_size=serving.MAX_FILE_SIZE)
