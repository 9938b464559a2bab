"""Refresh the README's pictures from the running dashboard over the shipped checkpoints:
docs/screenshot.png (Compare, one image through every shown model, heat maps on) and docs/analysis.png.

    python scripts/screenshots.py [--image examples/cifar/tiger_test422.png] [--out docs]

Needs Debian's chromium (`apt-get install chromium`) and playwright (requirements.txt), as the browser tests do."""
import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cifar_models.cli import add_debug_flag, existing_file, run  # noqa: E402
from cifar_models.common.errors import MissingPackageError  # noqa: E402
from cifar_models.dashboard.launch import CHROMIUM, AppProcess, launch_chromium  # noqa: E402

WAIT_MS = 180_000


def shoot(url: str, image: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(url, wait_until="load", timeout=WAIT_MS)
        page.wait_for_function("document.querySelector('#agreement')?.innerText.includes('say')", timeout=WAIT_MS)
        before = page.evaluate("document.querySelector('#agreement').innerText")
        page.locator("input[type=file]").first.set_input_files(image)
        page.wait_for_function(f"document.querySelector('#agreement').innerText !== {before!r}", timeout=WAIT_MS)
        page.get_by_label("Show where each model looks").check()
        page.locator("#cam-0 img").first.wait_for(state="visible", timeout=WAIT_MS)
        # the class pickers above the heat maps can arrive after them (one shot in session 14 had none)
        page.get_by_text("Heat map for class").first.wait_for(state="visible", timeout=WAIT_MS)
        page.wait_for_timeout(2_000)  # the other heat maps and plotly's transitions
        page.screenshot(path=str(out / "screenshot.png"), full_page=True)
        page.get_by_role("tab", name="Analysis").click()
        page.locator("#per-class .js-plotly-plot").first.wait_for(state="visible", timeout=WAIT_MS)
        page.wait_for_timeout(2_000)
        page.screenshot(path=str(out / "analysis.png"), full_page=True)
        browser.close()


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", type=existing_file, default=str(ROOT / "examples" / "cifar" / "tiger_test422.png"))
    p.add_argument("--out", type=Path, default=ROOT / "docs")
    add_debug_flag(p)
    a = p.parse_args(argv)
    if not CHROMIUM:
        raise MissingPackageError("chromium is not installed: apt-get install chromium")
    try:
        import playwright  # noqa: F401
    except ImportError:
        raise MissingPackageError("playwright is not installed: pip install -r requirements.txt") from None
    a.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        app = AppProcess.start(ROOT / "app.py", Path(d) / "app.log")
        try:
            app.wait_listening()
            shoot(app.url, str(Path(a.image).resolve()), a.out)
        finally:
            app.stop()
    print(f"wrote {a.out / 'screenshot.png'} and {a.out / 'analysis.png'}")


if __name__ == "__main__":
    run(main)
