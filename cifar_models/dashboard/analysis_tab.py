"""The Analysis tab: where each shown model fails, from the NAME.eval.json reports (scripts/evaluate.py):
per-class accuracy, reliability diagrams, confusions, the disagreement gallery for a pair chosen here, and
accuracy against corruption severity."""
from __future__ import annotations

import gradio as gr

from ..common.meta import title
from ..common.reports import contrast_pair
from ..common.stats import analysis_lines, wilson
from .catalog import confusions_table
from .plots import corruption_curves, per_class_accuracy, reliability_diagram
from .requests import PRIVATE, host_errors
from .state import PageState

CONFUSION_HEADERS = ["true class", "predicted as", "test images"]


class AnalysisTab:
    def __init__(self, page: PageState):
        self.page = page
        start, slots = page.start, range(page.n_slots)
        self.note = gr.Markdown(self.missing(start), elem_id="analysis-note")
        gr.Markdown("Test-set figures, computed by `scripts/evaluate.py` and loaded at start-up. Probabilities in "
                    "the dashboard are temperature-scaled (fitted on the validation split).")
        self.stats = gr.Markdown(self.stats_text(start), elem_id="analysis-stats")  # 95% intervals, McNemar
        self.per_class = gr.Plot(show_label=False, elem_id="per-class")
        with gr.Row(equal_height=True):
            self.reliability = [gr.Plot(show_label=False, elem_id=f"reliability-{i}", visible=self.has(start, i))
                                for i in slots]
        with gr.Row(equal_height=True):
            self.confusions = [gr.Dataframe(interactive=False, **self.confusion_table(start, i)) for i in slots]
        self.gallery = GalleryPanel(page) if len(page.with_images()) >= 2 else None
        self.corruption = CorruptionPanel(page)

    def has(self, names, i: int) -> bool:
        return i < len(names) and names[i] in self.page.reports

    def missing(self, names) -> str:
        lacking = [n for n in names if n not in self.page.reports]
        return ("No analysis file for " + ", ".join(f"`{n}`" for n in lacking) + ": run `python scripts/evaluate.py "
                "--checkpoint checkpoints/NAME` to add it." if lacking else "")

    def stats_text(self, names) -> str:
        """Each shown model's test top-1 with its 95% (Wilson) interval, and McNemar's test per pair."""
        return analysis_lines({n: self.page.reports[n] for n in names if n in self.page.reports}, self.page.titles())

    def confusion_table(self, names, i: int) -> dict:
        if not self.has(names, i):
            return dict(value=[], headers=CONFUSION_HEADERS, label="Most frequent confusions", visible=False)
        return dict(value=confusions_table(self.page.reports[names[i]]), headers=CONFUSION_HEADERS,
                    label=f"Most frequent confusions: {names[i]}", visible=True)

    def layout(self, names: list[str]) -> dict:
        reports, key = self.page.reports, tuple(names)
        have = {n: reports[n] for n in names if n in reports}
        out = {self.note: self.missing(names), self.stats: self.stats_text(names),
               self.per_class: self.page.figure(("per-class", key), lambda: per_class_accuracy(have) if have else None)}
        for i, plot in enumerate(self.reliability):
            figure = self.page.figure(("reliability", names[i]), lambda i=i: reliability_diagram(
                reports[names[i]], names[i])) if self.has(names, i) else None
            out[plot] = gr.Plot(figure, visible=self.has(names, i))
        out |= {table: gr.Dataframe(**self.confusion_table(names, i)) for i, table in enumerate(self.confusions)}
        return out | self.corruption.layout(names)

    @property
    def layout_outputs(self) -> list:
        return [self.note, self.stats, self.per_class, *self.reliability, *self.confusions, *self.corruption.outputs]


