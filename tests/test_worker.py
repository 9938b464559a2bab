"""The dashboard's models in their own process (cifar_models/serve/worker.py, through dashboard/client.py): it answers exactly what the same
models answer in-process, passes errors back as the same exceptions, and goes away with the app."""
import shutil
import subprocess
import sys
import time

import pytest
from PIL import Image

from cifar_models.common.hosts import ModelHost, ModelInfo, ModelProcessError
from cifar_models.common.images import ImageInputError
from cifar_models.dashboard.client import ModelProcess
from cifar_models.serve.host import LocalModels
from conftest import ROOT

pytestmark = pytest.mark.slow  # every test here starts a model process


@pytest.fixture(scope="module")
def folder(trained_cnn, tmp_path_factory):
    out = tmp_path_factory.mktemp("worker")
    for suffix in (".json", ".safetensors"):
        shutil.copy(trained_cnn[0].with_suffix(suffix), out / f"cnn9{suffix}")
    (out / "broken.json").write_text("{ not json")
    return out


@pytest.fixture(scope="module")
def remote(folder):
    host = ModelProcess.start(folder)
    host.wait_ready(timeout=300)
    yield host
    host.close()


def test_the_model_process_answers_what_the_models_answer_here(folder, remote):
    local = LocalModels(folder)
    assert isinstance(remote, ModelHost) and isinstance(local, ModelHost)  # one typed interface, two implementations
    assert list(remote.info.models) == list(local.info.models) == ["cnn9"]
    info = remote.info.models["cnn9"]
    assert isinstance(info, ModelInfo) and info.name == "cnn9" and info.num_params == local.models["cnn9"].num_params
    assert "broken" in remote.info.failed and "broken" in remote.info.failed["broken"]
    assert remote.wait_catalog() == remote.info  # what the page was built from, before the networks loaded
    image = Image.open(ROOT / "examples" / "cifar" / "tiger_test422.png")
    there, here = remote.predict(image), local.predict(image)
    assert [t["label"] for t in there["cnn9"]["top"]] == [t["label"] for t in here["cnn9"]["top"]]
    assert [t["probability"] for t in there["cnn9"]["top"]] == pytest.approx(
        [t["probability"] for t in here["cnn9"]["top"]], abs=1e-6)
    lab = remote.corrupted(["cnn9"], image, {"gaussian_noise": 3}, seed=1)
    assert lab["corrupted"].size == lab["original"].size and "Gaussian noise" in lab["summary"]
    assert lab["models"]["cnn9"]["top"] == local.corrupted(["cnn9"], image, {"gaussian_noise": 3}, seed=1)["models"]["cnn9"]["top"]
    cam = remote.explain("cnn9", image, there["cnn9"]["top"][0]["label"])
    assert isinstance(cam, Image.Image) and min(cam.size) >= 256


def test_errors_come_back_as_the_same_exceptions(remote):
    image = Image.new("RGB", (40, 40))
    with pytest.raises(KeyError, match="no loaded model named 'nope'"):
        remote.predict(image, ["nope"])
    with pytest.raises(ImageInputError):
        remote.live(["cnn9"], {"url": "data:image/png;base64,bm90IGFuIGltYWdl"})  # "not an image"
    with pytest.raises(ValueError, match="unknown operation"):
        remote._call("__init__", "/")
    assert remote.predict(image)["cnn9"]["top"]  # and it keeps serving


def test_many_threads_at_once_each_get_their_own_answer(remote):
    from concurrent.futures import ThreadPoolExecutor

    images = [Image.new("RGB", (32, 32), (i * 8, 255 - i * 8, 128)) for i in range(24)]
    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(remote.predict, images))
    singles = [remote.predict(im) for im in images]
    assert [a["cnn9"]["top"][0]["label"] for a in answers] == [s["cnn9"]["top"][0]["label"] for s in singles]
    assert max(a["batch"] for a in answers) > 1  # concurrent requests were batched in the model process


