"""Any number of models: every checkpoint in the folder is loaded whatever its name, a broken one is
reported without taking the others down, /predict answers for all (or the named ones), and the page's
picker chooses which are shown."""
import json
import re

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from cifar_models.checkpoint import checkpoint_paths, read_meta, save_checkpoint
from cifar_models.common.meta import checkpoint_names
from cifar_models.dashboard.catalog import agreement_line, default_shown, model_colors
from cifar_models.serve.batching import BatchedCompare, compare
from cifar_models.serve.host import load_all
from conftest import ROOT, chromium_or_skip, new_page, start_app

NAMES = ("tiny_a", "tiny_b", "tiny_c")


def variant(src, dst, seed: int) -> None:
    """A copy of checkpoint `src` under another name, its weights perturbed (seeded) so that it answers differently."""
    meta = read_meta(src)
    state = load_file(str(checkpoint_paths(src)[0]))
    g = torch.Generator().manual_seed(seed)
    if seed:
        state = {k: (v.float() + 0.5 * v.float().std() * torch.randn(v.shape, generator=g)).half()
                 if v.is_floating_point() and v.ndim >= 2 else v for k, v in state.items()}
    save_checkpoint(dst, state, dict(meta, name=dst.name))


@pytest.fixture(scope="module")
def folder(trained_cnn, tmp_path_factory):
    """Three checkpoints made from the tiny fixture's cnn9, plus a broken JSON, weights without a JSON, and a
    sound JSON beside another checkpoint's weights (found out only when the weights are read)."""
    out = tmp_path_factory.mktemp("many")
    for seed, name in enumerate(NAMES):
        variant(trained_cnn[0], out / name, seed)
    (out / "broken.json").write_text("{ not json")
    (out / "broken.safetensors").write_bytes(b"")
    (out / "orphan.safetensors").write_bytes(b"weights without a description")
    (out / "swapped.json").write_bytes((out / "tiny_b.json").read_bytes())
    (out / "swapped.safetensors").write_bytes((out / "tiny_c.safetensors").read_bytes())
    return out


def test_every_checkpoint_is_found_and_a_broken_one_is_reported(folder):
    assert checkpoint_names(folder) == ["broken", "orphan", "swapped", *NAMES]
    models, failed = load_all(folder)
    assert list(models) == list(NAMES) and {m.checkpoint for m in models.values()} == set(NAMES)
    assert all(m.name == "cnn9" for m in models.values())  # each knows its model from its own JSON
    assert set(failed) == {"broken", "orphan", "swapped"}
    assert "broken.json is not valid JSON" in failed["broken"] and "orphan.json not found" in failed["orphan"]
    assert "sha256 differs" in failed["swapped"]
    colors = model_colors(models)
    assert len(set(colors.values())) == 3  # one colour per checkpoint, even for three of the same model
    assert default_shown(models) == list(NAMES)  # the folder's first four, A-Z
    assert default_shown(models, 2) == ["tiny_a", "tiny_b"]


def test_the_catalog_from_the_json_is_what_loading_gives_but_for_weights_that_fail(folder):
    from cifar_models.serve.host import LocalModels, catalog
    early, loaded = catalog(folder), LocalModels(folder, backend="torch").info
    assert list(early.models) == ["swapped", *NAMES] and list(loaded.models) == list(NAMES)
    assert {n: early.models[n] for n in NAMES} == loaded.models  # the same descriptions, parameters, titles
    assert early.failed == {n: why for n, why in loaded.failed.items() if n != "swapped"}  # the same messages
    assert early != loaded  # so the app builds its page again


def test_batched_compare_runs_each_model_only_for_who_asked(folder):
    models, _ = load_all(folder)
    image = Image.new("RGB", (40, 30), (200, 40, 10))
    batched = BatchedCompare(models)
    full, some = batched(image), batched(image, ["tiny_c", "tiny_a"])
    assert set(full) >= set(NAMES) and set(some) - {"agree", "batch"} == {"tiny_c", "tiny_a"}
    assert some["tiny_a"]["top"] == full["tiny_a"]["top"] == compare(models, image)["tiny_a"]["top"]
    assert full["agree"] == (len({full[n]["top"][0]["label"] for n in NAMES}) == 1)
    line = agreement_line(some, {n: models[n] for n in ("tiny_c", "tiny_a")})
    assert ("tiny_c" in line and "tiny_a" in line) or "Both" in line
    with pytest.raises(KeyError, match="no loaded model named 'nope'"):
        batched(image, ["nope"])


