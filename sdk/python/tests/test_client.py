"""`stratus.Client` against a real server: every call through the HTTP API."""

from __future__ import annotations

import io
import json
import time

import pytest

import stratus
from conftest import write_fn


@pytest.fixture(scope="module")
def echo(client, node):
    client.deploy("echo", directory=write_fn(node.tmp / "echo", "cat"), cmd="./run.sh")
    client.deploy("upper", directory=write_fn(node.tmp / "upper", "tr a-z A-Z"), cmd="./run.sh")
    client.deploy("fails", directory=write_fn(node.tmp / "fails", "echo boom >&2; exit 3"), cmd="./run.sh")
    return "echo"


def test_deploy_list_invoke_and_delete(client, node, echo):
    names = [f["name"] for f in client.functions()]
    assert {"echo", "upper", "fails"} <= set(names)
    assert client.function("echo")["runtime"] == {"kind": "process", "cmd": "./run.sh", "warm": False}
    assert client.invoke("echo", b"hello") == b"hello"
    assert client.invoke("upper", "shout") == b"SHOUT"
    temp = client.deploy("temp", directory=write_fn(node.tmp / "temp", "echo one"), cmd="./run.sh")
    again = client.deploy("temp", directory=write_fn(node.tmp / "temp", "echo two"), cmd="./run.sh", retries=1)
    assert (temp["version"], again["version"], again["retries"]) == (1, 2, 1)
    assert client.invoke("temp") == b"two\n"
    client.delete_function("temp")
    with pytest.raises(stratus.NotFound):
        client.function("temp")


def test_a_failed_function_raises_with_its_code_and_logs(client, echo):
    with pytest.raises(stratus.FunctionFailed) as failed:
        client.invoke("fails", b"x")
    assert failed.value.code == "function_failed"
    assert "boom" in failed.value.logs_tail
    assert failed.value.invocation["state"] == "failed"
    invocation_id = client.call_async("fails", b"x")
    with pytest.raises(stratus.FunctionFailed) as waited:
        client.wait(invocation_id)
    assert "boom" in waited.value.logs_tail


def test_async_calls_are_waited_for(client, echo):
    ids = [client.call_async("echo", f"n{i}") for i in range(5)]
    assert [client.wait(i) for i in ids] == [f"n{i}".encode() for i in range(5)]
    assert client.invocation(ids[0])["state"] == "succeeded"
    listed = {i["id"] for i in client.invocations(function="echo", limit=100)}
    assert set(ids) <= listed


def test_errors_carry_the_server_s_code(client, node, echo):
    with pytest.raises(stratus.NotFound) as nf:
        client.invoke("nope", b"")
    assert nf.value.code == "not_found" and nf.value.status == 404
    with pytest.raises(stratus.BadRequest):
        client.deploy("Bad Name", directory=write_fn(node.tmp / "bad", "cat"), cmd="./run.sh")
    with stratus.Client(node.url, token="stratus_not-a-token") as stranger:
        with pytest.raises(stratus.Unauthorized):
            stranger.functions()
    with pytest.raises(stratus.ConnectError):
        stratus.Client("http://127.0.0.1:9", token="x").functions()


def test_map_and_map_reduce_keep_input_order(client, echo):
    job = client.map("echo", ["a", {"b": 1}, 3])
    done = client.wait_job(job.id, timeout=120)
    assert done.state == "succeeded" and done["total"] == 3
    outputs = [json.loads(r["output"]) for r in client.results(job.id)]
    assert outputs == ["a", {"b": 1}, 3]
    reduced = client.wait_job(client.map_reduce("echo", ["x", "y"], "upper").id, timeout=120)
    assert reduced.state == "succeeded"
    assert job.id in {j["id"] for j in client.jobs()}


def test_objects_stream_both_ways(client):
    big = bytes(range(256)) * 8192  # 2 MiB
    assert client.put_object("data/big.bin", io.BytesIO(big)) == len(big)
    assert client.put_object("data/small.txt", "hi") == 2
    assert client.get_object("data/big.bin") == big
    assert b"".join(client.stream_object("data/big.bin", 65536)) == big
    keys = [o["key"] for o in client.list_objects("data")]
    assert keys == ["data/big.bin", "data/small.txt"]
    client.delete_object("data/small.txt")
    with pytest.raises(stratus.NotFound):
        client.get_object("data/small.txt")


