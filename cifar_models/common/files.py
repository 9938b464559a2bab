"""Writing files safely: to a temporary name, fsync, then renamed into place, so a crash never leaves a
half-written file where a good one was; and the sha256 that ties a checkpoint's JSON to its weights."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def atomic_write_bytes(path: Path, write) -> None:
    """Call write(tmp_path), fsync, then rename over path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    write(tmp)
    os.chmod(tmp, 0o644)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj, indent: int | None = 1) -> None:
    atomic_write_bytes(Path(path), lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=indent) + "\n"))


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()
