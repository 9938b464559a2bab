"""Memory hand-back for the two serving processes (glibc only; a no-op elsewhere).

glibc gives each busy thread its own malloc arena and keeps freed memory in it: after a burst of requests
decoded in two dozen threads, hundreds of MB stay with the process. `limit_malloc_arenas` caps the arenas
(call it first thing), and a `Trimmer` hands freed memory back after activity, off the request path."""
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

    def _run(self) -> None:
        while True:
            time.sleep(self.every)
            if self._touched:
                self._touched = False
                release_memory()
