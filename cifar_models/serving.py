"""How the dashboard serves many people at once: its limits, its queue settings, and a micro-batcher
that runs concurrent requests through the models together.

Importing this module is cheap (no torch, no gradio): `scripts/bare_app.py` reads the same queue
settings from it, so the benchmark's bare Gradio app is configured exactly like the real one.

Each request decodes its own upload in its own worker thread of the web process (Gradio runs up to
`PREDICT_CONCURRENCY` of them at once) and hands the image to the model process (worker.py), where
each call makes its 32x32 input in its own thread and only the forward passes go through one
`MicroBatcher` thread, which takes every input waiting at that moment (up to `MAX_BATCH`) and
runs them as one batch. A lone request is never held back to wait for company, so a single
request costs what it did before; under load the forward passes are shared instead of queued.
Both processes hand freed memory back to the system after bursts (`release_memory`).
"""
from __future__ import annotations

import os
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Sequence

MAX_UPLOAD_MB = int(os.environ.get("MAX_UPLOAD_MB", 20))
MAX_FILE_SIZE = f"{MAX_UPLOAD_MB}mb"  # Gradio's max_file_size: refused while streaming, before being read
DELETE_CACHE = (600, 1800)  # every 10 min, delete uploads older than 30 min (Gradio's delete_cache)
MAX_BATCH = 16  # inputs per forward pass at most
PREDICT_CONCURRENCY = 24  # requests decoding / waiting for their batch at once (>= the clients served at once)
HEATMAP_CONCURRENCY = 1  # Grad-CAM is heavier and rarer: one at a time, on its own queue slot
QUEUE = dict(default_concurrency_limit=1, max_size=64)  # demo.queue(**QUEUE), the bare benchmark app too
# Gradio keeps a copy of every component's settings per session (browser tab or API client): about 120 KB
# for the dashboard's page. Its default keeps 10,000 sessions (~1.2 GB); the 1,000 most recent are plenty
# (a session evicted beyond them only forgets its picker choice).
SESSION_CAPACITY = int(os.environ.get("SESSION_CAPACITY", 1000))


def _libc(name: str):
    """A glibc function (malloc_trim, mallopt), or None elsewhere (musl, macOS, Windows)."""
    try:
        import ctypes
        return getattr(ctypes.CDLL("libc.so.6"), name)
    except (OSError, AttributeError):
        return None