@pytest.fixture(scope="module")
def many_url(folder, tmp_path_factory):
    log = tmp_path_factory.mktemp("log") / "app.log"
    proc, url = start_app(folder, log)
    yield url, log
    assert proc.poll() is None, "the app died during the tests"
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.slow
def test_predict_answers_for_every_loaded_model_or_the_named_ones(many_url):
    from gradio_client import Client, handle_file

    url, log = many_url
    client = Client(url, verbose=False)
    image = handle_file(str(ROOT / "examples" / "cifar" / "tiger_test422.png"))
    every = client.predict(image, api_name="/predict")
    assert set(every) == {*NAMES, "agree", "batch"}
    for name in NAMES:
        assert len(every[name]["top"]) == 5
    assert every["agree"] == (len({every[n]["top"][0]["label"] for n in NAMES}) == 1)
    two = client.predict(image, "tiny_c, tiny_a", api_name="/predict")
    assert set(two) == {"tiny_c", "tiny_a", "agree", "batch"} and two["tiny_a"]["top"] == every["tiny_a"]["top"]
    with pytest.raises(Exception, match="no loaded model named 'nope'"):
        client.predict(image, "nope", api_name="/predict")
    text = log.read_text()
    assert "checkpoint broken not loaded" in text and "broken.json is not valid JSON" in text
    assert re.search(r"3 checkpoint\(s\) loaded from .* in \d+\.\d+ s; 3 failed", text), text


@pytest.mark.slow
def test_browser_picks_another_model_and_every_view_follows(many_url, tmp_path):
    chromium_or_skip()
    from playwright.sync_api import sync_playwright

    url, _ = many_url
    with sync_playwright() as p:
        browser, page = new_page(p)
        page.goto(url, wait_until="load", timeout=120_000)
        # The failed checkpoints are reported on the page, with the reason.
        note = page.locator("#load-failures")
        note.wait_for(state="visible", timeout=60_000)
        assert "broken" in note.inner_text() and "not valid JSON" in note.inner_text()
        # found only when its weights were read, after the page was first built from the JSON: built again
        assert "swapped" in note.inner_text() and "sha256 differs" in note.inner_text()
        text = "(s) => document.querySelector(s)?.textContent || ''"  # textContent: plotly's SVG text too
        page.wait_for_function(f"({text})('#agreement').includes('say')", timeout=120_000)
        page.wait_for_function(f"({text})('#curve-acc').includes('tiny_b validation')", timeout=60_000)
        heading, bars = page.evaluate(f"({text})('#heading-1')"), page.evaluate(f"({text})('#bars-1')")
        card, curves = page.evaluate(f"({text})('#card-1')"), page.evaluate(f"({text})('#curve-acc')")
        assert heading.strip().startswith("tiny_b") and "tiny_b" in curves and "tiny_c" in curves  # all three shown

        picker = page.locator("#picker")
        picker.locator("input[name=tiny_b]").uncheck()
        picker.locator("input[name=tiny_c]").check()
        page.wait_for_function(f"({text})('#heading-1').trim().startsWith('tiny_c')", timeout=60_000)
        page.wait_for_function(f"({text})('#bars-1') !== {json.dumps(bars)} && ({text})('#bars-1').length > 0",
                               timeout=60_000)
        page.wait_for_function(f"({text})('#curve-acc').includes('tiny_c') && "
                               f"!({text})('#curve-acc').includes('tiny_b')", timeout=60_000)
        assert page.evaluate(f"({text})('#card-1')") != card
        # A third model side by side again: its own slot appears.
        picker.locator("input[name=tiny_b]").check()
        page.wait_for_function(f"({text})('#heading-2').trim().startsWith('tiny_b')", timeout=60_000)
        page.screenshot(path=str(tmp_path / "three.png"), full_page=True)
        browser.close()
