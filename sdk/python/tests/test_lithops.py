"""`stratus.lithops` as Lithops programs use it, on a real server: local
functions, lambdas, closures and partials run remotely; results come back in
order; exceptions are re-raised."""

from __future__ import annotations

import functools

import pytest

import stratus.lithops as lithops
from stratus.lithops.wait import ALL_COMPLETED, ANY_COMPLETED


@pytest.fixture(scope="module")
def fexec(client):
    with lithops.FunctionExecutor(runtime_memory=256, client=client) as f:
        yield f


def double(x):
    return 2 * x


def test_call_async_and_map_run_local_functions(fexec):
    assert fexec.get_result(fexec.call_async(lambda x: x + 1, 3)) == 4
    futures = fexec.map(double, range(5))
    assert fexec.get_result(futures) == [0, 2, 4, 6, 8]
    offset = 10
    assert fexec.get_result(fexec.map(lambda x: x + offset, [1, 2])) == [11, 12], "closures travel"
    power = functools.partial(pow, 2)
    assert fexec.get_result(fexec.map(power, [3, 4])) == [8, 16], "partials travel"


def test_arguments_follow_lithops_rules(fexec):
    def f(a, b=0, c=0):
        return (a, b, c)

    futures = fexec.map(f, [(1,), {"a": 3, "c": 4}, 5], extra_args={"b": 9})
    assert fexec.get_result(futures) == [(1, 9, 0), (3, 9, 4), (5, 9, 0)]
    assert fexec.get_result(fexec.map(f, [(1, 2), (3, 4, 5)])) == [(1, 2, 0), (3, 4, 5)]
    assert fexec.get_result(fexec.map(f, [1], extra_args=(7,))) == [(1, 7, 0)]


def test_an_exception_is_raised_again(fexec):
    def picky(x):
        if x == 2:
            raise ValueError(f"no {x}")
        return x

    futures = fexec.map(picky, [1, 2, 3])
    with pytest.raises(ValueError, match="no 2"):
        fexec.get_result(futures)
    assert fexec.get_result(futures, throw_except=False) == [1, None, 3]
    assert [f.success for f in futures] == [True, False, True]


def test_map_reduce_and_wait(fexec):
    reduced = fexec.map_reduce(double, [1, 2, 3], sum)
    assert fexec.get_result(reduced) == 12
    futures = fexec.map(double, [7, 8])
    done, not_done = fexec.wait(futures, return_when=ANY_COMPLETED)
    assert len(done) >= 1 and len(done) + len(not_done) == 2
    done, not_done = fexec.wait(futures, return_when=ALL_COMPLETED)
    assert (len(done), not_done) == (2, [])


def test_a_large_function_goes_through_the_object_store(fexec, client):
    blob = b"x" * (lithops.INLINE_FUNCTION + 1)
    assert fexec.get_result(fexec.call_async(lambda: len(blob), ())) == len(blob)
    stored = [o["key"] for o in client.list_objects("lithops")]
    assert len(stored) == 1
    fexec.clean()
    assert client.list_objects("lithops") == []


def test_large_arguments_go_through_the_object_store(fexec, client):
    big = [bytes([i]) * (lithops.INLINE_ARGS + 1) for i in range(2)]
    futures = fexec.map(lambda b: (len(b), b[:1]), big)
    stored = [o["key"] for o in client.list_objects("lithops")]
    assert len(stored) == 2 and all("/args-" in k for k in stored), stored
    job = client.job(futures[0].job)
    assert fexec.get_result(futures) == [(lithops.INLINE_ARGS + 1, b"\x00"), (lithops.INLINE_ARGS + 1, b"\x01")]
    assert job["total"] == 2
    fexec.clean()
    assert client.list_objects("lithops") == []


