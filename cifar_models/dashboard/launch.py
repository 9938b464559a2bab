"""Starting the dashboard (or any Gradio script) as a process of its own, on a free loopback port: the one
launcher that the tests, `scripts/bench_app.py` and `scripts/screenshots.py` share (and headless Chromium for a
browser to look at it).

    app = AppProcess.start(ROOT / "app.py", log_path, CHECKPOINT_DIR="...")
    app.wait_listening()          # or: wait until it answers, as the benchmark does
    ...
    app.stop()
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = float(os.environ.get("APP_START_TIMEOUT", 600))  # a busy 2-core CPU starts the app slowly
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")  # Debian's; None when not installed
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
FAKE_CAMERA_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


class AppStartError(RuntimeError):
    """The app exited, or did not listen, before it served."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class AppProcess:
    proc: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @classmethod
    def start(cls, script: Path, log_path: Path, **env: str) -> "AppProcess":
        """`script` on a free loopback port (GRADIO_SERVER_NAME left to the app's default, loopback), its output
        in `log_path` (a pipe nobody reads fills up and then blocks the app's next write)."""
        port = free_port()
        environ = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False", **env)
        environ.pop("GRADIO_SERVER_NAME", None)
        log = open(log_path, "w")
        proc = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, env=environ, stdout=log,
                                stderr=subprocess.STDOUT, text=True)
        return cls(proc, port, Path(log_path))

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.is_file() else ""

    def check_running(self) -> None:
        if self.proc.poll() is not None:
            raise AppStartError(f"{self.url}: the app exited: {self.log()[-3000:]}")

    def wait_listening(self, timeout: float = START_TIMEOUT_S) -> "AppProcess":
        """Until the app accepts connections; AppStartError when it exits or takes longer than `timeout`."""
        deadline = time.time() + timeout
        while True:
            self.check_running()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.time() > deadline:
                    self.proc.kill()
                    raise AppStartError(f"{self.url}: the app did not start listening within {timeout:.0f} s") from None
                time.sleep(0.5)

    def stop(self, timeout: float = 30) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def launch_chromium(playwright, fake_camera: bool = False):
    """Headless Chromium (CHROMIUM) through Playwright; fake_camera: its fake webcam, allowed."""
    return playwright.chromium.launch(executable_path=CHROMIUM,
                                      args=CHROMIUM_ARGS + (FAKE_CAMERA_ARGS if fake_camera else []))