MALLOC_TRIM = _libc("malloc_trim")
TRIM_EVERY_S = 1.0  # freed memory is handed back this often at most, after activity (`Trimmer`)
IDLE_GAP_S = 0.5  # background warm-up steps wait for this long without requests (MicroBatcher.wait_idle)
MALLOC_ARENAS = int(os.environ.get("MALLOC_ARENA_MAX", 2))
M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas (as MALLOC_ARENA_MAX would, but settable from inside the process: a Space
    cannot set the environment before Python starts). glibc gives each busy thread its own arena, up to 8 per
    core; with two dozen request threads decoding photos, freed memory stays scattered over them. Two arenas
    serve the same load as fast on this machine and keep the resident memory flat. Call it first, before
    threads start. True when it was applied."""
    mallopt = _libc("mallopt")
    return bool(mallopt is not None and mallopt(M_ARENA_MAX, arenas) == 1)


def release_memory() -> None:
    """Hand memory freed by finished requests back to the system. glibc keeps freed memory in per-thread
    arenas, and a burst of requests decoded in many worker threads leaves hundreds of MB there that the
    process never uses again; malloc_trim returns it (a few ms)."""
    if MALLOC_TRIM is not None:
        MALLOC_TRIM(0)


class Trimmer:
    """release_memory() on a background thread, once per `every` seconds at most, and only after activity
    (`touch`): the web process calls touch() per request (it decodes every upload), the micro-batcher per
    batch. Off the request path: nobody waits for it."""

    def __init__(self, every: float = TRIM_EVERY_S):
        self.every, self._touched, self._thread = every, False, None
        self._lock = threading.Lock()

    def touch(self) -> None:
        self._touched = True
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="trimmer", daemon=True)
                    self._thread.start()

    def _take(self) -> list:
        """The next call's items: the first waiting, then whatever else waits, up to max_batch; single requests
        before bulk ones (`submit_many`), whose items stay queued, in order, for a call of their own."""
        waiting = [self._queue.get()]
        while True:
            try:
                waiting.append(self._queue.get_nowait())
            except queue.Empty:
                break
        single = [w for w in waiting if not w[2]]
        work = (single or waiting)[:self.max_batch]
        taken = {id(w) for w in work}
        for entry in waiting:
            if id(entry) not in taken:
                self._queue.put(entry)
        return work

    def _run(self) -> None:
        while True:
            time.sleep(self.every)
            if self._touched:
                self._touched = False
                release_memory()


class MicroBatcher:
    """Calls fn(items) -> results (one per item, same order) on one background thread, with every item
    submitted while the previous call ran. submit() blocks until its own result is ready and raises
    what fn raised for its batch. Thread-safe; the thread starts on the first submit."""

    def __init__(self, fn: Callable[[list], Sequence[Any]], max_batch: int = MAX_BATCH, name: str = "micro-batcher"):
        self.fn, self.max_batch, self.name = fn, max_batch, name
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.batches = 0  # forward calls so far, and the largest batch (for tests and the benchmark)
        self.largest = 0
        self._trimmer = Trimmer()
        self._waiting = 0  # submitted and not yet answered
        self._active_at = time.monotonic()  # when the last one was answered (or this batcher was made)

    def submit(self, item) -> Any:
        future: Future = Future()
        with self._lock:
            self._waiting += 1
        try:
            self._queue.put((item, future, False))
            self._start()
            return future.result()
        finally:
            with self._lock:
                self._waiting -= 1
                self._active_at = time.monotonic()

    def submit_many(self, items: list) -> list:
        """Results of several items queued at once (a bulk job: Your images), so that they share one call of fn.
        They give way: a call that includes items from `submit` (a visitor waiting for one prediction) leaves
        bulk items for the next call, so that visitor waits for at most the bulk call already running."""
        futures = [Future() for _ in items]
        with self._lock:
            self._waiting += len(items)
        try:
            for item, future in zip(items, futures):
                self._queue.put((item, future, True))
            self._start()
            return [f.result() for f in futures]
        finally:
            with self._lock:
                self._waiting -= len(items)
                self._active_at = time.monotonic()

    def _start(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                    self._thread.start()

    def wait_idle(self, gap: float = IDLE_GAP_S) -> None:
        """Block until nothing has been submitted or waiting for `gap` seconds. Background work that can wait
        (warming up the backend, filling caches) calls this before each small step, so that it only ever runs
        between requests: a request that arrives meanwhile waits for one step at most."""
        while True:
            with self._lock:
                quiet = 0.0 if self._waiting else time.monotonic() - self._active_at
            if quiet >= gap:
                return
            time.sleep(gap - quiet if quiet else gap / 4)

    def _take(self) -> list:
        """The next call's items: the first waiting, then whatever else waits, up to max_batch; single requests
        before bulk ones (`submit_many`), whose items stay queued, in order, for a call of their own."""
        waiting = [self._queue.get()]
        while True:
            try:
                waiting.append(self._queue.get_nowait())
            except queue.Empty:
                break
        single = [w for w in waiting if not w[2]]
        work = (single or waiting)[:self.max_batch]
        taken = {id(w) for w in work}
        for entry in waiting:
            if id(entry) not in taken:
                self._queue.put(entry)
        return work

    def _run(self) -> None:
        while True:
            work = self._take()
            work = [(item, f) for item, f, _ in work if f.set_running_or_notify_cancel()]
            if not work:
                continue
            self.batches += 1
            self.largest = max(self.largest, len(work))
            try:
                results = self.fn([item for item, _ in work])
                if len(results) != len(work):
                    raise RuntimeError(f"{self.name}: {len(results)} results for {len(work)} inputs")
            except BaseException as e:  # every waiting request gets the error; the thread keeps serving
                for _, f in work:
                    f.set_exception(e)
                continue
            for (_, f), r in zip(work, results):
                f.set_result(r)
            self._trimmer.touch()


def is_within(path, roots) -> bool:
    """Whether `path`, with symbolic links and '..' resolved, lies inside one of the folders `roots`."""
    try:
        real = os.path.realpath(os.fspath(path))
    except (TypeError, ValueError, OSError):
        return False
    for root in roots:
        root = os.path.realpath(os.fspath(root))
        if os.path.commonpath([real, root]) == root:
            return True
    return False
