"""The dashboard's models in a process of their own: `ModelProcess`, the `ModelHost` the web process holds.

Importing torch and timm costs the app about 2.7 s on a 2-core CPU, more than Gradio itself. The app
therefore starts the model process (`serve/worker.py`) first thing, and imports Gradio and builds its page
while the models load there, on the other core. The web process never imports torch: it sends each image
(decoded and shrunk by Pillow) over a local, authenticated connection, and gets JSON-like answers and small
images back. Predictions of concurrent requests are batched over there (`serve.host.LocalModels`).

    host = ModelProcess.start("checkpoints")   # returns at once; the child loads in the background
    host.wait_ready()                           # raises ModelProcessError if it could not start
    host.predict(image, ["cnn9"])               # any ModelHost method, run in the child

This module is cheap to import: no torch.
"""
from __future__ import annotations

import itertools
import logging
import os
import secrets
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from multiprocessing.connection import Listener
from pathlib import Path

from PIL import Image

from ..common.hosts import WORKER_ENV, HostInfo, ModelHost, ModelProcessError
from ..common.images import ImageInputError

ROOT = Path(__file__).resolve().parents[2]
# Exceptions the child reports by name that come back as themselves (anything else: ModelProcessError).
ERRORS = {"ImageInputError": ImageInputError, "KeyError": KeyError, "ValueError": ValueError}
log = logging.getLogger("cifar_compare")


RESTARTS, RESTART_WINDOW_S = 3, 600  # a model process that stops is restarted, up to 3 times in 10 minutes