def test_events_publish_read_and_follow(client):
    assert client.publish("com.example.sdk", "/tests", {"n": 1}, id="e1", subject="s")["stored"] == 1
    assert client.publish("com.example.sdk", "/tests", {"n": 1}, id="e1")["duplicates"] == 1
    batch = [{"type": "com.example.sdk", "source": "/tests", "id": f"b{i}"} for i in range(3)]
    assert client.publish_batch(batch)["stored"] == 3
    seen = client.events(type="com.example.sdk")
    assert [e["id"] for e in seen] == ["e1", "b0", "b1", "b2"]
    assert seen[0]["data"] == {"n": 1} and seen[0]["subject"] == "s"
    follow = client.follow_events(after=seen[-1]["seq"], type="com.example.sdk")
    client.publish("com.example.sdk", "/tests", id="later")
    assert next(follow)["id"] == "later"
    with pytest.raises(stratus.BadRequest):
        client.publish("stratus.job.succeeded", "/tests")


def test_the_cli_s_credentials_and_environment_are_used(node, monkeypatch):
    monkeypatch.setenv("STRATUS_CREDENTIALS", str(node.credentials))
    monkeypatch.delenv("STRATUS_TOKEN", raising=False)
    monkeypatch.setenv("STRATUS_URL", node.url)
    with stratus.Client() as c:
        assert c.whoami()["role"] == "admin"
    monkeypatch.setenv("STRATUS_TOKEN", "stratus_wrong")
    with stratus.Client() as c, pytest.raises(stratus.Unauthorized):
        c.whoami()


def test_variables_and_secrets_reach_functions_and_secrets_stay_hidden(client, node):
    client.set_variable("GREETING", "hello")
    client.set_variable("LIMITS", {"max": 3}, json_value=True)
    assert client.variable("GREETING") == "hello" and client.variable("LIMITS") == {"max": 3}
    assert client.set_secret("api-key", "k-123456789")["version"] == 1
    script = 'echo "using $API_KEY" >&2; printf "%s %s" "$GREETING" "${#API_KEY}"'
    client.deploy(
        "greets",
        directory=write_fn(node.tmp / "greets", script),
        cmd="./run.sh",
        vars=["GREETING"],
        secrets={"api-key": "API_KEY"},
    )
    assert client.invoke("greets") == b"hello 11"
    client.set_variable("GREETING", "bonjour")
    id = client.call_async("greets")
    assert client.wait(id) == b"bonjour 11", "the next attempt reads the new value"
    assert client.logs(id) == b"using ***\n", "the secret is masked in the logs"
    listed = client.secrets()
    assert [s["name"] for s in listed] == ["api-key"] and "k-123456789" not in json.dumps(listed)
    assert client.function("greets")["secrets"] == [{"name": "api-key", "env": "API_KEY"}]
    client.delete_variable("LIMITS")
    with pytest.raises(stratus.NotFound):
        client.variable("LIMITS")
    with pytest.raises(stratus.BadRequest):
        client.set_variable("not-an-env-name", "x")


def test_concurrency_limits_by_tag(client, node, echo):
    assert client.set_limit("sdk-archive", 0)["slots"] == 0
    client.deploy("tagged", directory=write_fn(node.tmp / "tagged", "cat"), cmd="./run.sh", tags=["sdk-archive"])
    assert client.function("tagged")["tags"] == ["sdk-archive"]
    id = client.call_async("tagged", b"held")
    paused = client.call_async("echo", b"by call", tags=["sdk-archive"])
    assert client.invoke("echo", b"untagged") == b"untagged", "others do not wait behind a paused tag"
    deadline = time.monotonic() + 60
    while client.limit("sdk-archive")["waiting"] < 2:
        assert time.monotonic() < deadline, client.limit("sdk-archive")
        client.invocation(id, wait=0.05)
    assert client.invocation(id)["state"] == "queued", "a paused tag holds its calls"
    client.set_limit("sdk-archive", 1)
    assert (client.wait(id), client.wait(paused)) == (b"held", b"by call")
    limit = client.limit("sdk-archive")
    assert (limit["running"], limit["waiting"], limit["holders"]) == (0, 0, [])
    assert [l["tag"] for l in client.limits()] == ["sdk-archive"]
    client.delete_limit("sdk-archive")
    with pytest.raises(stratus.NotFound):
        client.limit("sdk-archive")
