"""`stratus.lithops` on a separate worker process (`stratus worker`), as on a
cluster: a server without slots of its own, and a worker that leases its
tasks over HTTP and fetches the runner's bundle."""

from __future__ import annotations

import os
import subprocess

import pytest

import stratus.lithops as lithops
from conftest import Node, stratus_bin


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cluster")
    server = Node(tmp, slots=0)
    env = dict(os.environ, STRATUS_URL=server.url, STRATUS_TOKEN=server.token, STRATUS_LOG="warn",
               STRATUS_CREDENTIALS=str(server.credentials))
    token = subprocess.run([stratus_bin(), "token", "create", "--role", "worker"], env=env, check=True,
                           capture_output=True, text=True).stdout.strip()
    tmp.chmod(0o777)
    worker = subprocess.Popen(
        [stratus_bin(), "worker", "--server", server.url, "--token", token, "--slots", "2",
         "--data-dir", str(tmp / "worker"), "--sandbox-path", str(tmp)],
        stdout=subprocess.PIPE, env=env,
    )
    line = worker.stdout.readline().decode()
    assert line.startswith("stratus worker "), line
    yield server
    worker.kill()
    worker.wait()
    server.stop()


def test_a_map_runs_on_a_worker_of_its_own_and_exceptions_keep_their_traceback(cluster):
    from stratus import Client

    def square(x):
        if x == 7:
            raise KeyError("seven")
        return x * x

    with Client(cluster.url, token=cluster.token) as client, lithops.FunctionExecutor(client=client) as fx:
        futures = fx.map(square, range(10))
        assert fx.get_result(futures, throw_except=False) == [x * x if x != 7 else None for x in range(10)]
        remote = {w["id"] for w in client.workers() if not w["local"]}
        timings = client.job_timings(futures[0].job)
        assert len(timings) == 10 and {t["worker"] for t in timings} <= remote, "run by the worker of its own"
        with pytest.raises(KeyError) as raised:
            futures[7].result()
        notes = "".join(getattr(raised.value, "__notes__", []))
        assert "Traceback on the Stratus worker" in notes and "in square" in notes, notes


def test_parents_waiting_for_their_children_on_a_worker_lend_their_slots(cluster):
    from stratus import Client

    # The worker has 2 slots; 4 parents each wait for a map of their own,
    # which runs on the slots the waiting parents lend.
    def parent(n):
        import stratus.lithops as inner

        fx = inner.FunctionExecutor()
        return sum(fx.get_result(fx.map(lambda x: x * n, [1, 2, 3])))

    with Client(cluster.url, token=cluster.token) as client, lithops.FunctionExecutor(client=client) as fx:
        futures = fx.map(parent, [1, 2, 3, 4])
        assert fx.get_result(futures, timeout=300) == [6, 12, 18, 24]
