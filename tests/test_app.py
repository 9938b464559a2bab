"""The dashboard, driven from outside: gradio_client for the API and bad input, Playwright for the page."""
import io
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, chromium_or_skip, new_page
from cifar_models.dashboard.launch import free_port

gradio_client = pytest.importorskip("gradio_client")
pytestmark = pytest.mark.slow  # every test here drives a running app
from gradio_client import Client, handle_file  # noqa: E402

CHECKPOINTS = Path(os.environ.get("CHECKPOINT_DIR", ROOT / "checkpoints"))
SHIPPED = sorted(p.stem for p in CHECKPOINTS.glob("*.safetensors"))  # the page shows them all (up to four)


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    # The default listening address must be loopback (test_listens_on_loopback_only): the launcher leaves it unset.
    from cifar_models.dashboard.launch import AppProcess, AppStartError

    app = AppProcess.start(ROOT / "app.py", tmp_path_factory.mktemp("app") / "app.log", CHECKPOINT_DIR=str(CHECKPOINTS))
    try:
        app.wait_listening()
    except AppStartError as e:
        pytest.fail(str(e))
    yield app.url
    assert app.proc.poll() is None, "the app died during the tests"
    app.stop()


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


def save(tmp_path, name, img, **kw) -> str:
    path = tmp_path / name
    img.save(path, **kw)
    return str(path)


def check_result(r):
    for name in ("cnn9", "efficientnet_b0"):
        top = r[name]["top"]
        probs = [t["probability"] for t in top]
        assert len(top) == 5 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert r[name]["superclass"] and r[name]["milliseconds"] > 0
    assert isinstance(r["agree"], bool)


def test_predict_returns_five_sorted_labels_per_model(client):
    check_result(client.predict(handle_file(str(ROOT / "examples" / "cifar" / "tiger_test422.png")),
                                api_name="/predict"))


