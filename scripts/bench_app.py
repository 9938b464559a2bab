"""Measure the dashboard against Gradio's own floor, in one run on one machine.

    python scripts/bench_app.py [--calls 50] [--clients 20] [--per-client 10] [--rounds 3] [--total 1000]

1. Start-up: `scripts/bare_app.py` (the same endpoint returning a constant, same queue settings), then
   `app.py`, each timed from launch to its first served /predict.
2. One request at a time: p50/p95 of `--calls` predict calls through gradio_client on each app, and the
   shipped models' forward passes alone (in this process, through the app's backend); prints app p50 / (bare
   p50 + models' time).
3. Load: `--clients` clients at once, `--per-client` requests each, valid photos mixed with bad files
   (and uploads over the size limit sent straight to the upload route); for each app, alternating, over
   `--rounds` rounds: requests/s, p50, p95, unexpected errors; then the app's ratio to the bare app, and the
   CPU time per request of each server process and of this benchmark's own clients (which share the machine:
   on 2 cores, gradio_client's threads take most of it, so the ratio is not the servers' CPU ratio).
4. Memory: the app's resident memory (its model process included) after its first 50 requests and after `--total` requests, each read
   twice: the moment the last request returns, and once the app has been idle for `SETTLE_S` (it hands freed
   memory back to the system after 1 s idle, common/memory.py). The bar compares the settled readings.

Everything is loopback only. Run it on an otherwise idle machine, or say what else was running."""
from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from gradio_client import Client, handle_file
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from cifar_models.cli import add_debug_flag, existing_file, non_negative_int, positive_int, run  # noqa: E402
from cifar_models.common.limits import MAX_UPLOAD_MB  # noqa: E402  (cheap: no torch, no gradio)
from cifar_models.dashboard.launch import AppProcess, AppStartError  # noqa: E402
EXAMPLE = ROOT / "examples" / "cifar" / "tiger_test422.png"


# ----------------------------------------------------------------------------- processes
def launch(script: Path, **env) -> AppProcess:
    log = tempfile.NamedTemporaryFile("w+", prefix=f"bench-{script.stem}-", suffix=".log", delete=False)
    return AppProcess.start(script, Path(log.name), **env)


def first_answer(app: AppProcess, image=EXAMPLE, timeout: float = 300) -> tuple[Client, float]:
    """Wait until the app answers one /predict; (client, seconds since the process was started). Until the port
    accepts connections it is only tried with a bare socket every 20 ms: a gradio_client `Client` that cannot
    connect costs 47 ms of CPU, and made every 50 ms it took a quarter of a 2-core machine from an app that
    starts two processes (the bare app, one process, left it the other core)."""
    t0 = time.perf_counter()
    while True:
        try:
            app.check_running()
        except AppStartError as e:
            raise SystemExit(str(e)) from None
        try:
            socket.create_connection(("127.0.0.1", app.port), timeout=1).close()
            break
        except OSError:
            if time.perf_counter() - t0 > timeout:
                raise SystemExit(f"{app.url}: not listening after {timeout:.0f} s") from None
            time.sleep(0.02)
    while True:
        try:
            client = Client(app.url, verbose=False)
            client.predict(handle_file(str(image)), api_name="/predict")
            return client, time.perf_counter() - t0
        except Exception:
            try:
                app.check_running()
            except AppStartError as e:
                raise SystemExit(str(e)) from None
            if time.perf_counter() - t0 > timeout:
                raise SystemExit(f"{app.url}: no answer after {timeout:.0f} s")
            time.sleep(0.05)


def family(pid: int) -> list[int]:
    """A process and all its descendants (the app's model process included)."""
    out = [pid]
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                out += family(int(child))
    except (FileNotFoundError, ProcessLookupError):  # it ended meanwhile
        pass
    return out


def rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MB."""
    total = 0.0
    for p in family(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) used so far by a process and by each of its descendants: {pid: seconds}."""
    out = {}
    for p in family(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        out[p] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def cpu_per_request(before: dict[int, float], after: dict[int, float], requests: int) -> list[float]:
    """CPU ms per request of each process between two `cpu_s` readings (the parent first)."""
    return [(after[p] - before.get(p, 0.0)) / max(requests, 1) * 1000 for p in after]


SETTLE_S = 2.0


def rss_pair(pid: int) -> tuple[float, float]:
    """(resident MB now, resident MB after SETTLE_S idle)."""
    now = rss_mb(pid)
    time.sleep(SETTLE_S)
    return now, rss_mb(pid)


def percentile(xs, q) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * len(xs)) - 1))]