def test_a_stopped_model_process_is_started_again_then_given_up(folder):
    host = ModelProcess.start(folder, restarts=1)
    host.wait_ready(timeout=300)
    image = Image.new("RGB", (32, 32))
    first = host.proc.pid
    host.proc.kill()  # as if it crashed: it is started again, and later calls are answered
    deadline = time.time() + 120
    while True:
        try:
            assert host.predict(image)["cnn9"]["top"]
            break
        except ModelProcessError as e:
            assert "try again" in str(e), e
            assert time.time() < deadline, "not restarted"
            time.sleep(0.2)
    assert host.proc.pid != first
    host.proc.kill()  # once more: beyond the restarts allowed, every call says so
    deadline = time.time() + 30
    while True:
        try:
            host.predict(image)
        except ModelProcessError as e:
            if "restart the app" in str(e):
                assert "stopped" in str(e)
                break
        assert time.time() < deadline, "calls to a dead model process did not fail"
        time.sleep(0.1)


def test_the_model_process_ends_with_the_app(folder):
    code = ("import sys, time; from cifar_models.dashboard.client import ModelProcess; "
            f"h = ModelProcess.start({str(folder)!r}); h.wait_ready(300); print(h.proc.pid, flush=True)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    pid = int(out.stdout.split()[-1])
    deadline = time.time() + 30
    while time.time() < deadline and _alive(pid):
        time.sleep(0.1)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "zombie" not in f.read()
    except FileNotFoundError:
        return False


def test_a_folder_without_usable_checkpoints_is_reported_not_hung(tmp_path):
    (tmp_path / "broken.json").write_text("{ not json")
    host = ModelProcess.start(tmp_path)
    info = host.wait_ready(timeout=300)
    assert info.models == {} and "broken" in info.failed
    host.close()


def test_waiting_for_the_catalog_of_a_child_that_died_does_not_hang(folder):
    host = ModelProcess.start(folder, restarts=0)
    host.proc.kill()  # long before it has imported torch, let alone sent its catalog
    t = time.perf_counter()
    assert host.wait_catalog(timeout=120) is None and time.perf_counter() - t < 30
    with pytest.raises(ModelProcessError):
        host.wait_ready(timeout=120)


def test_the_web_process_stays_without_torch_through_a_whole_page(tmp_path):
    # Every figure, the first example's result, the gallery and the Robustness lab's labels come from the model
    # process or from torch-free modules: building and filling the page with the shipped checkpoints (whose
    # reports have corruption figures) never imports torch in the web process.
    code = """
import sys, app
from cifar_models.dashboard.client import ModelProcess
from cifar_models.dashboard.page import build
host = ModelProcess.start(app.CHECKPOINT_DIR); host.wait_ready(300)
page = app.page_state(host)
demo, views = build(page)
views.layout(page.start)
views.compare.first_view(tuple(page.start))
assert views.analysis.gallery is not None
views.analysis.gallery.items_for(views.analysis.gallery.pair)
host.close()
print(sorted(m for m in ("torch", "torchvision", "timm") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_app_restarts_its_model_process_and_says_so_when_it_gives_up(folder, tmp_path):
    import os
    import signal
    from pathlib import Path

    import httpx

    from conftest import start_app
    from cifar_models.dashboard.client import RESTARTS

    proc, url = start_app(folder, tmp_path / "app.log")
    try:
        example = {"path": str(ROOT / "examples" / "cifar" / "tiger_test422.png")}

        def call():
            r = httpx.post(url + "gradio_api/call/predict", json={"data": [example, ""]}, timeout=30)
            return httpx.get(url + f"gradio_api/call/predict/{r.json()['event_id']}", timeout=120).text

        def model_process():
            kids = [int(c) for t in Path(f"/proc/{proc.pid}/task").iterdir() for c in (t / "children").read_text().split()]
            assert len(kids) == 1, kids
            return kids[0]

        for attempt in range(RESTARTS + 1):
            deadline = time.time() + 300
            while "event: complete" not in (out := call()):  # served (again, after each restart)
                assert time.time() < deadline, out
                assert "try again" in out, out
                time.sleep(0.5)
            os.kill(model_process(), signal.SIGKILL)
        deadline = time.time() + 60
        while "restart the app" not in (out := call()):  # beyond the restarts allowed: a clear message
            assert time.time() < deadline, out
            time.sleep(0.5)
        assert "event: error" in out and "The models are not available" in out, out
        assert httpx.get(url, timeout=30).status_code == 200  # the web process keeps serving
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(30)
    log = (tmp_path / "app.log").read_text()
    assert log.count("starting it again") == RESTARTS and "not restarted" in log