def _bad_files(tmp_path):
    photo = Image.effect_noise((300, 200), 80).convert("RGB")
    jpeg = io.BytesIO()
    photo.save(jpeg, "JPEG")
    (tmp_path / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (tmp_path / "text.jpg").write_text("this is a text file, not a picture\n")
    (tmp_path / "empty.png").write_bytes(b"")
    Image.new("L", (10_000, 10_000)).save(tmp_path / "bomb.png")  # 100 Mpx > Pillow's 89 Mpx limit
    return {"text.jpg": "not an image", "truncated.jpg": "damaged or truncated", "empty.png": "empty",
            "bomb.png": "too large"}


def test_bad_files_get_clear_messages_and_the_app_keeps_serving(client, tmp_path):
    good = handle_file(str(ROOT / "examples" / "cifar" / "apple_test9.png"))
    for name, message in _bad_files(tmp_path).items():
        with pytest.raises(Exception) as e:
            client.predict(handle_file(str(tmp_path / name)), api_name="/predict")
        assert message in str(e.value), (name, str(e.value))
        check_result(client.predict(good, api_name="/predict"))


def test_unusual_but_valid_images_are_classified(client, tmp_path):
    base = Image.effect_noise((120, 90), 70).convert("RGB")
    frames = [Image.new("RGB", (64, 64), c) for c in ("red", "green", "blue")]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    files = {
        "anim.gif": str(gif),
        "cmyk.jpg": save(tmp_path, "cmyk.jpg", base.convert("CMYK")),
        "16bit.png": save(tmp_path, "16bit.png", Image.fromarray(
            (np.arange(90 * 120, dtype=np.uint16).reshape(90, 120) * 7))),
        "rgba.png": save(tmp_path, "rgba.png", base.convert("RGBA")),
    }
    for name, path in files.items():
        check_result(client.predict(handle_file(path), api_name="/predict"))


def test_exif_orientation_is_applied_like_a_photo_viewer(client, tmp_path):
    src = Image.open(ROOT / "examples" / "cifar" / "tiger_test422.png").resize((96, 96))
    upright = save(tmp_path, "upright.png", src)
    exif = Image.Exif()
    exif[0x0112] = 8  # the viewer rotates 90 degrees counter-clockwise... so store it rotated the other way
    rotated = save(tmp_path, "rotated.jpg", src.transpose(Image.Transpose.ROTATE_270), exif=exif, quality=100)
    a = client.predict(handle_file(upright), api_name="/predict")
    b = client.predict(handle_file(rotated), api_name="/predict")
    assert [t["label"] for t in a["cnn9"]["top"][:1]] == [t["label"] for t in b["cnn9"]["top"][:1]]


def _bench():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_app", ROOT / "scripts" / "bench_app.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_twenty_clients_at_once_with_bad_files_are_all_served(app_url, tmp_path):
    # The benchmark's load, smaller: 20 clients x 2 requests at once, valid photos mixed with bad files and
    # uploads over the size limit. Every valid photo answered, every bad file its own message, app still up.
    from cifar_models.common.limits import MAX_UPLOAD_MB

    bench = _bench()
    mix = bench.make_files(tmp_path, MAX_UPLOAD_MB)
    assert {k for _, k, _ in mix} == {"ok", "bad", "oversize"}
    out = bench.load(app_url, mix, clients=20, per_client=2, deadline=480)  # ~10 s on an idle 2-core machine
    assert out["requests"] == 40 and out["errors"] == [], out["errors"]
    check_result(Client(app_url, verbose=False).predict(handle_file(mix[0][0]), api_name="/predict"))


def test_concurrent_requests_share_forward_passes(app_url):
    path = str(ROOT / "examples" / "cifar" / "castle_test49.png")

    def one(_):
        return Client(app_url, verbose=False).predict(handle_file(path), api_name="/predict")

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, range(20)))
    for r in results:
        check_result(r)
        for name in ("cnn9", "efficientnet_b0"):  # batching does not change an image's answer (up to rounding)
            assert [t["label"] for t in r[name]["top"]] == [t["label"] for t in results[0][name]["top"]]
            assert np.allclose([t["probability"] for t in r[name]["top"]],
                               [t["probability"] for t in results[0][name]["top"]], atol=1e-4)
    assert max(r["batch"] for r in results) > 1, [r["batch"] for r in results]


def test_upload_over_the_limit_is_refused_with_the_limit(app_url, tmp_path):
    import httpx

    from cifar_models.common.limits import MAX_UPLOAD_MB

    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff" * ((MAX_UPLOAD_MB << 20) + 1))
    with open(big, "rb") as f:
        r = httpx.post(app_url + "gradio_api/upload", files={"files": ("big.jpg", f)}, timeout=60)
    assert r.status_code == 413 and f"maximum allowed size of {MAX_UPLOAD_MB << 20} bytes" in r.text
    with pytest.raises(ValueError, match="exceeds the maximum file size"):  # the client checks it first too
        Client(app_url, verbose=False).predict(handle_file(str(big)), api_name="/predict")


def _call(app_url, payload) -> str:
    """POST one raw /predict payload (no gradio_client) and return the event stream's text."""
    import httpx

    r = httpx.post(app_url + "gradio_api/call/predict", json={"data": [payload, ""]}, timeout=30)  # image, models
    r.raise_for_status()
    return httpx.get(app_url + f"gradio_api/call/predict/{r.json()['event_id']}", timeout=60).text


