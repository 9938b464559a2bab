"""The Your images tab and the /evaluate_images API of a running app (shipped checkpoints): a hostile ZIP is
evaluated without writing anything, the answer agrees with one /predict per image, Chromium sees the results."""
import io
import json
import zipfile

import pytest

from conftest import ROOT, chromium_or_skip, new_page, start_app
from test_user_images import BAD, GOOD, make_zip

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

pytestmark = pytest.mark.slow
NAMES = tuple(sorted(p.stem for p in (ROOT / "checkpoints").glob("*.safetensors")))  # every shipped checkpoint
COLUMNS = ["file", "label", "checkpoint", "prediction", "probability", "top5", "correct"]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "app.log"
    proc, url = start_app(ROOT / "checkpoints", log)
    yield url
    assert proc.poll() is None, "the app died during the tests"
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def client(app):
    return Client(app, verbose=False)


def test_api_evaluates_a_hostile_zip_and_writes_nothing(client, tmp_path):
    upload = make_zip(tmp_path / "photos.zip")
    outside = [ROOT.parent / "escape.jpg", ROOT / "escape.jpg", tmp_path.parent / "escape.jpg"]
    r = client.predict(handle_file(str(upload)), api_name="/evaluate_images")
    assert set(r) >= {"summary", "rows", "rejected"}
    for name in NAMES:
        s = r["summary"][name]
        assert (s["images"], s["labelled"]) == (len(GOOD), 5)
        rows = [row for row in r["rows"] if row["checkpoint"] == name]
        assert s["top1"] == pytest.approx(sum(row["correct"] or 0 for row in rows) / 5)
        assert s["top5"] == pytest.approx(sum(bool(row["label"]) and row["label"] in row["top5"].split("|")
                                              for row in rows) / 5)
        assert s["top1_ci95"][0] <= s["top1"] <= s["top1_ci95"][1]
    assert all(list(row)[:7] == COLUMNS for row in r["rows"]) and len(r["rows"]) == len(GOOD) * len(NAMES)
    errors = {x["file"]: x["error"] for x in r["rejected"]}
    assert set(errors) == set(BAD)
    assert all(why in errors[f] for f, why in BAD.items())
    assert not any(p.exists() for p in outside) and not (tmp_path / "photos").exists()
    assert len(NAMES) >= 2 and len(r["comparisons"]) == len(NAMES) * (len(NAMES) - 1) // 2  # every pair
    assert all("McNemar" in c["sentence"] for c in r["comparisons"])


def test_api_answer_equals_one_predict_per_image(client, tmp_path):
    upload = make_zip(tmp_path / "photos.zip")
    r = client.predict(handle_file(str(upload)), api_name="/evaluate_images")
    with zipfile.ZipFile(upload) as z:
        for file in GOOD:
            single = tmp_path / file.replace("/", "_")
            single.write_bytes(z.read(file))
            p = client.predict(handle_file(str(single)), api_name="/predict")
            for name in NAMES:
                row = next(x for x in r["rows"] if x["file"] == file and x["checkpoint"] == name)
                assert row["prediction"] == p[name]["top"][0]["label"], (file, name)
                assert row["probability"] == pytest.approx(p[name]["top"][0]["probability"], abs=1e-5)
                assert row["top5"] == "|".join(t["label"] for t in p[name]["top"])


def test_api_single_image_bad_file_and_not_a_zip(client, tmp_path):
    one = client.predict(handle_file(str(ROOT / "examples" / "cifar" / "tiger_test422.png")), api_name="/evaluate_images")
    assert one["summary"]["cnn9"] == dict(images=1, labelled=0, top1=None, top5=None, top1_ci95=None, top5_ci95=None)
    assert [x["correct"] for x in one["rows"]] == [None] * len(NAMES)
    (tmp_path / "text.jpg").write_text("not an image")
    bad = client.predict(handle_file(str(tmp_path / "text.jpg")), api_name="/evaluate_images")
    assert bad["rows"] == [] and "not an image" in bad["rejected"][0]["error"]
    (tmp_path / "text.zip").write_text("not a zip")
    with pytest.raises(Exception, match="text.zip: not a readable ZIP archive|not a readable ZIP archive"):
        client.predict(handle_file(str(tmp_path / "text.zip")), api_name="/evaluate_images")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("photos/apple/", "")  # a folder, and a system file: nothing to evaluate
        z.writestr("__MACOSX/photos/._x.jpg", "resource fork")
    (tmp_path / "empty.zip").write_bytes(buf.getvalue())
    with pytest.raises(Exception, match="no image to evaluate"):
        client.predict(handle_file(str(tmp_path / "empty.zip")), api_name="/evaluate_images")
    assert client.predict(handle_file(str(ROOT / "examples" / "cifar" / "apple_test9.png")), api_name="/predict")


