"""The micro-batcher and the path guard the dashboard serves with (no models, no server: fast)."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from cifar_models.serving import MicroBatcher, is_within


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
    from cifar_models.compare import pow2_chunks

    for n in range(1, 60):
        chunks = pow2_chunks(n, 16)
        sizes = [hi - lo for lo, hi in chunks]
        assert chunks[0][0] == 0 and chunks[-1][1] == n and all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))
        assert set(sizes) <= {1, 2, 4, 8, 16} and sizes == sorted(sizes, reverse=True)
