"""The live webcam, on the web process's side: which frame a result belongs to, and how many updates a
second a browser session gets. (The frame is decoded by `common.images.frame_image` and run through the
models by `serve.lab.live_predictions`.)

Gradio's streaming image input posts a JPEG frame every `stream_every` seconds; the server keeps
only the newest frame of a stream (each post replaces the last one not yet processed), so a slow
frame never builds a backlog. Per frame the work is kept tiny: the JPEG is decoded at reduced size
by the decoder itself (DCT scaling, `Image.draft`), then becomes the same 32 px CIFAR-like image as
any upload, and goes through each model once.
"""
from __future__ import annotations

import hashlib
import threading
import time
from collections import deque


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
