"""The page: a header, the "Models shown" picker that every view follows, the three tabs, the `/predict` API,
and the warm-up that prepares, after launch, what a new page shows first.

    page = PageState(host, checkpoint_dir, reports, examples_dir, examples)
    demo = build(page)            # gr.Blocks, queue configured
    warm_up(page, views)          # background thread, once the app serves
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import gradio as gr

from ..common import limits
from ..common.hosts import select
from .analysis_tab import AnalysisTab
from .catalog import MAX_SHOWN, model_colors
from .compare_tab import CompareTab
from .plots import use_colors
from .requests import ON_MODELS, PRIVATE, host_errors, read_upload
from .state import PageState
from .webcam_tab import WebcamTab
from .your_images_tab import YourImagesTab

HEADER = ("# cifar-compare\nCIFAR-100 classifiers side by side: models trained from scratch and started from "
          "ImageNet weights, every checkpoint in the folder. Give them any picture and compare what they see.")
log = logging.getLogger("cifar_compare")


@dataclass
class Views:
    """The page's parts, as built: what the picker redraws and what the warm-up prepares."""
    compare: CompareTab
    webcam: WebcamTab
    analysis: AnalysisTab

    def layout(self, names: list[str]) -> dict:
        return self.compare.layout(names) | self.webcam.layout(names) | self.analysis.layout(names)

    @property
    def layout_outputs(self) -> list:
        return self.compare.layout_outputs + self.webcam.labels + self.analysis.layout_outputs


def failures_note(page: PageState) -> str:
    if not page.failed:
        return ""
    lines = [f"- **{n}**: {why}" for n, why in page.failed.items()]
    return (f"⚠️ {len(page.failed)} checkpoint(s) in `{page.checkpoint_dir}` could not be loaded; the others are "
            "served.\n" + "\n".join(lines))


def chooser(picker: gr.CheckboxGroup, shown: gr.State):
    """The picker's event: its new value, or the previous one back (with a message) when empty or too long."""
    def choose(picked, previous) -> dict:
        if not picked:
            gr.Warning("Pick at least one model.")
            picked = previous
        elif len(picked) > MAX_SHOWN:
            gr.Warning(f"At most {MAX_SHOWN} models side by side: untick one first.")
            picked = previous
        return {picker: picked, shown: picked}
    return choose


def predict_api(page: PageState):
    """The programmatic endpoint's function: top-5 of every loaded model (or the comma-separated `models`)."""
    @host_errors
    def predict(payload, models: str | None = None) -> dict:
        """Top-5 labels and probabilities of every loaded model for one image, as JSON keyed by checkpoint name,
        plus `agree` (all their top-1 the same). `models`: optional comma-separated checkpoint names."""
        image, notes = read_upload(payload, page.safe_roots)
        names = [n.strip() for n in (models or "").split(",") if n.strip()]
        try:
            select(page.models, names)
        except KeyError as e:
            raise gr.Error(e.args[0], title="Unknown model") from None
        for note in notes:
            gr.Warning(note)
        return page.host.predict(image, names or None)
    return predict


def _picker(page: PageState) -> tuple[gr.State, gr.CheckboxGroup]:
    start = page.start
    shown = gr.State(start)
    picker = gr.CheckboxGroup(choices=[(t, n) for n, t in page.titles().items()], value=start,
                              label=f"Models shown ({len(page.models)} loaded from {page.checkpoint_dir.name}/; pick "
                                    f"up to {MAX_SHOWN})", elem_id="picker", visible=len(page.models) > 1)
    return shown, picker


def _wire(demo: gr.Blocks, page: PageState, views: Views, shown: gr.State, picker: gr.CheckboxGroup,
          tabs: gr.Tabs) -> None:
    compare = views.compare
    compare.wire()
    views.webcam.wire()
    # The picker: every part of the page follows the choice (then the current image is run again). always_last,
    # on every step: ticks made while the page is being redrawn are not lost; the newest choice wins.
    last = dict(trigger_mode="always_last", **PRIVATE)
    redraw = picker.input(chooser(picker, shown), [picker, shown], [picker, shown], **last).then(
        views.layout, shown, views.layout_outputs, **last)
    compare.redraw(redraw, **last)
    demo.load(views.layout, shown, views.layout_outputs, **PRIVATE)  # the figures, made when a page first needs them
    if views.analysis.gallery is not None:
        views.analysis.gallery.wire(demo, compare.image, tabs)
    if page.examples:
        demo.load(lambda: compare.first_view(tuple(page.start)), None, compare.result_outputs, **PRIVATE, **ON_MODELS)
    # The programmatic endpoint: JSON only (gradio_client: client.predict(handle_file(p), api_name="/predict"),
    # optionally models="cnn9,efficientnet_b0").
    api_out, api_models = gr.JSON(visible=False), gr.Textbox(visible=False, label="models")
    gr.Button(visible=False).click(predict_api(page), [compare.image, api_models], api_out, preprocess=False,
                                   api_name="predict", **ON_MODELS)


def build(page: PageState) -> tuple[gr.Blocks, Views]:
    """The page over `page` (its host ready): the Blocks, queue configured, and its views."""
    use_colors(model_colors(page.models))
    with gr.Blocks(title="cifar-compare", delete_cache=limits.DELETE_CACHE) as demo:
        gr.Markdown(HEADER)
        gr.Markdown(failures_note(page), visible=bool(page.failed), elem_id="load-failures")
        shown, picker = _picker(page)
        with gr.Tabs() as tabs:
            with gr.Tab("Compare", id="compare"):
                compare = CompareTab(page, shown)
            with gr.Tab("Live webcam", id="webcam"):
                webcam = WebcamTab(page, shown)
            with gr.Tab("Your images", id="yours"):  # every shown model on a ZIP of your labelled photos
                yours = YourImagesTab(page, shown)
            with gr.Tab("Analysis", id="analysis"):
                analysis = AnalysisTab(page)
        views = Views(compare, webcam, analysis)
        yours.wire(compare.image, tabs)
        _wire(demo, page, views, shown, picker, tabs)
    demo.queue(**limits.QUEUE)
    return demo, views


def warm_up(page: PageState, views: Views) -> threading.Thread:
    """Nothing computed at start-up that can wait: once the app serves, a background thread prepares the first
    example's result and the figures that a new page shows, the backend's kernels for every batch shape (between
    requests only: a request waits for one small step at most), and the disagreement gallery."""
    start = page.start
    steps = [lambda: views.compare.first_view(tuple(start)), lambda: views.layout(start), page.host.warm_up]
    if views.analysis.gallery is not None:
        steps.append(lambda: views.analysis.gallery.items_for(views.analysis.gallery.pair))

    def run():
        t0 = time.perf_counter()
        try:
            for step in steps:
                step()
        except Exception as e:  # the models stopped meanwhile: requests will say so; nothing else to do here
            log.warning("warm-up stopped: %s", e)
            return
        log.info("warm-up done %.1f s after the app started serving (%d steps between requests)",
                 time.perf_counter() - t0, len(steps))

    thread = threading.Thread(target=run, name="warm-up", daemon=True)
    thread.start()
    return thread
