"""The Live webcam tab: the camera streams, and every shown model's top-5 follows the picture.

Gradio's streaming image input posts a frame every `stream_every` seconds and keeps only a stream's newest
frame, so a slow frame is skipped, never queued. Each frame is decoded small in the model process
(`serve.lab.live_predictions`)."""
from __future__ import annotations

import time

import gradio as gr

from ..common import limits
from ..common.images import ImageInputError
from ..common.meta import title
from .requests import PRIVATE, host_errors, upload_roots
from .state import PageState
from .webcam import RateMeter, frame_id

LIVE = dict(stream_every=0.05,  # a frame every 50 ms at most; the server only ever keeps a stream's newest frame
            time_limit=300,     # one stream runs up to 5 minutes (Record again to continue)...
            concurrency_id="webcam", concurrency_limit=2)  # ...and at most two at once, beside uploads
INTRO = ("Click the camera, allow access, then **Record**: every shown model's top-5 follows the picture live. "
         "Frames are reduced to the models' 32x32 input first, and a slow frame is simply skipped (the newest one "
         "always wins). For a single snapshot, use the camera of the *Compare* tab.")


def frame_path(payload) -> str | None:
    """The file a streamed frame names, if any (a frame may also come inline as a data: URL)."""
    path = payload if isinstance(payload, str) else None
    if isinstance(payload, dict) and not (payload.get("url") or "").startswith("data:"):
        path = payload.get("path")
    return None if not path or path.startswith("data:") else path


class WebcamTab:
    def __init__(self, page: PageState, shown: gr.State):
        self.page, self.shown, self.meter = page, shown, RateMeter()
        start = page.start
        gr.Markdown(INTRO)
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=300):
                self.cam = gr.Image(sources=["webcam"], streaming=True, label="Webcam", elem_id="webcam", height=320,
                                    webcam_options=gr.WebcamOptions(constraints={
                                        "video": {"width": {"ideal": 320}, "height": {"ideal": 240}}}))
            with gr.Column(scale=3):
                self.status = gr.Markdown("Not streaming.", elem_id="live-status")
                with gr.Row(equal_height=True):
                    self.labels = [gr.Label(num_top_classes=5, label=title(page.models[start[i]]) if i < len(start)
                                            else "", visible=i < len(start), elem_id=f"live-{i}")
                                   for i in range(page.n_slots)]

    @host_errors
    def frame(self, payload, names, request: gr.Request) -> dict:
        if payload is None:
            return {c: gr.skip() for c in [self.status, *self.labels]}
        names = list(self.page.shown(names))
        path = frame_path(payload)
        if path and not limits.is_within(path, upload_roots(self.page.safe_roots)):
            return {self.status: "⚠️ Only frames streamed from the webcam can be used."}
        try:
            tops, ms = self.page.host.live(names, payload)
        except ImageInputError as e:  # one bad frame: say so and keep streaming
            return {self.status: f"⚠️ {e}"}
        rate = self.meter.tick(getattr(request, "session_hash", None) or "?")
        now = time.time()
        line = (f"Live · {rate:.1f} updates/s · last frame {ms:.0f} ms (decode + {len(tops)} models) · "
                f"{time.strftime('%H:%M:%S', time.localtime(now))}.{int(now * 1000) % 1000:03d} · frame "
                f"{frame_id(payload)}")
        return {self.status: line} | dict(zip(self.labels, list(tops.values())[:len(self.labels)]))

    def layout(self, names: list[str]) -> dict:
        return {label: gr.Label(value=None, label=title(self.page.models[names[i]]), visible=True) if i < len(names)
                else gr.Label(visible=False) for i, label in enumerate(self.labels)}

    def wire(self) -> None:
        self.cam.stream(self.frame, [self.cam, self.shown], [self.status, *self.labels], preprocess=False,
                        show_progress="hidden", **PRIVATE, **LIVE)