class GalleryPanel:
    """Test images on which a pair's top-1 differ: from the local test set when CIFAR-100 is at hand, else from
    the test images shipped in examples/. Click one to compare all shown models on it."""

    def __init__(self, page: PageState):
        self.page = page
        with_images = page.with_images()
        gr.Markdown("### Where two models disagree\nTest images on which the pair's top-1 differ, with raw "
                    "(uncalibrated) confidences: click one to compare all shown models on it.")
        self.pair = self.default_pair()
        choices = [(title(page.models[n]), n) for n in with_images]
        with gr.Row(equal_height=True):
            self.first = gr.Dropdown(choices, value=self.pair[0], label="Model A", elem_id="pair-a")
            self.second = gr.Dropdown(choices, value=self.pair[1], label="Model B", elem_id="pair-b")
        # Filled in when a page loads (from the warm-up's cache): reading the test set can wait.
        self.count = gr.Markdown("", elem_id="disagreement-count")
        self.items = gr.State([])
        self.gallery = gr.Gallery(label="Disagreements", columns=8, height=420, allow_preview=False,
                                  elem_id="disagreements")

    def default_pair(self) -> tuple:
        """The weakest and the strongest of the shown models with analysis files (`contrast_pair`), topped up
        from the other checkpoints with such files."""
        with_images = self.page.with_images()
        pair = contrast_pair(self.page.reports, self.page.start)
        return tuple(pair + [n for n in with_images if n not in pair][:2 - len(pair)])

    def items_for(self, pair: tuple) -> tuple[list, str]:
        a, b = pair
        if a == b:
            return [], "Pick two different models."

        def make():
            folders = (self.page.examples_dir / "disagreements", self.page.examples_dir / "cifar")
            items, differ, local = self.page.host.gallery(pair, folders)
            n = len(self.page.reports[a]["images"]["label"])
            return items, (f"`{a}` and `{b}` disagree on **{differ:,}** of {n:,} test images; {len(items)} shown"
                           + ("" if local else " (from the images shipped in examples/: set CIFAR100_DIR for all)")
                           + ".")
        return self.page.figure(("gallery", pair), make)

    @host_errors
    def refresh(self, a: str, b: str) -> dict:
        items, caption = self.items_for((a, b))
        return {self.gallery: items, self.items: items, self.count: caption}

    def wire(self, demo: gr.Blocks, image: gr.Image, tabs: gr.Tabs) -> None:
        outputs = [self.gallery, self.items, self.count]
        gr.on([self.first.input, self.second.input], self.refresh, [self.first, self.second], outputs, **PRIVATE)

        def pick(evt: gr.SelectData, items):  # a disagreement clicked: run it through the main comparison
            return {image: items[evt.index][0], tabs: gr.Tabs(selected="compare")}

        self.gallery.select(pick, self.items, [image, tabs], **PRIVATE)
        demo.load(lambda: self.refresh(*self.pair), None, outputs, **PRIVATE)


class CorruptionPanel:
    """Accuracy against severity for the shown models that have corruption figures in their NAME.eval.json."""

    def __init__(self, page: PageState):
        self.page = page
        gr.Markdown("## Robustness to corruptions")
        self.table = gr.Markdown(self.text(page.start), elem_id="corruption-table")
        self.plot = gr.Plot(show_label=False, elem_id="corruption-curves")
        self.outputs = [self.table, self.plot]

    def have(self, names) -> dict:
        return {n: self.page.reports[n] for n in names if self.page.reports.get(n, {}).get("corruptions")}

    def text(self, names) -> str:
        have = self.have(names)
        if not have:
            return ("No corruption figures for the shown models yet: run `python scripts/evaluate.py --checkpoint "
                    "checkpoints/NAME --corruptions` for each.")
        rows = ["| model | clean top-1 (same images; 95% CI) | mean corruption accuracy (mCA) | mCA / clean | "
                "test images |", "|---|---|---|---|---|"]
        titles = self.page.titles()
        for n, r in have.items():
            ev = r["corruption_eval"]
            lo, hi = wilson(round(ev["clean_top1"] * ev["test_images"]), ev["test_images"])
            rows.append(f"| {titles.get(n, n)} | {ev['clean_top1']:.1%} ({lo:.1%}–{hi:.1%}) | "
                        f"**{r['corruption_mca']:.1%}** | "
                        f"{r['corruption_mca'] / ev['clean_top1']:.0%} | {ev['test_images']:,} (seed {ev['seed']}) |")
        return ("Top-1 on test images corrupted on the fly (`scripts/evaluate.py --corruptions`): each corruption "
                "of the Robustness lab at severities 1-5; mCA is the mean over all of them.\n\n" + "\n".join(rows))

    def layout(self, names: list[str]) -> dict:
        have = self.have(names)
        figure = self.page.figure(("corruptions", tuple(names)),
                                  lambda: corruption_curves(have, self.page.titles()) if have else None)
        return {self.table: self.text(names), self.plot: figure}