def test_no_file_outside_uploads_and_examples_can_be_read(app_url):
    import httpx

    secret = str(ROOT / "README.md")  # an image would do as well: it must not be opened at all
    for payload in (secret, {"path": secret}, {"path": secret, "meta": {"_type": "gradio.FileData"}},
                    {"path": "/etc/hostname"}, {"path": str(ROOT / "examples" / ".." / "README.md")}):
        out = _call(app_url, payload)
        assert "event: error" in out and "not an image" not in out and "not found" not in out, (payload, out)
    # A shipped example is allowed (the gallery and example clicks use these).
    out = _call(app_url, {"path": str(ROOT / "examples" / "cifar" / "tiger_test422.png")})
    assert "event: complete" in out and "efficientnet_b0" in out, out
    for path in (ROOT / "app.py", ROOT / "checkpoints" / "cnn9.json", Path("/etc/hostname")):
        r = httpx.get(app_url + f"gradio_api/file={path}", timeout=30)
        assert r.status_code in (403, 404), (path, r.status_code)


def test_listens_on_loopback_only(app_url):
    port = int(app_url.rstrip("/").rsplit(":", 1)[1])
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if Path(table).exists():
            for line in Path(table).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    listening.add(local.rsplit(":", 1)[0])
    if not listening:
        pytest.skip("no /proc/net/tcp here")
    assert listening <= {"0100007F", "00000000000000000000000001000000"}, listening  # 127.0.0.1 / ::1


