"""cifar-compare dashboard: one image, every CIFAR-100 model in the checkpoint folder, side by side.

    python app.py            # http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT honoured)
    CHECKPOINT_DIR=my_runs python app.py

Every checkpoint in CHECKPOINT_DIR (default checkpoints/) is loaded at start-up, whatever its name; a picker
chooses which 1-4 of them are shown (the folder's first four by default). Wiring only: the page is
cifar_models/dashboard/, the models cifar_models/serve/. The models run in their own process, started before
Gradio is imported so that both load at once; this process never imports torch. MODEL_PROCESS=0 keeps them
in this process. Predictions run through onnxruntime once the warm-up has exported each network (PyTorch
until then, and for heat maps); MODEL_BACKEND=torch keeps PyTorch for everything.
"""
from __future__ import annotations

import os
from pathlib import Path

from cifar_models.common.memory import limit_malloc_arenas
from cifar_models.dashboard.client import ModelProcess

limit_malloc_arenas()  # first, before any thread starts: glibc fixes its arena limit when the first thread needs one
HERE = Path(__file__).resolve().parent
CHECKPOINT_DIR = Path(os.environ.get("CHECKPOINT_DIR", HERE / "checkpoints"))
IN_PROCESS = os.environ.get("MODEL_PROCESS", "1") == "0"
# Started here, before `import gradio`, so that the models load while this process imports Gradio.
STARTING = (ModelProcess.start(CHECKPOINT_DIR) if __name__ == "__main__" and not IN_PROCESS and CHECKPOINT_DIR.is_dir()
            else None)

import logging  # noqa: E402  (after the model process is on its way)
import sys  # noqa: E402

from cifar_models.common import limits  # noqa: E402
from cifar_models.common.hosts import HostInfo, ModelHost, ModelProcessError  # noqa: E402
from cifar_models.common.reports import load_reports  # noqa: E402
from cifar_models.dashboard.page import PageState, build, warm_up  # noqa: E402
from cifar_models.dashboard.state import example_images  # noqa: E402

CSS = ".gradio-container {max-width: 1280px !important; margin: auto;}"
HOW_TO_GET_ONE = ("Restore the shipped ones (git checkout -- checkpoints/) or train one: "
                  "python scripts/train.py --model MODEL --recipe cpu (--help lists the models)")
log = logging.getLogger("cifar_compare")


def page_state(host: ModelHost, checkpoint_dir: Path = CHECKPOINT_DIR, info: HostInfo | None = None) -> PageState:
    """The page's state over a host: what it loaded (or, before it is ready, the catalog it is loading), their
    reports, the examples."""
    reports = load_reports(checkpoint_dir, names=list((info or host.info).models))
    return PageState(host, checkpoint_dir, reports, HERE / "examples", example_images(HERE / "examples"), info=info)


def start_host() -> ModelHost:
    """The models: in their own process (started at import; loading there still), or loaded here with
    MODEL_PROCESS=0."""
    if not CHECKPOINT_DIR.is_dir():
        sys.exit(f"cifar-compare cannot start: the checkpoint folder {CHECKPOINT_DIR} does not exist. Set "
                 f"CHECKPOINT_DIR, or: {HOW_TO_GET_ONE}")
    if IN_PROCESS:
        from cifar_models.serve.host import LocalModels
        return LocalModels(CHECKPOINT_DIR)
    return STARTING or ModelProcess.start(CHECKPOINT_DIR)


def wait_ready(host: ModelHost) -> None:
    """Until every checkpoint is loaded; the app stops with the reason when none could be."""
    try:
        if isinstance(host, ModelProcess):
            host.wait_ready()
    except ModelProcessError as e:
        sys.exit(f"cifar-compare cannot start: {e}")
    if not host.info.models:
        failed = host.info.failed
        reasons = "".join(f"\n- {n}: {why}" for n, why in failed.items())
        sys.exit(f"cifar-compare cannot start: no usable checkpoint in {CHECKPOINT_DIR}"
                 + (f" ({len(failed)} failed to load):{reasons}" if failed else " (the folder has none).")
                 + f"\n{HOW_TO_GET_ONE}")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log.setLevel(logging.INFO)  # this app's own lines (checkpoints loaded, timings); libraries stay at WARNING
    host = start_host()
    # The page is built from the catalog while the networks load, and again only if the load gave otherwise.
    catalog = host.wait_catalog() if isinstance(host, ModelProcess) else None
    early = None
    if catalog and catalog.models:
        page = page_state(host, info=catalog)
        early = (page, *build(page))
    wait_ready(host)
    if early and catalog == host.info:
        page, demo, views = early
    else:
        page = page_state(host)
        demo, views = build(page)
    demo.launch(css=CSS, show_error=True, server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                max_file_size=limits.MAX_FILE_SIZE, state_session_capacity=limits.SESSION_CAPACITY,
                prevent_thread_lock=True)
    warm_up(page, views)
    demo.block_thread()


if __name__ == "__main__":
    main()
