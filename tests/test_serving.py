"""The micro-batcher and the path guard the dashboard serves with (no models, no server: fast)."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from cifar_models.common.limits import is_within
from cifar_models.serve.batching import MicroBatcher


def test_concurrent_submits_are_batched_and_each_gets_its_own_result():
    calls = []

    def slow_double(items):
        calls.append(list(items))
        time.sleep(0.05)  # while one batch runs, the others queue up
        return [2 * x for x in items]

    batcher = MicroBatcher(slow_double, max_batch=8)
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(batcher.submit, range(40)))
    assert results == [2 * x for x in range(40)]
    assert sorted(x for c in calls for x in c) == list(range(40))  # every item exactly once
    assert max(len(c) for c in calls) > 1 and all(len(c) <= 8 for c in calls)
    assert batcher.largest == max(len(c) for c in calls) and batcher.batches == len(calls) < 40


def test_a_lone_request_is_not_held_back():
    batcher = MicroBatcher(lambda items: items)
    batcher.submit(0)  # starts the thread
    t = time.perf_counter()
    assert batcher.submit(1) == 1
    assert time.perf_counter() - t < 0.5 and batcher.largest == 1


def test_an_error_reaches_its_batch_and_the_batcher_keeps_serving():
    gate = threading.Event()

    def fn(items):
        gate.wait(5)
        if "bad" in items:
            raise ValueError("bad input in this batch")
        return [x.upper() for x in items]

    batcher = MicroBatcher(fn)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(batcher.submit, x) for x in ("a", "bad", "c")]
        time.sleep(0.2)
        gate.set()
        outcomes = []
        for f in futures:
            try:
                outcomes.append(f.result(timeout=10))
            except ValueError as e:
                outcomes.append(str(e))
    assert "bad input in this batch" in outcomes
    assert batcher.submit("d") == "D"  # still serving


def test_a_wrong_number_of_results_is_an_error_not_a_mixup():
    batcher = MicroBatcher(lambda items: [] if "y" in items else items)
    with pytest.raises(RuntimeError, match="0 results for 1 inputs"):
        batcher.submit("y")
    assert batcher.submit("x") == "x"


def test_is_within(tmp_path):
    inside = tmp_path / "uploads" / "a" / "photo.jpg"
    inside.parent.mkdir(parents=True)
    inside.write_bytes(b"x")
    (tmp_path / "secret.txt").write_text("no")
    (tmp_path / "uploads" / "link.jpg").symlink_to(tmp_path / "secret.txt")
    roots = [tmp_path / "uploads"]
    assert is_within(inside, roots) and is_within(str(inside), roots)
    assert not is_within(tmp_path / "secret.txt", roots)
    assert not is_within(tmp_path / "uploads" / ".." / "secret.txt", roots)
    assert not is_within(tmp_path / "uploads" / "link.jpg", roots)  # a link out of the folder
    assert not is_within(tmp_path / "uploads-evil" / "x.jpg", roots)  # a sibling with the same prefix
    assert not is_within("\0bad", roots) and not is_within(None, roots)


def test_batches_are_cut_into_a_few_fixed_shapes():
    # At most five batch shapes reach the models (1, 2, 4, 8, 16), so the backend's per-shape memory is bounded.
    from cifar_models.serve.batching import pow2_chunks

    for n in range(1, 60):
        chunks = pow2_chunks(n, 16)
        sizes = [hi - lo for lo, hi in chunks]
        assert chunks[0][0] == 0 and chunks[-1][1] == n and all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))
        assert set(sizes) <= {1, 2, 4, 8, 16} and sizes == sorted(sizes, reverse=True)


def test_wait_idle_waits_for_a_quiet_gap_after_the_last_request():
    # Background warm-up steps run only between requests: wait_idle blocks while one is in flight and
    # returns once nothing has come for `gap` seconds.
    gate = threading.Event()
    batcher = MicroBatcher(lambda items: [gate.wait(5) and x for x in items])
    caller = threading.Thread(target=batcher.submit, args=(1,))
    caller.start()
    time.sleep(0.05)
    waited = threading.Event()
    waiter = threading.Thread(target=lambda: (batcher.wait_idle(0.2), waited.set()))
    waiter.start()
    time.sleep(0.4)
    assert not waited.is_set()  # a request is still waiting for its answer
    answered = time.monotonic()
    gate.set()
    caller.join(5)
    assert waited.wait(5)
    assert time.monotonic() - answered >= 0.2  # and then a full quiet gap
    waiter.join(5)


def test_warm_steps_cover_every_batch_shape_of_every_model():
    from cifar_models.serve.batching import warm_steps

    seen = []

    class FakeClassifier:
        def __init__(self, name):
            self.name, self.data_config = name, {"source_size": 32}

        def top_k(self, x):
            seen.append((self.name, tuple(x.shape), x.dtype))

    steps = warm_steps({"a": FakeClassifier("a"), "b": FakeClassifier("b")}, 16)
    assert not seen  # nothing runs until the steps are called, one by one
    for step in steps:
        step()
    import torch
    assert sorted(seen) == sorted((n, (s, 3, 32, 32), torch.uint8) for n in "ab" for s in (1, 2, 4, 8, 16))


def test_malloc_arena_cap_is_accepted_by_glibc():
    # mallopt answers 0 for a parameter it does not know: a wrong constant would fail here.
    from cifar_models.common import memory

    if memory._libc("mallopt") is None:
        pytest.skip("not glibc")
    assert memory.limit_malloc_arenas(2) is True


def test_corruptions_import_torchvision_only_when_used():
    import subprocess
    import sys

    from pathlib import Path

    code = "import sys, cifar_models.eval.corruptions; print('torchvision' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr[-2000:]


def test_the_trimmer_hands_memory_back_after_activity_only(monkeypatch):
    from cifar_models.common import memory

    calls = []
    monkeypatch.setattr(memory, "release_memory", lambda: calls.append(time.monotonic()))
    trimmer = memory.Trimmer(every=0.05)
    trimmer.touch()
    time.sleep(0.3)
    assert len(calls) == 1  # once after the request, not again while idle
    trimmer.touch()
    trimmer.touch()
    time.sleep(0.3)
    assert len(calls) == 2


def test_the_benchmark_counts_the_cpu_of_a_server_and_of_its_child_process():
    # scripts/bench_app.py splits the CPU per request between the web process and its model process: a parent
    # and a child that both burn CPU are both found and both counted, parent first.
    import importlib.util
    import subprocess
    import sys
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("bench_app", Path(__file__).parents[1] / "scripts" / "bench_app.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < {}: pass\n"
    code = ("import subprocess, sys\nchild = subprocess.Popen([sys.executable, '-c', %r])\n" % (burn.format(0.4)
            + "import time; time.sleep(30)") + burn.format(0.2) + "print('burnt', flush=True)\nchild.wait()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        before = bench.cpu_s(proc.pid)
        assert proc.stdout.readline().strip() == "burnt"
        deadline = time.monotonic() + 30
        while True:  # until the child's burn is done too (it started with the parent's)
            after = bench.cpu_s(proc.pid)
            if len(after) == 2 and list(after.values())[1] >= 0.4 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert list(after)[0] == proc.pid and len(after) == 2, after
        ms = bench.cpu_per_request(before, after, requests=10)
        assert len(ms) == 2 and ms[0] >= 10 and ms[1] >= 40, ms  # >= 0.1 s and 0.4 s over 10 requests
        child = list(after)[1]
        assert bench.rss_mb(proc.pid) > bench.rss_mb(child) > 0  # memory is summed over the family too
    finally:
        for p in bench.family(proc.pid)[::-1]:
            subprocess.run(["kill", str(p)], check=False)
        proc.wait(timeout=10)