def test_plot_draws_the_timeline_and_histogram_of_the_calls(fexec, client, tmp_path):
    futures = fexec.map(double, range(6))
    fexec.get_result(futures)
    timings = client.job_timings(futures[0].job)
    assert [t["index"] for t in timings] == list(range(6))
    assert all(t["started_at"] <= t["finished_at"] and t["worker"] for t in timings)
    paths = fexec.plot(futures, dst=str(tmp_path / "run"))
    assert [p.rsplit("_", 1)[1] for p in paths] == ["timeline.png", "histogram.png"]
    for p in paths:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_python_version_the_server_cannot_run_is_a_clear_error(fexec, monkeypatch):
    import sys

    real = sys.version_info
    monkeypatch.setattr(sys, "version_info", (real[0], real[1] + 1, 0))
    future = fexec.call_async(double, 2)
    monkeypatch.setattr(sys, "version_info", real)
    with pytest.raises(lithops.FunctionException, match="pickled by Python"):
        future.result()


def test_partitions_cut_anywhere_give_every_line_once():
    from stratus.lithops.storage.utils import read_lines_of

    data = b"".join(b"line-%d %s\n" % (i, b"x" * (i % 13)) for i in range(500)) + b"last line without newline"
    size = len(data)

    def read(a, b):
        return data[a:b]

    for step in (1, 2, 7, 64, 1000, size - 1, size):
        cuts = list(range(0, size, step)) + [size]
        parts = [read_lines_of(read, cuts[i], cuts[i + 1], size) for i in range(len(cuts) - 1)]
        assert b"".join(parts) == data, f"partitions of {step} bytes"


def count_lines(obj):
    return [line for line in obj.data_stream.read().decode().splitlines()]


def test_a_map_over_a_prefix_reads_each_object_and_partition(fexec, client):
    storage = lithops.Storage(client=client)
    lines = [f"row {i} " + "y" * (i % 31) for i in range(3000)]
    for n in range(3):
        storage.put_object(storage.bucket, f"sdk-objects/part-{n}.txt", "\n".join(lines[n::3]) + "\n")
    whole = fexec.get_result(fexec.map(count_lines, f"stratus://{storage.bucket}/sdk-objects/"))
    assert len(whole) == 3 and sorted(sum(whole, [])) == sorted(lines)
    futures = fexec.map(count_lines, f"{storage.bucket}/sdk-objects/", obj_chunk_size=6000)
    seen = sum(fexec.get_result(futures), [])
    assert len(futures) > 3 and sorted(seen) == sorted(lines), "no line lost or read twice"
    by_key = fexec.map_reduce(count_lines, f"{storage.bucket}/sdk-objects/", len, obj_chunk_number=4,
                              obj_reduce_by_key=True)
    assert len(by_key) == 3 * 4 + 3 and fexec.get_result(by_key) == [4, 4, 4], "one reducer per object"
    with pytest.raises(lithops.StorageNoSuchKeyError):
        fexec.map(count_lines, f"{storage.bucket}/sdk-objects/missing.txt")
    storage.delete_objects(storage.bucket, storage.list_keys(storage.bucket, "sdk-objects/"))
    assert storage.list_keys(storage.bucket, "sdk-objects/") == []


def test_parents_waiting_for_their_children_do_not_take_every_slot(client):
    # The node has 2 slots; 4 parents each wait for a map of their own.
    def parent(n):
        import stratus.lithops as inner

        fx = inner.FunctionExecutor()
        return sum(fx.get_result(fx.map(lambda x: x * n, [1, 2, 3])))

    with lithops.FunctionExecutor(client=client) as fx:
        futures = fx.map(parent, [1, 2, 3, 4])
        assert fx.get_result(futures, timeout=300) == [6, 12, 18, 24]


def test_chunksize_runs_several_calls_per_task_with_a_future_each(fexec, client):
    def f(x):
        if x == 4:
            raise ValueError("four")
        return x * 10

    futures = fexec.map(f, range(7), chunksize=3)
    assert len(futures) == 7 and len({fu.job for fu in futures}) == 1
    assert client.job(futures[0].job)["total"] == 3, "three tasks: 3 + 3 + 1 calls"
    fexec.wait(futures)
    assert [fu.result() for fu in futures if fu.success] == [0, 10, 20, 30, 50, 60]
    with pytest.raises(ValueError, match="four"):
        futures[4].result()
    assert fexec.get_result(futures, throw_except=False) == [0, 10, 20, 30, None, 50, 60]