def test_browser_drops_a_zip_and_sees_the_results(app, tmp_path):
    chromium_or_skip()
    from playwright.sync_api import sync_playwright

    upload = make_zip(tmp_path / "photos.zip")
    with sync_playwright() as p:
        browser, page = new_page(p)
        page.goto(app, wait_until="load", timeout=120_000)
        settled = "(t => t.includes('say') && !t.includes('processing'))(document.querySelector('#agreement')?.innerText || '')"
        page.wait_for_function(settled, timeout=120_000)
        before = page.locator("#agreement").inner_text()
        page.get_by_role("tab", name="Your images").click()
        page.locator("#your-files input[type=file]").set_input_files(str(upload))
        page.locator("#your-files").get_by_text("photos.zip").wait_for(timeout=30_000)
        page.locator("#your-run").click()
        page.wait_for_function("document.querySelector('#your-summary')?.innerText.includes('evaluated')",
                               timeout=120_000)
        summary = page.locator("#your-summary").inner_text()
        assert f"6 image(s) evaluated by {len(NAMES)} model(s)" in summary and "12 file(s) rejected" in summary, summary
        assert "95% CI" in summary and "McNemar" in summary
        page.locator("#your-accuracy .js-plotly-plot").first.wait_for(state="visible", timeout=30_000)
        assert "did you mean apple?" in page.locator("#your-rejected").inner_text()
        assert "pickup truck" in page.locator("#your-classes").inner_text()
        assert page.locator("#your-csv").is_visible()
        page.screenshot(path=str(tmp_path / "your_images.png"), full_page=True)
        # A model's mistake, clicked: the Compare tab opens and runs both models on it.
        page.locator("#your-gallery .thumbnail-item").first.click()
        page.wait_for_function("document.querySelector('button[role=tab][aria-selected=true]')?.innerText"
                               ".includes('Compare')", timeout=60_000)
        page.wait_for_function(f"(t => t.includes('say') && !t.includes('processing') && t !== {before!r})"
                               "(document.querySelector('#agreement')?.innerText || '')", timeout=60_000)
        page.get_by_role("tab", name="Analysis").click()
        stats = page.locator("#analysis-stats").inner_text()
        shown = [f"test top-1 {json.loads((ROOT / 'checkpoints' / f'{n}.eval.json').read_text())['summary']['top1']:.1%}"
                 f" (95% CI" for n in NAMES]  # the figure of a shipped checkpoint's own report
        assert any(f in stats for f in shown) and "McNemar" in stats, (stats, shown)
        browser.close()


def test_the_web_process_evaluates_a_zip_without_torch(tmp_path):
    import subprocess
    import sys

    upload = make_zip(tmp_path / "photos.zip")
    code = f"""
import sys, app
from cifar_models.dashboard.client import ModelProcess
from cifar_models.dashboard.page import build
from cifar_models.dashboard.your_images_tab import run_upload, gallery_views, write_csv
host = ModelProcess.start(app.CHECKPOINT_DIR); host.wait_ready(300)
page = app.page_state(host)
build(page)
classes = next(iter(page.models.values())).meta["class_names"]
ev = run_upload({{"path": {str(upload)!r}}}, host.evaluate_images, list(page.models), classes, ({str(tmp_path)!r},))
gallery_views(ev, page.titles()), write_csv(ev)
host.close()
print(len(ev.files), sorted(m for m in ("torch", "torchvision", "timm") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == f"{len(GOOD)} []"
