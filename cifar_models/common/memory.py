"""glibc's malloc, tuned for what each process does (glibc only; a no-op elsewhere).

Serving: glibc gives each busy thread its own malloc arena and keeps freed memory in it: after a burst of
requests decoded in two dozen threads, hundreds of MB stay with the process. `limit_malloc_arenas` caps the
arenas (call it first thing), and a `Trimmer` hands freed memory back after activity, off the request path.

Training on a CPU: the opposite. `reuse_freed_memory` keeps freed blocks for the next step instead of
handing them back (see there)."""
from __future__ import annotations

import os
import threading
import time


def _libc(name: str):
    """A glibc function (malloc_trim, mallopt), or None elsewhere (musl, macOS, Windows)."""
    try:
        import ctypes
        return getattr(ctypes.CDLL("libc.so.6"), name)
    except (OSError, AttributeError):
        return None


MALLOC_TRIM = _libc("malloc_trim")
TRIM_EVERY_S = 1.0  # freed memory is handed back this often at most, after activity (`Trimmer`)
MALLOC_ARENAS = int(os.environ.get("MALLOC_ARENA_MAX", 2))
M_ARENA_MAX = -8  # glibc's mallopt parameter numbers (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRAINING_TRIM_THRESHOLD = 1 << 30  # bytes: freed memory at the top of the heap kept for reuse during training
# Set by a user who tunes malloc from outside (man mallopt, "ENVIRONMENT"): then reuse_freed_memory leaves it be.
MALLOC_ENVIRONMENT = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
_TRAINING_MALLOC: dict | None = None  # what reuse_freed_memory set in this process


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas (as MALLOC_ARENA_MAX would, but settable from inside the process: a Space
    cannot set the environment before Python starts). glibc gives each busy thread its own arena, up to 8 per
    core; with two dozen request threads decoding photos, freed memory stays scattered over them. Two arenas
    serve the same load as fast on this machine and keep the resident memory flat. Call it first, before
    threads start. True when it was applied."""
    mallopt = _libc("mallopt")
    return bool(mallopt is not None and mallopt(M_ARENA_MAX, arenas) == 1)


def reuse_freed_memory(trim_threshold: int = TRAINING_TRIM_THRESHOLD) -> dict | None:
    """For training on a CPU: serve every block from the heap and keep freed ones there for the next step.

    glibc gives each block above its mmap threshold (which it raises to at most 32 MB) fresh pages from the
    kernel, and hands them back when the block is freed. A training step of EfficientNet-B0 at 128-160 px
    allocates and frees gigabytes of activations over 32 MB, so every step faulted and zeroed them anew: on a
    2-core AVX2-only machine, a micro-benchmark (batch 128, AdamW, 25 steps at 128 px, then 10 at 160) ran at
    about 33 and 13 training images/s, and at 48 and 25 with mmap off (BENCHMARKS.md). The arithmetic is
    untouched, so a run gives the same weights either way; the price is resident memory, which stays at
    the peak step's working set (about +25% for B0 at 160 px). PyTorch's CPU performance guide suggests
    jemalloc or tcmalloc (LD_PRELOAD) against the same cost; this needs nothing installed.

    It changes the whole process for good: the command-line scripts (train.py, evaluate.py) call it first
    thing; a library call (`train()`) leaves the caller's process alone. Left alone too where the user tunes
    malloc through its environment variables (MALLOC_MMAP_MAX_ and the like, or GLIBC_TUNABLES with
    glibc.malloc), or sets CIFAR_MALLOC=default. Returns what was set (the checkpoint records it), or None."""
    global _TRAINING_MALLOC
    if os.environ.get("CIFAR_MALLOC", "").strip().lower() == "default" or any(
            k in os.environ for k in MALLOC_ENVIRONMENT) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return None
    mallopt = _libc("mallopt")
    if mallopt is None or mallopt(M_MMAP_MAX, 0) != 1:
        return None
    trimmed = mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1
    _TRAINING_MALLOC = dict(allocator="glibc", mmap=False, trim_threshold=trim_threshold if trimmed else None)
    return dict(_TRAINING_MALLOC)


def malloc_settings() -> dict | None:
    """What `reuse_freed_memory` set in this process (None: malloc as glibc ships it), for the checkpoint."""
    return dict(_TRAINING_MALLOC) if _TRAINING_MALLOC else None


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

    def _run(self) -> None:
        while True:
            time.sleep(self.every)
            if self._touched:
                self._touched = False
                release_memory()
