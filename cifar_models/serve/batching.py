"""Many requests, few forward passes: concurrent requests' images go through each model together.

Each caller converts its own image to the models' 32 px input in its own thread (`model_inputs`); a
`MicroBatcher` thread then takes every input waiting at that moment (up to `MAX_BATCH`) and runs it as
one batch through each model (`compare_inputs`), each model only on the images that asked for it. A lone
request is never held back to wait for company, so a single request costs what it did before; under load
the forward passes are shared instead of queued. `BatchedCompare` puts the two together."""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Sequence

import torch

from ..common.limits import MAX_BATCH
from ..common.hosts import select
from ..common.memory import Trimmer
from ..inference import Classifier

IDLE_GAP_S = 0.5  # background warm-up steps wait for this long without requests (MicroBatcher.wait_idle)


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
            work = [(item, f) for item, f, _ in self._take() if f.set_running_or_notify_cancel()]
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


def model_inputs(models: dict[str, Classifier], image) -> dict[int, torch.Tensor]:
    """One PIL image as every model's (3, S, S) uint8 input, keyed by source size S: the photo is converted
    once per source size (both shipped models use the same 32 px), not once per model."""
    out = {}
    for clf in models.values():
        size = int(clf.data_config.get("source_size", 32))
        if size not in out:
            out[size] = clf.preprocess([image])[0]
    return out


def compare_inputs(models: dict[str, Classifier], inputs: list[dict[int, torch.Tensor]], k: int = 5,
                   wanted: list | None = None) -> list[dict]:
    """Several images (from `model_inputs`) through the models, one forward pass per model for all the images
    that want it (`wanted[i]`: the model names image i asks for; default every model). Per image: top-k,
    superclass and the forward pass's milliseconds per model (the whole batch's pass: what this image waited
    for), `agree` (all its models' top-1 the same), and `batch` (how many images shared the pass)."""
    wanted = [list(w or models) for w in (wanted or [None] * len(inputs))]
    results = [{} for _ in inputs]
    for name, clf in models.items():
        rows = [i for i, w in enumerate(wanted) if name in w]
        if not rows:
            continue
        size = int(clf.data_config.get("source_size", 32))
        x = torch.stack([inputs[i][size] for i in rows])
        t0 = time.perf_counter()
        tops = [t for lo, hi in pow2_chunks(len(x)) for t in clf.top_k(x[lo:hi], k=k)]
        ms = round((time.perf_counter() - t0) * 1000, 1)
        for i, top in zip(rows, tops):
            results[i][name] = dict(top=[dict(label=c, probability=p) for c, p in top],
                                    superclass=clf.superclass(top[0][0]), milliseconds=ms)
    for r, w in zip(results, wanted):
        r["agree"] = len({r[name]["top"][0]["label"] for name in w if name in r}) == 1
        r["batch"] = len(inputs)
    return results


def pow2_chunks(n: int, largest: int = 16) -> list[tuple[int, int]]:
    """(start, end) of consecutive chunks of n items whose sizes are powers of two (at most `largest`), largest
    first: 13 -> 8 + 4 + 1. The CPU backend (oneDNN) keeps about 30 MB of prepared kernels per batch shape
    it has seen, so 16 possible batch sizes per model would grow the app by some 400 MB as they turn up;
    five shapes are prepared once (`warm_steps`) and memory stays flat."""
    out, lo = [], 0
    while lo < n:
        size = min(largest, 1 << ((n - lo).bit_length() - 1))
        out.append((lo, lo + size))
        lo += size
    return out


def warm_steps(models: dict[str, Classifier], largest: int = 16) -> list:
    """One forward pass per model at every batch shape `pow2_chunks` makes, as separate steps (callables), so
    that the memory the backend keeps per shape is taken once, soon after start-up, not as requests come in.
    The app runs them between requests (`MicroBatcher.wait_idle`)."""
    def step(clf, size):
        s = int(clf.data_config.get("source_size", 32))
        return lambda: clf.top_k(torch.zeros(size, 3, s, s, dtype=torch.uint8))

    sizes = [1 << i for i in range(largest.bit_length()) if 1 << i <= largest]
    return [step(clf, size) for size in sizes for clf in models.values()]


def compare(models: dict[str, Classifier], image, k: int = 5) -> dict:
    """Run one PIL image through every model: top-k, superclass and forward-pass milliseconds per model."""
    return compare_inputs(models, [model_inputs(models, image)], k)[0]


class BatchedCompare:
    """`compare` for many threads at once: each caller converts its own image (in its own thread), then the
    forward passes of everything waiting run together on one thread (`MicroBatcher`), each model
    only on the images that asked for it."""

    def __init__(self, models: dict[str, Classifier], k: int = 5, max_batch: int | None = None):
        self.models, self.k = models, k
        self.batcher = MicroBatcher(
            lambda items: compare_inputs(self.models, [x for x, _ in items], self.k, [w for _, w in items]),
            max_batch or MAX_BATCH, name="models")

    def __call__(self, image, names=None) -> dict:
        """Top-k of `names` (default: every model) for one PIL image."""
        chosen = select(self.models, names) if names else self.models
        return self.batcher.submit((model_inputs(chosen, image), list(chosen)))
