"""The Robustness lab (in the Compare tab): corrupt the current image, one slider per corruption (0 = off),
and re-run the shown models on it at once. Nothing runs while the panel is closed."""
from __future__ import annotations

import gradio as gr

from ..common.corruption_specs import NAMES, TITLES, scale
from .plots import topk_bars
from .requests import ON_MODELS, PRIVATE, host_errors, read_upload
from .state import PageState

INTRO = ("The same corruptions, at the same five severities, as the *Analysis* tab's accuracy curves (in the "
         "spirit of CIFAR-100-C, Hendrycks & Dietterich 2019). They are applied to the 32x32 image the models "
         "see; several at once are applied in the order listed.")


class LabPanel:
    def __init__(self, page: PageState, image: gr.Image, shown: gr.State):
        self.page, self.image, self.shown = page, image, shown
        self.is_open = gr.State(False)
        with gr.Accordion("Robustness lab: corrupt the image and see which model holds up", open=False,
                          elem_id="robustness") as self.accordion:
            gr.Markdown(INTRO)
            with gr.Row(equal_height=False):
                with gr.Column(scale=3):
                    self._controls()
                with gr.Column(scale=2, min_width=300):
                    with gr.Row(equal_height=True):
                        self.original = gr.Image(label="What the models see (32x32)", interactive=False, height=180,
                                                 elem_id="robust-original", buttons=[])
                        self.corrupted = gr.Image(label="Corrupted", interactive=False, height=180,
                                                  elem_id="robust-corrupted", buttons=[])
                    self.summary = gr.Markdown(elem_id="robust-summary")
            with gr.Row(equal_height=True):
                self.bars = [gr.Plot(show_label=False, elem_id=f"robust-bars-{i}") for i in range(page.n_slots)]

    def _controls(self) -> None:
        self.sliders = []
        for i in range(0, len(NAMES), 3):
            with gr.Row(equal_height=True):
                self.sliders += [gr.Slider(0, 5, value=0, step=1, label=TITLES[n], info=scale(n), elem_id=f"sev-{n}",
                                           min_width=180) for n in NAMES[i:i + 3]]
        with gr.Row(equal_height=True):
            self.seed = gr.Number(0, precision=0, minimum=0, label="Seed (noise, rotation direction, occluder place)",
                                  elem_id="robust-seed")
            self.reset = gr.Button("All off", size="sm")

    @property
    def outputs(self) -> list:
        return [self.original, self.corrupted, self.summary, *self.bars]

    @host_errors
    def run(self, payload, is_open: bool, shown, seed, *severities) -> dict:
        if payload is None or not is_open:
            return {c: gr.skip() for c in self.outputs}
        try:
            photo, _ = read_upload(payload, self.page.safe_roots)
        except gr.Error as e:  # the main prediction already shows the message as a pop-up
            return {self.original: None, self.corrupted: None, self.summary: f"⚠️ {e.message}"} | {
                b: None for b in self.bars}
        names = list(self.page.shown(shown))
        r = self.page.host.corrupted(names, photo, dict(zip(NAMES, severities)), int(seed or 0))
        out = {self.original: r["original"], self.corrupted: r["corrupted"], self.summary: r["summary"]}
        for i, bars in enumerate(self.bars):
            if i < len(names):
                top = [(t["label"], t["probability"]) for t in r["models"][names[i]]["top"]]
                out[bars] = topk_bars(top, names[i], f"{names[i]}: top-5 on the corrupted image")
            else:
                out[bars] = None
        return out

    def layout(self, names: list[str]) -> dict:
        return {b: gr.Plot(visible=i < len(names)) for i, b in enumerate(self.bars)}

    def wire(self) -> None:
        """Called after the main prediction's events are wired, so that on a new image that one is queued first."""
        event = dict(fn=self.run, inputs=[self.image, self.is_open, self.shown, self.seed, *self.sliders],
                     outputs=self.outputs, preprocess=False, show_progress="minimal", **PRIVATE, **ON_MODELS)
        self.accordion.expand(lambda: True, None, self.is_open, **PRIVATE).then(**event)
        self.accordion.collapse(lambda: False, None, self.is_open, **PRIVATE)
        gr.on([self.image.change, self.shown.change, self.seed.change, *[s.change for s in self.sliders]],
              trigger_mode="always_last", **event)
        self.reset.click(lambda: {s: 0 for s in self.sliders}, None, self.sliders, **PRIVATE)
