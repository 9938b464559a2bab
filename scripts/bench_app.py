"""Measure the dashboard: start-up time to the first served request, then the median and
95th-percentile time of one `predict` call (both models) through gradio_client.

    python scripts/bench_app.py [--calls 50]"""
import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from gradio_client import Client, handle_file

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--image", default=str(ROOT / "examples" / "cifar" / "tiger_test422.png"))
    a = p.parse_args(argv)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=dict(os.environ, GRADIO_SERVER_PORT=str(port)))
    try:
        while True:
            try:
                client = Client(url, verbose=False)
                client.predict(handle_file(a.image), api_name="/predict")
                break
            except Exception:
                if proc.poll() is not None or time.perf_counter() - t0 > 300:
                    raise SystemExit("the app did not start")
                time.sleep(0.25)
        startup = time.perf_counter() - t0
        times = []
        for _ in range(a.calls):
            t = time.perf_counter()
            client.predict(handle_file(a.image), api_name="/predict")
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        p95 = times[min(len(times) - 1, round(0.95 * len(times)) - 1)]
        print(f"start-up to first served request: {startup:.1f} s")
        print(f"predict (both models), {a.calls} calls: median {statistics.median(times):.0f} ms, p95 {p95:.0f} ms")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
