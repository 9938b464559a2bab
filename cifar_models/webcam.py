"""The dashboard's live webcam: decode one streamed frame small and fast, run it through every model.

Gradio's streaming image input posts a JPEG frame every `stream_every` seconds; the server keeps
only the newest frame of a stream (each post replaces the last one not yet processed), so a slow
frame never builds a backlog. Per frame the work is kept tiny: the JPEG is decoded at reduced size
by the decoder itself (DCT scaling, `Image.draft`), then becomes the same 32 px CIFAR-like image as
any upload, and goes through each model once.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import io
import threading
import time
from collections import deque
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .images import ImageInputError


def frame_image(payload, min_side: int = 64) -> Image.Image:
    """A streamed frame (a dict with a `data:` URL or a `path`, raw bytes, or a path) -> an RGB PIL image
    whose shorter side is at least `min_side` (decoded at reduced size when the format allows it).
    Raises ImageInputError when the frame is missing or cannot be decoded."""
    data = payload
    if isinstance(payload, dict):
        url = payload.get("url") or ""
        data = url if url.startswith("data:") else payload.get("path")
    if isinstance(data, str) and data.startswith("data:"):
        try:
            data = base64.b64decode(data.split(",", 1)[1], validate=False)
        except (IndexError, binascii.Error, ValueError):
            raise ImageInputError("The webcam frame is not a valid data URL.") from None
    elif isinstance(data, (str, Path)):
        path = Path(data)
        if not path.is_file():
            raise ImageInputError("The webcam frame did not arrive.")
        data = path.read_bytes()
    if not data:
        raise ImageInputError("The webcam frame is empty.")
    try:
        img = Image.open(io.BytesIO(data))
        img.draft("RGB", (min_side, min_side))  # JPEG: decode at 1/2, 1/4 or 1/8 scale, never below min_side
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageInputError(f"The webcam frame could not be decoded ({e}).") from None
    return img.convert("RGB")


def frame_id(payload) -> str:
    """A short fingerprint of a streamed frame (md5 of its data URL or path), so a client can tell which of
    the frames it sent a result belongs to (and so how old that frame was)."""
    key = (payload.get("url") or payload.get("path") or "") if isinstance(payload, dict) else str(payload)
    return hashlib.md5(key.encode()).hexdigest()[:8]


class RateMeter:
    """Updates per second over the last `window` seconds, per key (a browser session)."""

    def __init__(self, window: float = 3.0, max_keys: int = 256):
        self.window, self.max_keys = window, max_keys
        self._times: dict[str, deque] = {}
        self._lock = threading.Lock()

    def tick(self, key: str, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            if key not in self._times and len(self._times) >= self.max_keys:  # forget the stalest session
                del self._times[min(self._times, key=lambda k: self._times[k][-1])]
            q = self._times.setdefault(key, deque())
            q.append(now)
            while q and q[0] < now - self.window:
                q.popleft()
            span = q[-1] - q[0]
            return (len(q) - 1) / span if span > 0 else 0.0


def live_predictions(models: dict, payload, k: int = 5) -> tuple[dict, float]:
    """One frame through every model: ({name: {label: probability}} for gr.Label, milliseconds for
    decode + all models). Raises ImageInputError for a frame that cannot be decoded."""
    from .compare import compare  # torch: only in the process that holds the models

    t0 = time.perf_counter()
    result = compare(models, frame_image(payload), k=k)
    labels = {name: {t["label"].replace("_", " "): t["probability"] for t in result[name]["top"]} for name in models}
    return labels, (time.perf_counter() - t0) * 1000