def test_a_call_past_its_timeout_raises_timeout_error(fexec):
    import time

    futures = fexec.map(lambda s: time.sleep(s) or s, [0, 30], timeout=1)
    fexec.wait(futures)
    assert futures[0].result() == 0
    with pytest.raises(TimeoutError, match="timeout of 1 s"):
        futures[1].result()
    with pytest.raises(TimeoutError):
        fexec.call_async(lambda: time.sleep(30), (), timeout=0.5).result()


COUNTER = {"calls": 0}


def test_the_runner_is_warm_with_fresh_globals_and_each_calls_token(fexec, client):
    import os

    def probe(x):
        COUNTER["calls"] += 1  # a fresh copy of the global per call
        from stratus.lithops import Storage

        storage = Storage()  # the attempt's own URL and token
        storage.put_object(storage.bucket, f"warm-probe/{x}", str(x))
        return (os.getpid(), COUNTER["calls"], os.environ.get("STRATUS_TOKEN"), os.environ.get("EXTRA"))

    first = fexec.get_result(fexec.map(probe, range(6), extra_env={"EXTRA": "set"}))
    second = fexec.get_result(fexec.map(probe, range(6)))
    pids = {p for p, _, _, _ in first + second}
    assert len(pids) <= 2, f"two slots keep one interpreter each across calls: {pids}"
    assert {c for _, c, _, _ in first + second} == {1}, "globals are fresh in every call"
    tokens = [t for _, _, t, _ in first + second]
    assert all(tokens) and len(set(tokens)) == 12, "each call has its own attempt's token"
    assert {e for _, _, _, e in first} == {"set"} and {e for _, _, _, e in second} == {None}, \
        "a call's extra_env does not stay for the next"
    storage = lithops.Storage(client=client)
    assert sorted(storage.list_keys(storage.bucket, "warm-probe/")) == [f"warm-probe/{i}" for i in range(6)]
    storage.delete_objects(storage.bucket, storage.list_keys(storage.bucket, "warm-probe/"))


def test_retrying_executor_runs_a_call_again_when_it_raises(fexec, client):
    from stratus.lithops import RetryingFunctionExecutor

    def flaky(x, storage):
        # Fails the first `x` times it runs for input x (counted in the object store).
        key = f"flaky/{x}"
        try:
            seen = int(storage.get_object(storage.bucket, key))
        except lithops.StorageNoSuchKeyError:
            seen = 0
        storage.put_object(storage.bucket, key, str(seen + 1))
        if seen < x:
            raise RuntimeError(f"run {seen + 1} of {x}")
        return x

    retrying = RetryingFunctionExecutor(fexec)
    futures = retrying.map(flaky, [0, 1, 2], retries=2)
    done, pending = retrying.wait(futures, throw_except=False)
    assert pending == [] and [f.result() for f in done] == [0, 1, 2]
    assert [f.failure_count for f in futures] == [0, 1, 2]
    futures = retrying.map(flaky, [5], retries=1)
    retrying.wait(futures)
    assert futures[0].failure_count == 2, "one run and one retry, then it gives up"
    with pytest.raises(RuntimeError, match="run 2 of 5"):
        futures[0].result()
    storage = lithops.Storage(client=client)
    storage.delete_objects(storage.bucket, storage.list_keys(storage.bucket, "flaky/"))


def test_a_runtime_is_a_python_environment_with_a_package_from_pypi(client):
    env = client.create_pyenv("with-tabulate", ["tabulate==0.9.0"], wait=600)
    assert env["state"] == "ready", env

    def version():
        import tabulate

        return tabulate.__version__

    with lithops.FunctionExecutor(client=client, runtime="with-tabulate") as fx:
        assert fx.get_result(fx.call_async(version, ())) == "0.9.0"
    with lithops.FunctionExecutor(client=client) as fx:
        with pytest.raises(ModuleNotFoundError):
            fx.get_result(fx.call_async(version, ()))
    with pytest.raises(ValueError, match="not a Python environment"):
        lithops.FunctionExecutor(client=client, runtime="no-such-env").call_async(version, ())
    client.delete_pyenv("with-tabulate")
