"""The model process: started by the dashboard (`dashboard.client.ModelProcess`), never by hand.

It connects back to the web process over a local, authenticated connection (address and key in the
environment), sends the "catalog" read from the checkpoints' JSON (`host.catalog`: the web process builds its
page from it meanwhile), loads every checkpoint (`host.LocalModels`), says "ready" with what it loaded, then answers
calls: each is one `ModelHost` method, run in a thread of its own so that concurrent predictions meet in
the micro-batcher. It ends when the web process goes away.

    python -m cifar_models.serve.worker CHECKPOINT_DIR      (by ModelProcess only)
"""
from __future__ import annotations

import logging
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Client, Connection
from typing import Callable

from ..common.hosts import WORKER_ENV
from ..common.limits import PREDICT_CONCURRENCY
from ..common.memory import limit_malloc_arenas

log = logging.getLogger("cifar_compare")


def operations(host) -> dict[str, Callable]:
    """The calls the web process may make: exactly the `ModelHost` methods, by the names the client sends."""
    return {"predict": host.predict, "explain": host.explain, "corrupted": host.corrupted, "live": host.live,
            "gallery": host.gallery, "evaluate_images": host.evaluate_images, "warm_up": host.warm_up}


def _load(conn: Connection, checkpoint_dir: str):
    """The models, or None after telling the web process why they could not be loaded."""
    try:
        import torch

        from .host import LocalModels, catalog
        torch.set_grad_enabled(False)  # inference only (Grad-CAM turns gradients on for itself)
        try:
            conn.send(("catalog", catalog(checkpoint_dir)))
        except Exception as e:  # noqa: BLE001  (only a head start: without it the page waits for the models)
            log.warning("no catalog for the page to start from (%s: %s)", type(e).__name__, e)
        return LocalModels(checkpoint_dir)
    except Exception as e:
        conn.send(("failed", f"the models could not be loaded: {type(e).__name__}: {e}"))
        return None


def _answer(ops: dict[str, Callable], call_id: int, op: str, args: tuple) -> tuple:
    """(call_id, True, result) or (call_id, False, (exception name, message))."""
    try:
        if op not in ops:
            raise ValueError(f"unknown operation {op!r}")
        return call_id, True, ops[op](*args)
    except Exception as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e) or type(e).__name__
        return call_id, False, (type(e).__name__, message)


def serve(checkpoint_dir: str) -> None:
    host_port_key = os.environ.pop(WORKER_ENV, None)
    if not host_port_key:
        sys.exit("cifar_models.serve.worker is started by the dashboard (app.py), not by hand.")
    address, port, key = host_port_key.split(":")
    conn = Client((address, int(port)), authkey=bytes.fromhex(key))
    limit_malloc_arenas()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log.setLevel(logging.INFO)
    host = _load(conn, checkpoint_dir)
    if host is None:
        return
    conn.send(("ready", host.info))
    ops = operations(host)
    pool = ThreadPoolExecutor(PREDICT_CONCURRENCY + 8, thread_name_prefix="model-call")
    lock = threading.Lock()

    def handle(call_id: int, op: str, args: tuple) -> None:
        answer = _answer(ops, call_id, op, args)
        with lock:
            try:
                conn.send(answer)
            except Exception as e:  # an answer that cannot be pickled: say so rather than leave the caller waiting
                conn.send((call_id, False, ("ModelProcessError", f"{op}: answer not sendable ({e})")))

    while True:
        try:
            call = conn.recv()
        except (EOFError, OSError):  # the app is gone: so are we
            break
        pool.submit(handle, *call)
    os._exit(0)


if __name__ == "__main__":
    serve(sys.argv[1])
