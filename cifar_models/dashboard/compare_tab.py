"""The Compare tab: one image, every shown model's top-5 side by side, Grad-CAM heat maps on request, the
Robustness lab, and how each model was trained (cards and training curves).

The page has `n_slots` slots; slot i shows the i-th picked model, and a slot without a model is hidden.
Every function that fills the tab returns its outputs keyed by component."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ..common import limits
from ..common.meta import model_card, title
from ..common.images import open_image
from .catalog import agreement_line
from .lab_tab import LabPanel
from .plots import topk_bars, training_curves
from .requests import ON_HEATMAPS, ON_MODELS, PRIVATE, host_errors, read_upload
from .state import PageState


@dataclass
class Slot:
    """One model's column."""
    column: gr.Column
    heading: gr.Markdown
    bars: gr.Plot
    caption: gr.Markdown
    radio: gr.Radio  # the class whose heat map is shown
    cam: gr.Image


def slot_heading(page: PageState, names, i: int) -> str:
    return f"### {title(page.models[names[i]])}" if i < len(names) else ""


def slot_card(page: PageState, names, i: int) -> str:
    return f"### {title(page.models[names[i]])}\n" + model_card(page.models[names[i]]) if i < len(names) else ""


class CompareTab:
    def __init__(self, page: PageState, shown: gr.State):
        self.page, self.shown = page, shown
        start = page.start
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=300):
                self.image = gr.Image(value=page.examples[0] if page.examples else None, type="filepath",
                                      label=f"Image (up to {limits.MAX_UPLOAD_MB} MB)",
                                      sources=["upload", "webcam", "clipboard"], height=300)
                self.cam_on = gr.Checkbox(False, label="Show where each model looks (Grad-CAM heat maps)")
                if page.examples:
                    gr.Examples(examples=page.examples, inputs=self.image, examples_per_page=15,
                                label="Examples: CIFAR-100 test images and photos")
            with gr.Column(scale=5):
                self.agree = gr.Markdown("", elem_id="agreement")
                with gr.Row(equal_height=True):
                    self.slots = [self._slot(start, i) for i in range(page.n_slots)]
        self.lab = LabPanel(page, self.image, shown)
        gr.Markdown("## How they were trained")
        with gr.Row(equal_height=True):
            self.cards = [gr.Markdown(slot_card(page, start, i), visible=i < len(start), elem_id=f"card-{i}")
                          for i in range(page.n_slots)]
        with gr.Row(equal_height=True):
            self.curve_acc = gr.Plot(show_label=False, elem_id="curve-acc")  # figures: filled when a page loads
            self.curve_loss = gr.Plot(show_label=False, elem_id="curve-loss")

    def _slot(self, start, i: int) -> Slot:
        with gr.Column(min_width=260, visible=i < len(start)) as col:  # three side by side on a 1280 px screen
            heading = gr.Markdown(slot_heading(self.page, start, i), elem_id=f"heading-{i}")
            bars = gr.Plot(show_label=False, elem_id=f"bars-{i}")
            caption = gr.Markdown("")
            radio = gr.Radio(choices=[], visible=False, label="Heat map for class")
            cam = gr.Image(visible=False, show_label=False, height=280, elem_id=f"cam-{i}", interactive=False)
        return Slot(col, heading, bars, caption, radio, cam)

    # ------------------------------------------------------------------ what fills it
    @property
    def result_outputs(self) -> list:
        return [self.agree] + [c for s in self.slots for c in (s.bars, s.caption, s.radio)]

    def render(self, result: dict, names: list[str], cam_on: bool = False) -> dict:
        """A prediction's result as the tab's outputs: the agreement line, then per slot bars, caption, radio."""
        out = {self.agree: agreement_line(result, self.page.shown(names))}
        for i, slot in enumerate(self.slots):
            if i >= len(names):
                out.update({slot.bars: None, slot.caption: "", slot.radio: gr.Radio(choices=[], value=None,
                                                                                     visible=False)})
                continue
            r = result[names[i]]
            top = [(t["label"], t["probability"]) for t in r["top"]]
            shared = f" (batch of {result['batch']})" if result.get("batch", 1) > 1 else ""
            out[slot.bars] = topk_bars(top, names[i], "Top-5 classes")
            out[slot.caption] = (f"Superclass: **{r['superclass'].replace('_', ' ')}** · forward pass "
                                 f"{r['milliseconds']:.0f} ms{shared}")
            out[slot.radio] = gr.Radio(choices=[(c.replace("_", " "), c) for c, _ in top], value=top[0][0],
                                       visible=cam_on)
        return out

    @host_errors
    def show(self, payload, cam_on: bool, shown) -> dict:
        """UI event: the image changed (upload, drop, paste, webcam, example click)."""
        if payload is None:  # the image was cleared
            return {c: gr.skip() for c in self.result_outputs}
        image, notes = read_upload(payload, self.page.safe_roots)
        for note in notes:
            gr.Warning(note)
        names = list(self.page.shown(shown))
        return self.render(self.page.host.predict(image, names), names, cam_on)

    @host_errors
    def heat_maps(self, payload, cam_on: bool, shown, *classes, slots=None) -> dict:
        """Grad-CAM per slot for its chosen class, computed only when asked for (the image decoded once)."""
        names = list(self.page.shown(shown))
        slots = range(len(self.slots)) if slots is None else slots
        cams = [self.slots[i].cam for i in slots]
        if not cam_on or payload is None:
            return {c: gr.Image(value=None, visible=False) for c in cams}
        image, _ = read_upload(payload, self.page.safe_roots)
        return {cam: gr.Image(value=self.page.host.explain(names[i], image, c), visible=True)
                if i < len(names) and c else gr.Image(value=None, visible=False)
                for cam, i, c in zip(cams, slots, classes)}

    def first_view(self, names: tuple) -> dict:
        """The page's initial result (the first example), computed once per choice of models."""
        path = self.page.examples[0] if self.page.examples else None

        def make():
            from PIL import Image
            image = open_image(path)[0] if path else Image.new("RGB", (32, 32))
            return self.render(self.page.host.predict(image, list(names)), list(names))
        return self.page.figure(("first-view", names), make)

    def layout(self, names: list[str]) -> dict:
        """What follows the picker: columns, headings, cards, training curves."""
        out = {}
        for i, slot in enumerate(self.slots):
            out[slot.column] = gr.Column(visible=i < len(names))
            out[slot.heading] = slot_heading(self.page, names, i)
            out[self.cards[i]] = gr.Markdown(slot_card(self.page, names, i), visible=i < len(names))
        for metric, plot in (("acc", self.curve_acc), ("loss", self.curve_loss)):
            out[plot] = self.page.figure(("curves", tuple(names), metric), lambda metric=metric: training_curves(
                {n: self.page.models[n].meta.get("history", []) for n in names}, metric))
        return out | self.lab.layout(names)

    @property
    def layout_outputs(self) -> list:
        return ([c for s in self.slots for c in (s.column, s.heading)] + self.cards + [self.curve_acc, self.curve_loss]
                + self.lab.bars)

    # ------------------------------------------------------------------ events
    def redraw(self, event: gr.events.Dependency, **kw) -> gr.events.Dependency:
        """After `event`: the prediction for the current image, then its heat maps (only when asked for), so they
        never slow the prediction down."""
        radios, cams = [s.radio for s in self.slots], [s.cam for s in self.slots]
        inputs = [self.image, self.cam_on, self.shown]
        return event.then(self.show, inputs, self.result_outputs, preprocess=False, **kw, **ON_MODELS).then(
            self.heat_maps, inputs + radios, cams, preprocess=False, **kw, **ON_HEATMAPS)

    def wire(self) -> None:
        radios, cams = [s.radio for s in self.slots], [s.cam for s in self.slots]
        inputs = [self.image, self.cam_on, self.shown]
        self.image.change(self.show, inputs, self.result_outputs, preprocess=False, **PRIVATE, **ON_MODELS).then(
            self.heat_maps, inputs + radios, cams, preprocess=False, **PRIVATE, **ON_HEATMAPS)
        self.cam_on.change(lambda on: {r: gr.Radio(visible=on) for r in radios}, self.cam_on, radios,
                           **PRIVATE).then(self.heat_maps, inputs + radios, cams, preprocess=False, **PRIVATE,
                                           **ON_HEATMAPS)
        for i, slot in enumerate(self.slots):
            slot.radio.input(lambda p, on, s, c, i=i: self.heat_maps(p, on, s, c, slots=[i]), inputs + [slot.radio],
                             slot.cam, preprocess=False, **PRIVATE, **ON_HEATMAPS)
        self.lab.wire()