# ----------------------------------------------------------------------------- the request mix
def make_files(folder: Path, max_upload_mb: int) -> list[tuple[str, str, str]]:
    """(path, kind, expected message) with kind 'ok', 'bad' (a clear gr.Error expected) or 'oversize'
    (refused by the upload route). Valid: CIFAR examples, Gradio's demo photos, a 4000x3000 JPEG."""
    folder.mkdir(parents=True, exist_ok=True)
    ok = sorted(str(p) for p in (ROOT / "examples" / "cifar").glob("*.png"))[:6]
    try:
        import gradio.media as media
        ok += [media.get_image(n) for n in ("lion.jpg", "cheetah.jpg", "tower.jpg")]
    except Exception:
        pass
    yy, xx = np.mgrid[0:3000, 0:4000]
    big = np.stack([xx % 256, yy % 256, (xx // 16 + yy // 16) % 256], -1).astype(np.uint8)
    Image.fromarray(big).save(folder / "large_4000x3000.jpg", quality=90)
    ok.append(str(folder / "large_4000x3000.jpg"))
    jpeg = io.BytesIO()
    Image.effect_noise((300, 200), 80).convert("RGB").save(jpeg, "JPEG")
    (folder / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (folder / "text.jpg").write_text("this is a text file, not a picture\n")
    (folder / "empty.png").write_bytes(b"")
    Image.new("L", (10_000, 10_000)).save(folder / "bomb.png")  # 100 Mpx > Pillow's 89 Mpx limit
    with open(folder / "oversize.jpg", "wb") as f:
        f.write(os.urandom((max_upload_mb << 20) + 1024))
    bad = [(str(folder / "text.jpg"), "bad", "not an image"), (str(folder / "truncated.jpg"), "bad", "damaged or truncated"),
           (str(folder / "empty.png"), "bad", "empty"), (str(folder / "bomb.png"), "bad", "too large"),
           (str(folder / "oversize.jpg"), "oversize", "maximum allowed size")]
    mix = []  # three valid requests, then one bad one, repeated
    for i, path in enumerate(ok * 2):
        mix.append((path, "ok", ""))
        if i % 3 == 2:
            mix.append(bad[(i // 3) % len(bad)])
    return mix


def check_answer(r) -> None:
    """A /predict answer: one entry per loaded checkpoint (whatever they are named), plus agree and batch."""
    models = set(r) - {"agree", "batch"}
    assert models and "agree" in r, r
    for name in models:
        assert len(r[name]["top"]) == 5 and r[name]["superclass"] and r[name]["milliseconds"] >= 0, r


def one_request(client: Client, url: str, path: str, kind: str, expected: str, check: bool) -> str | None:
    """Send one request; None when it went as expected, else what went wrong."""
    import httpx

    try:
        if kind == "oversize":  # what a browser or script ignoring the client-side check would send
            with open(path, "rb") as f:
                r = httpx.post(url + "gradio_api/upload", files={"files": ("oversize.jpg", f)}, timeout=180)
            return None if r.status_code == 413 and expected in r.text else f"oversize: {r.status_code} {r.text[:200]}"
        out = client.predict(handle_file(path), api_name="/predict")
    except Exception as e:
        if kind == "bad" and expected in str(e):
            return None
        return f"{Path(path).name}: {type(e).__name__}: {str(e)[:300]}"
    if kind != "ok":
        return f"{Path(path).name}: no error for a bad file" if check else None
    if check:
        try:
            check_answer(out)
        except AssertionError as e:
            return f"{Path(path).name}: malformed answer {str(e)[:300]}"
    return None


def load(url: str, mix, clients: int, per_client: int, check: bool = True, deadline: float = 600) -> dict:
    """`clients` threads, each with its own gradio_client, send `per_client` requests each, all at once."""
    with ThreadPoolExecutor(clients) as pool:
        conns = list(pool.map(lambda _: Client(url, verbose=False), range(clients)))
    start, lat, errors, lock = threading.Barrier(clients + 1), [], [], threading.Lock()

    def worker(i: int):
        start.wait()
        for j in range(per_client):
            path, kind, expected = mix[(i * per_client + j * 7) % len(mix)]
            t = time.perf_counter()
            err = one_request(conns[i], url, path, kind, expected, check)
            with lock:
                lat.append(time.perf_counter() - t)
                if err:
                    errors.append(err)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join(timeout=max(1.0, deadline - (time.perf_counter() - t0)))
    wall = time.perf_counter() - t0
    done = len(lat)
    if any(t.is_alive() for t in threads):
        errors.append(f"{clients * per_client - done} requests unfinished after {deadline:.0f} s")
    return dict(requests=done, seconds=wall, rps=done / wall, p50=statistics.median(lat) * 1000 if lat else float("nan"),
                p95=percentile(lat, 0.95) * 1000 if lat else float("nan"), errors=errors)


def sequential(client: Client, calls: int, image=EXAMPLE) -> list[float]:
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        client.predict(handle_file(str(image)), api_name="/predict")
        times.append((time.perf_counter() - t) * 1000)
    return times


def models_ms(image=EXAMPLE, repeat: int = 30) -> tuple[dict[str, float], str]:
    """Median forward pass of each shipped model alone on one preprocessed image, in this process, through the
    backend the app's predictions use once warmed up (MODEL_BACKEND: onnxruntime by default, or PyTorch)."""
    import torch

    from cifar_models.serve.host import LocalModels

    host = LocalModels(os.environ.get("CHECKPOINT_DIR", ROOT / "checkpoints"))
    host.to_backend()
    out = {}
    with torch.inference_mode():
        for name, clf in host.serving.items():
            x = clf.preprocess([Image.open(image)])
            for _ in range(3):
                clf.logits(x)
            ts = []
            for _ in range(repeat):
                t = time.perf_counter()
                clf.logits(x)
                ts.append((time.perf_counter() - t) * 1000)
            out[name] = statistics.median(ts)
    return out, host.backend


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=positive_int, default=50, help="sequential predict calls per app")
    p.add_argument("--clients", type=positive_int, default=20)
    p.add_argument("--per-client", type=positive_int, default=10)
    p.add_argument("--rounds", type=positive_int, default=3, help="load rounds per app, alternating bare and real")
    p.add_argument("--total", type=non_negative_int, default=1000,
                   help="requests to the app before the last memory reading")
    p.add_argument("--app", default=str(ROOT / "app.py"), type=existing_file)
    add_debug_flag(p)
    return p.parse_args(argv)


def one_at_a_time(bare_client: Client, app_client: Client, calls: int) -> None:
    """p50/p95 of `calls` sequential requests on each app, against the bare app plus the models' forward passes."""
    sequential(bare_client, 5), sequential(app_client, 5)  # warm both
    bare_t, app_t = sequential(bare_client, calls), sequential(app_client, calls)
    m, backend = models_ms()
    floor = statistics.median(bare_t) + sum(m.values())
    print(f"one request at a time, {calls} calls: app p50 {statistics.median(app_t):.1f} ms, p95 "
          f"{percentile(app_t, 0.95):.1f} ms; bare p50 {statistics.median(bare_t):.1f} ms, p95 "
          f"{percentile(bare_t, 0.95):.1f} ms")
    print(f"forward passes alone ({backend}): " + ", ".join(f"{n} {v:.1f} ms" for n, v in m.items()) +
          f"; app p50 / (bare p50 + models) = {statistics.median(app_t):.1f} / {floor:.1f} = "
          f"{statistics.median(app_t) / floor:.2f}x")


def load_rounds(a, mix, bare: AppProcess, app: AppProcess) -> tuple[int, int]:
    """`a.rounds` rounds of load on each app, alternating; prints each, the ratio, and where the CPU went (the
    server's processes and this benchmark's own clients share the machine). (requests sent to the app, its
    unexpected errors)."""
    res = {"bare": [], "app": []}
    for r in range(a.rounds):
        for name, proc in (("bare", bare), ("app", app)):
            server0, client0 = cpu_s(proc.proc.pid), time.process_time()
            out = load(proc.url, mix, a.clients, a.per_client, check=name == "app")
            server = cpu_per_request(server0, cpu_s(proc.proc.pid), out["requests"])
            out["server_ms"], out["client_ms"] = server, (time.process_time() - client0) / max(out["requests"], 1) * 1000
            res[name].append(out)
            print(f"  round {r + 1} {name:4s}: {out['rps']:5.1f} requests/s, p50 {out['p50']:6.0f} ms, "
                  f"p95 {out['p95']:6.0f} ms, unexpected errors {len(out['errors'])}"
                  + (f": {out['errors'][:3]}" if out["errors"] else ""))
    med = {k: statistics.median(o["rps"] for o in v) for k, v in res.items()}
    print(f"median requests/s: app {med['app']:.1f}, bare {med['bare']:.1f} -> app/bare = {med['app'] / med['bare']:.0%}")
    for name, outs in res.items():  # CPU ms per request, median over the rounds
        parts = [statistics.median(o["server_ms"][i] for o in outs if len(o["server_ms"]) > i)
                 for i in range(max(len(o["server_ms"]) for o in outs))]
        split = " + ".join(f"{w} {v:.1f}" for w, v in zip(("web process", "model process"), parts))
        print(f"CPU per request under load, {name}: server {sum(parts):.1f} ms" + (f" ({split})" if len(parts) > 1 else "")
              + f"; this benchmark's clients {statistics.median(o['client_ms'] for o in outs):.1f} ms")
    return sum(o["requests"] for o in res["app"]), sum(len(o["errors"]) for o in res["app"])


def under_load(a, app: AppProcess, app_client: Client, bare: AppProcess) -> None:
    """Load rounds, then more requests up to `a.total`, with the app's memory after 50 requests and at the end."""
    with tempfile.TemporaryDirectory() as d:
        mix = make_files(Path(d), MAX_UPLOAD_MB)
        n_bad = sum(k != "ok" for _, k, _ in mix)
        sent = 1 + 5 + a.calls
        for _ in range(max(0, 50 - sent)):  # the memory baseline is taken after the first 50 requests
            one_request(app_client, app.url, *mix[sent % len(mix)], check=False)
            sent += 1
        rss50_now, rss50 = rss_pair(app.proc.pid)
        print(f"load: {a.clients} clients x {a.per_client} requests at once; mix of {len(mix) - n_bad} valid photos "
              f"and {n_bad} bad files (text, truncated, empty, decompression bomb, over {MAX_UPLOAD_MB} MB)")
        requests, errors = load_rounds(a, mix, bare, app)
        sent += requests
        while sent < a.total:
            out = load(app.url, mix, a.clients, min(a.per_client, max(1, (a.total - sent) // a.clients)))
            sent += out["requests"]
            errors += len(out["errors"])
        alive = app.proc.poll() is None
        rss_end_now, rss_end = rss_pair(app.proc.pid) if alive else (float("nan"),) * 2
        print(f"memory (resident), as each last request returns: after 50 requests {rss50_now:.0f} MB, after {sent} "
              f"requests {rss_end_now:.0f} MB ({rss_end_now - rss50_now:+.0f} MB)")
        print(f"memory (resident), {SETTLE_S:.0f} s later: after 50 requests {rss50:.0f} MB, after {sent} requests "
              f"{rss_end:.0f} MB ({rss_end - rss50:+.0f} MB); unexpected errors in all app load rounds: {errors}; "
              f"app still up: {alive and app_client.predict(handle_file(str(EXAMPLE)), api_name='/predict') is not None}")


def main(argv=None):
    a = parse(argv)
    print(f"machine: {os.cpu_count()} CPUs, load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    procs = []
    try:
        bare = launch(ROOT / "scripts" / "bare_app.py")
        procs.append(bare)
        bare_client, bare_start = first_answer(bare)
        app = launch(Path(a.app))
        procs.append(app)
        app_client, app_start = first_answer(app)
        print(f"start-up to first served request: app {app_start:.2f} s, bare Gradio {bare_start:.2f} s "
              f"(+{app_start - bare_start:.2f} s)")
        one_at_a_time(bare_client, app_client, a.calls)
        under_load(a, app, app_client, bare)
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        for proc in procs:
            proc.stop()


if __name__ == "__main__":
    run(main)