def test_empty_checkpoint_folder_stops_with_one_clear_message(tmp_path):
    env = dict(os.environ, CHECKPOINT_DIR=str(tmp_path), GRADIO_SERVER_PORT=str(free_port()))
    out = subprocess.run([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=float(os.environ.get("APP_START_TIMEOUT", 600)))
    assert out.returncode != 0
    assert f"no usable checkpoint in {tmp_path} (the folder has none)" in out.stderr and "scripts/train.py" in out.stderr
    assert "Traceback" not in out.stderr


def test_only_broken_checkpoints_stop_with_each_reason(tmp_path):
    for f in CHECKPOINTS.glob("*"):
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "efficientnet_b0.json").write_text("{ not json")
    for weights in tmp_path.glob("*.safetensors"):  # cnn9's and every other shipped checkpoint's but B0's
        if weights.stem != "efficientnet_b0":
            weights.write_bytes(b"not weights")
    env = dict(os.environ, CHECKPOINT_DIR=str(tmp_path), GRADIO_SERVER_PORT=str(free_port()))
    out = subprocess.run([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=float(os.environ.get("APP_START_TIMEOUT", 600)))
    assert out.returncode != 0 and "no usable checkpoint" in out.stderr
    assert "efficientnet_b0.json is not valid JSON" in out.stderr and "cnn9.safetensors does not match" in out.stderr
    assert "Traceback" not in out.stderr


def test_browser_shows_both_bar_charts_and_both_curves(app_url, tmp_path):
    chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser, page = new_page(p)
        page.goto(app_url, wait_until="load", timeout=120_000)
        shown = "() => ['#agreement', '#bars-0', '#bars-1'].map(s => document.querySelector(s)?.innerText).join('|')"
        # The first example's result is filled in once the page has loaded; wait for it, then upload another.
        page.wait_for_function("document.querySelector('#agreement')?.innerText.includes('say')", timeout=120_000)
        before = page.evaluate(shown)
        page.locator("input[type=file]").first.set_input_files(str(ROOT / "examples" / "cifar" / "dolphin_test164.png"))
        page.wait_for_function(f"({shown})() !== {before!r}", timeout=60_000)
        for plot_id in ("bars-0", "bars-1", "curve-acc", "curve-loss"):  # drawn (a plot may be redrawn meanwhile)
            page.wait_for_function(f"document.querySelector('#{plot_id} .js-plotly-plot')"
                                   f"?.getBoundingClientRect().height > 100", timeout=30_000)
        page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
        assert (tmp_path / "app.png").stat().st_size > 10_000

        # Grad-CAM on request: both heat maps appear once the box is ticked.
        page.get_by_label("Show where each model looks").check()
        for slot in (0, 1):
            page.locator(f"#cam-{slot} img").first.wait_for(state="visible", timeout=60_000)
            assert page.locator(f"#cam-{slot} img").first.bounding_box()["height"] > 100
        page.screenshot(path=str(tmp_path / "gradcam.png"), full_page=True)

        # The analysis view: per-class chart and both reliability diagrams rendered.
        page.get_by_role("tab", name="Analysis").click()
        for plot_id in ("per-class", "reliability-0", "reliability-1"):
            plot = page.locator(f"#{plot_id} .js-plotly-plot").first
            plot.wait_for(state="visible", timeout=30_000)
            assert plot.bounding_box()["height"] > 100, plot_id
        page.screenshot(path=str(tmp_path / "analysis.png"), full_page=True)
        # Clicking a disagreement runs it through the main comparison.
        before = page.evaluate(shown)
        page.locator("#disagreements .thumbnail-item").first.wait_for(state="visible", timeout=60_000)
        page.locator("#disagreements .thumbnail-item").first.click()
        page.wait_for_function(f"({shown})() !== {before!r}", timeout=60_000)
        assert page.get_by_role("tab", name="Compare").get_attribute("aria-selected") == "true"
        browser.close()


# Updates per second the live webcam must reach in the browser (the issue asks for >= 5 on a 2-core CPU);
# lower it only on a machine known to be overloaded, and say so.
LIVE_MIN_UPDATES = float(os.environ.get("LIVE_MIN_UPDATES_PER_S", 5))


def test_browser_robustness_lab_and_live_webcam(app_url):
    """A corruption control re-runs both models on the corrupted image; the webcam streams Chromium's fake
    camera and every model's top-5 follows it live, several times a second, always on a fresh frame."""
    chromium_or_skip()
    import hashlib
    import json
    import statistics

    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser, page = new_page(p, fake_camera=True)
        page.goto(app_url, wait_until="load")

        # --- Robustness lab: upload, open the lab, then corrupt; both models' bars must change, the image differ.
        shown = "() => document.querySelector('#agreement')?.innerText"
        # the first example's result arrives after the page has loaded: wait for it before taking "before"
        page.wait_for_function("document.querySelector('#agreement')?.innerText.includes('say')", timeout=120_000)
        before = page.evaluate(shown)
        page.locator("input[type=file]").first.set_input_files(str(ROOT / "examples" / "cifar" / "tiger_test422.png"))
        page.wait_for_function(f"({shown})() !== {json.dumps(before)}", timeout=120_000)
        page.get_by_text("Robustness lab").click()
        summary = "() => document.querySelector('#robust-summary')?.innerText || ''"
        page.wait_for_function(f"({summary})().includes('No corruption applied')", timeout=120_000)
        bars = ("() => [...document.querySelectorAll('[id^=robust-bars-] .js-plotly-plot')]"
                ".map(e => e.querySelector('.barlayer')?.textContent + e.querySelector('.yaxislayer-above')?.textContent)")
        page.wait_for_function(f"({bars})().length == {min(len(SHIPPED), 4)} && ({bars})().every(t => t.includes('%'))",
                               timeout=60_000)
        clean = page.evaluate(bars)
        for name, severity in (("gaussian_noise", "5"), ("darkness", "4")):
            page.locator(f"#sev-{name} input[type=range]").fill(severity)
        page.wait_for_function(f"({summary})().includes('Gaussian noise, severity 5') && "
                               f"({summary})().includes('Darkness, severity 4')", timeout=120_000)
        page.wait_for_function(f"({bars})().every((t, i) => t != {json.dumps(clean)}[i])", timeout=60_000)
        srcs = [page.locator(f"#robust-{k} img").first.get_attribute("src") for k in ("original", "corrupted")]
        assert all(srcs) and srcs[0] != srcs[1]
        # "All off" brings back the clean predictions
        page.get_by_role("button", name="All off").click()
        page.wait_for_function(f"({summary})().includes('No corruption applied')", timeout=120_000)
        page.wait_for_function(f"JSON.stringify(({bars})()) == JSON.stringify({json.dumps(clean)})", timeout=60_000)

        # --- Live webcam: stream the fake camera for a while, then stop.
        posts = {}  # frame fingerprint -> time the browser sent it

        def on_request(req):
            if req.method == "POST" and "/stream/" in req.url and not req.url.endswith("/close"):
                try:
                    url = json.loads(req.post_data)["data"][0]["url"]
                except (TypeError, KeyError, IndexError, ValueError):
                    return
                posts[hashlib.md5(url.encode()).hexdigest()[:8]] = time.time()

        page.on("request", on_request)
        page.get_by_role("tab", name="Live webcam").click()
        page.locator("#webcam").get_by_text("Click to Access Webcam").click()
        page.locator("#webcam button[aria-label='capture photo']").click()
        page.wait_for_function("() => (document.querySelector('#live-status')?.innerText || '').includes('Live')",
                               timeout=120_000)
        page.evaluate("""() => { window.__live = [];
            const note = () => window.__live.push([Date.now(), document.querySelector('#live-status').innerText,
                [...document.querySelectorAll('[id^=live-] .output-class, [id^=live-] dl')].map(e => e.innerText).join('|')]);
            new MutationObserver(note).observe(document.querySelector('#live-status'),
                {subtree: true, childList: true, characterData: true}); }""")
        seconds = 8
        page.wait_for_timeout(seconds * 1000)
        seen = page.evaluate("window.__live")
        page.locator("#webcam button[aria-label='capture photo']").click()  # now "Stop"
        page.wait_for_timeout(300)
        stopped = len(page.evaluate("window.__live"))
        page.wait_for_timeout(2000)
        after_stop = len(page.evaluate("window.__live")) - stopped
        browser.close()

    updates = {}  # status line (one per processed frame) -> (time shown, top-5 texts)
    for t, status, tops in seen:
        line = next((ln for ln in status.splitlines() if ln.startswith("Live")), None)
        if line and line not in updates:
            updates[line] = (t / 1000, tops)
    rate = len(updates) / seconds
    ages, work = [], []  # how old each shown frame was when its result was shown; the server's time on it
    for line, (shown, _) in updates.items():
        fid = line.rsplit("frame ", 1)[-1].strip()
        if fid in posts:
            ages.append(shown - posts[fid])
            work.append(float(line.split("last frame ", 1)[1].split(" ms", 1)[0]) / 1000)
    age_ms = f"median {statistics.median(ages) * 1000:.0f} ms, max {max(ages) * 1000:.0f} ms" if ages else "none matched"
    print(f"\nlive webcam: {len(updates)} updates in {seconds} s = {rate:.1f}/s; {len(posts)} frames sent; "
          f"frame age when shown: {age_ms}; {after_stop} updates after Stop; load {os.getloadavg()[0]:.1f}")
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > 2 * cores:  # other jobs saturate the CPU: the rate says nothing about the app, only check it streams
        print(f"machine overloaded (load {load:.1f} on {cores} cores): the {LIVE_MIN_UPDATES}/s requirement is not "
              f"checked, only that it streams")
        assert rate >= 0.2
    else:
        assert rate >= LIVE_MIN_UPDATES, f"{rate:.1f} updates/s < {LIVE_MIN_UPDATES} (load {load:.1f})"
    assert len({tops for _, tops in updates.values()}) > 1, "the predictions never changed while streaming"
    assert len(ages) >= 0.8 * len(updates), "shown results do not match frames the browser sent"
    # No backlog: a shown result is for a frame at most about two frames' work old (the one being worked on when
    # it was sent, then its own), late in the stream as early on; a queue would make the age grow frame by frame.
    budget = 3 * statistics.median(work) + 0.5
    late = ages[len(ages) // 2:]
    assert statistics.median(late) <= budget and max(late) <= 2 * budget, (ages, work)
    assert after_stop <= 1
