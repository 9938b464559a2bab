"""The dashboard's limits and queue settings, and the path guard: what one upload, one session, one queue may
take. No torch, no gradio: the web process, the model process and `scripts/bare_app.py` (the benchmark's bare
Gradio app, configured exactly like the real one) all read them from here."""
from __future__ import annotations

import os

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
