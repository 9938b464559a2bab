"""Where the page's events queue, and what every event does with its input first: read the upload (only from Gradio's upload folder
or the app's examples), and turn "the models are not available" into a message on the page."""
from __future__ import annotations

import base64
import functools
import logging

import gradio as gr

from ..common import limits
from ..common.hosts import ModelProcessError
from ..common.images import ImageInputError, open_image
from ..common.memory import Trimmer

log = logging.getLogger("cifar_compare")
# Where events queue: predictions (many at once: their forward passes are batched in the model process), heat
# maps (heavier and rarer: one at a time, on their own slot). PRIVATE: not part of the public API.
ON_MODELS = dict(concurrency_id="models", concurrency_limit=limits.PREDICT_CONCURRENCY)
ON_HEATMAPS = dict(concurrency_id="heatmaps", concurrency_limit=limits.HEATMAP_CONCURRENCY)
PRIVATE = dict(api_visibility="private")
TRIMMER = Trimmer()  # this process decodes every upload: hand the freed memory back after bursts


def upload_roots(safe_roots: tuple = ()) -> tuple:
    """Gradio's upload folder and `safe_roots` (the app's examples): the only folders an image is read from."""
    from gradio.utils import get_upload_folder
    return (get_upload_folder(), *safe_roots)


def _data_url_bytes(url: str) -> bytes:
    if len(url) > limits.MAX_UPLOAD_MB * (4 << 20) // 3 + 1024:
        raise gr.Error(f"The image is larger than the {limits.MAX_UPLOAD_MB} MB limit.", title="Cannot use this image")
    return base64.b64decode(url.split(",", 1)[1])


def read_upload(payload, safe_roots: tuple = ()):
    """The raw image payload (preprocess=False) -> (PIL image, notes); gr.Error for anything unusable."""
    TRIMMER.touch()
    if payload is None:
        raise gr.Error("Please upload, drop, paste or snap an image first.")
    if isinstance(payload, dict):
        path, url = payload.get("path"), payload.get("url") or ""
        payload = _data_url_bytes(url) if not path and url.startswith("data:") else path
    if not payload:
        raise gr.Error("No image was received; please try again.")
    if not isinstance(payload, (bytes, bytearray)) and not limits.is_within(payload, upload_roots(safe_roots)):
        raise gr.Error("Only uploaded images and the app's examples can be used.", title="Cannot use this image")
    try:
        return open_image(payload)
    except ImageInputError as e:
        raise gr.Error(str(e), title="Cannot use this image") from None


def host_errors(fn):
    """An event handler whose models may be unavailable: the model process stopped (and is being restarted,
    or gave up) becomes a clear message on the page instead of a bare error; the page keeps serving."""
    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ModelProcessError as e:
            log.error("model process: %s", e)
            raise gr.Error(f"The models are not available: {e}.", title="Models stopped") from None
    return call