class ModelProcess(ModelHost):
    """The parent's side: the child process, and calls to it from any number of threads at once. A child that
    stops while serving (killed, out of memory) is started again, at most `restarts` times in
    RESTART_WINDOW_S; the calls it was answering fail, later ones wait for the new one."""

    def __init__(self, checkpoint_dir, restarts: int = RESTARTS):
        self.checkpoint_dir = Path(checkpoint_dir)
        self.info: HostInfo | None = None
        self.proc: subprocess.Popen | None = None
        self.restarts, self._restarted_at = restarts, []
        self._conn = None
        self._send_lock = threading.Lock()
        self._pending: dict[int, Future] = {}
        self._ids = itertools.count()
        self._ready = threading.Event()
        self._error: str | None = None  # set when it stopped for good
        self.catalog: HostInfo | None = None  # the child's first message: what it is loading (from the JSON)
        self._catalogued = threading.Event()  # set by the catalog, or by whatever ended the wait for it

    @classmethod
    def start(cls, checkpoint_dir, restarts: int = RESTARTS) -> "ModelProcess":
        """Start the child and return at once; it connects back and loads every checkpoint meanwhile."""
        self = cls(checkpoint_dir, restarts)
        self._spawn()
        return self

    def _spawn(self) -> None:
        self.started = time.perf_counter()
        key = secrets.token_bytes(32)
        listener = Listener(("127.0.0.1", 0), authkey=key)
        host, port = listener.address
        env = dict(os.environ, **{WORKER_ENV: f"{host}:{port}:{key.hex()}"})
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        self._conn = None
        # The child's output (its log lines) goes where the app's goes.
        self.proc = subprocess.Popen([sys.executable, "-m", "cifar_models.serve.worker", str(self.checkpoint_dir)], env=env)
        threading.Thread(target=self._read, args=(listener, self.proc), name="model-process", daemon=True).start()

    # ------------------------------------------------------------------ the connection
    def _read(self, listener, proc) -> None:
        serving = False
        try:
            conn = self._conn = listener.accept()
            listener.close()
            kind, payload = conn.recv()
            if kind == "catalog":
                self.catalog = self.catalog or payload  # a restarted child's catalog changes nothing
                self._catalogued.set()
                kind, payload = conn.recv()
            if kind != "ready":
                raise ModelProcessError(payload)
            self.info, serving = payload, True
            self._catalogued.set()
            self._ready.set()
            while True:
                call_id, ok, value = conn.recv()
                future = self._pending.pop(call_id, None)
                if future is None:
                    continue
                if ok:
                    future.set_result(value)
                else:
                    name, message = value
                    future.set_exception(ERRORS.get(name, ModelProcessError)(message))
        except BaseException as e:  # the child stopped (EOF), or could not start
            code = _reap(proc)
            reason = (str(e) if isinstance(e, ModelProcessError) else
                      f"the model process stopped{f' (exit code {code})' if code is not None else ''}")
            self._catalogued.set()
            restart = serving and self._may_restart()
            with self._send_lock:  # no call is sent while the state changes
                pending = list(self._pending.values())
                self._pending.clear()
                if restart:
                    self._ready.clear()
                else:
                    self._error = reason
                    self._ready.set()
            for future in pending:
                future.set_exception(ModelProcessError(
                    f"{reason}; " + ("it is being restarted, try again in a few seconds" if restart else "restart the app")))
            if restart:
                log.warning("%s; starting it again (%d of %d restarts allowed in %d s)", reason,
                            len(self._restarted_at), self.restarts, RESTART_WINDOW_S)
                self._spawn()
            elif serving:
                log.error("%s; not restarted (%d restarts in the last %d s)", reason, self.restarts, RESTART_WINDOW_S)

    def _may_restart(self) -> bool:
        now = time.monotonic()
        self._restarted_at = [t for t in self._restarted_at if now - t < RESTART_WINDOW_S]
        if len(self._restarted_at) >= self.restarts:
            return False
        self._restarted_at.append(now)
        return True

    def _wait(self, timeout: float) -> None:
        """Until the child serves; ModelProcessError when it stopped for good or could not start."""
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.1):
            proc = self.proc
            if proc.poll() is not None and self._conn is None:  # it died before it connected back
                with self._send_lock:
                    if self.proc is proc and not self._ready.is_set():
                        self._error = f"the model process exited with code {proc.returncode} before loading"
                        self._ready.set()
            if time.monotonic() > deadline:
                raise ModelProcessError(f"the model process did not load its checkpoints in {timeout:.0f} s")
        if self._error:
            raise ModelProcessError(self._error)

    def wait_catalog(self, timeout: float = 600) -> HostInfo | None:
        """What the child is loading, read from the checkpoints' JSON (`serve.host.catalog`), as soon as it has
        said so: the page can be built from it while the networks load; `wait_ready` then tells whether the load
        gave the same. None when the child stopped or said nothing of the kind before it was ready."""
        deadline = time.monotonic() + timeout
        while not self._catalogued.wait(0.1):
            died = self.proc.poll() is not None and self._conn is None  # before it connected back
            if died or self._ready.is_set() or time.monotonic() > deadline:
                break
        return self.catalog

    def wait_ready(self, timeout: float = 600) -> HostInfo:
        """Block until every checkpoint is loaded; returns `info`. Raises ModelProcessError, with the
        child's reason, when it could not start."""
        self._wait(timeout)
        log.info("model process ready %.2f s after it was started", time.perf_counter() - self.started)
        return self.info

    def _call(self, op: str, *args):
        try:
            self._wait(timeout=120)
        except ModelProcessError as e:
            raise ModelProcessError(f"{e}; restart the app") from None
        future: Future = Future()
        call_id = next(self._ids)
        with self._send_lock:
            if not self._ready.is_set() or self._error:  # it stopped meanwhile
                raise ModelProcessError(f"{self._error or 'the model process is being restarted'}; "
                                        + ("restart the app" if self._error else "try again in a few seconds"))
            self._pending[call_id] = future
            try:
                self._conn.send((call_id, op, args))
            except (OSError, ValueError, AttributeError) as e:
                self._pending.pop(call_id, None)
                raise ModelProcessError(f"the model process cannot be reached ({e}); try again in a few seconds") from None
        return future.result()

    def close(self) -> None:
        self.restarts = 0  # stopped on purpose: not started again
        if self.proc.poll() is None:
            self.proc.terminate()

    # ------------------------------------------------------------------ the ModelHost, run in the child
    def predict(self, image: Image.Image, names: list[str] | None = None) -> dict:
        return self._call("predict", image, names)

    def explain(self, name: str, image: Image.Image, class_name: str) -> Image.Image:
        return self._call("explain", name, image, class_name)

    def corrupted(self, names: list[str], image: Image.Image, severities: dict[str, int], seed: int = 0) -> dict:
        return self._call("corrupted", names, image, severities, seed)

    def live(self, names: list[str], payload) -> tuple[dict, float]:
        return self._call("live", names, payload)

    def gallery(self, pair: tuple[str, str], folders: tuple = ()) -> tuple[list, int, bool]:
        return self._call("gallery", pair, folders)

    def evaluate_images(self, images: list[Image.Image], names: list[str] | None = None) -> list[dict]:
        return self._call("evaluate_images", images, names)

    def warm_up(self) -> float:
        return self._call("warm_up")


def _reap(proc: subprocess.Popen, timeout: float = 5.0) -> int | None:
    """The exit code of a child whose connection just closed, once it has exited: a process closes its sockets
    before it exits, so a bare poll() at that moment can miss it and leave a zombie beside its successor."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None
