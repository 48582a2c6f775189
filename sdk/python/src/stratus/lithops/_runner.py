"""Runs the tasks of a `stratus.lithops` executor inside a Stratus process
function, warm (many tasks per process, the STRATUS/1 framing with the
attempt's token in the header) or cold (one task). Each task is
`{"func" or "func_key", "args" or "args_key", "special"}`: it runs the
pickled function on the pickled arguments (with the special parameters
`storage`, `id` and `obj` filled in), and answers `{"result"}` or `{"error",
"traceback", "exception"}` as JSON (pickles in base64). Only the
standard library and what is shipped beside it in `vendor/` (cloudpickle,
and this SDK for `storage` and `obj`)."""

import base64
import json
import os
import shutil
import signal
import sys
import traceback
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "vendor"))

import cloudpickle  # noqa: E402


def fetch(key):
    """An object of the project, through the Stratus API (the attempt's own URL and token)."""
    req = urllib.request.Request(
        os.environ["STRATUS_URL"].rstrip("/") + "/v1/objects/" + key,
        headers={"authorization": "Bearer " + os.environ.get("STRATUS_TOKEN", "")},
    )
    with urllib.request.urlopen(req) as res:
        return res.read()


def read_url(url, start, end, whole={}):
    """Bytes `[start, end)` of a URL (all of it when `start` is None), by a
    Range request; a server that ignores Range sends it all, kept once."""
    headers = {}
    if start is not None:
        headers["range"] = "bytes=%d-%d" % (start, end - 1)
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as res:
        if start is None or res.status == 206:
            return res.read()
        body = whole.setdefault(url, res.read())
    return body[start:end]


def special_args(special):
    """The special parameters' values: `storage`, `id`, `obj`."""
    out = {}
    if not special:
        return out
    if "storage" in special or "obj" in special:
        from stratus.lithops.storage import Storage
        from stratus.lithops.storage.utils import ObjectPartition, read_lines_of

        storage = Storage(storage_config=special.get("storage") or {})
    if "storage" in special:
        out["storage"] = storage
    if "id" in special:
        out["id"] = special["id"]
    spec = special.get("obj")
    if spec is not None:
        url, rng, size = spec.get("url"), spec.get("range"), spec.get("size")
        if url:
            def read(a, b):
                return read_url(url, a, b)
        else:
            path = "%s/%s" % (spec["bucket"], urllib.parse.quote(spec["key"], safe="/"))

            def read(a, b):
                return storage.client.get_object(path, a, b)

        def fetch():
            if rng is None:
                return read(None, None) if url else storage.client.get_object(path)
            return read_lines_of(read, rng[0], rng[1], size)

        out["obj"] = ObjectPartition(spec.get("backend", "stratus"), spec.get("bucket"), spec.get("key"),
                                     part=spec.get("part", 0), data_byte_range=tuple(rng) if rng else None,
                                     chunk_size=spec.get("chunk_size"), url=url, size=size, fetch=fetch)
    return out


FUNCTIONS = {}


def shared_function(key):
    """A pickled function a map sends once: fetched once per process (its
    key names its content), unpickled for every call."""
    data = FUNCTIONS.get(key)
    if data is None:
        if len(FUNCTIONS) >= 32:
            FUNCTIONS.clear()
        data = FUNCTIONS[key] = fetch(key)
    return data


def answer_task(task):
    """The answer to one task, as JSON-ready data."""
    here = "%d.%d" % sys.version_info[:2]
    if task.get("python") and task["python"] != here:
        # Pickled code runs only on the Python it was pickled by.
        return {"error": "the function was pickled by Python %s, and the server runs it with "
                         "Python %s: use the same minor version" % (task["python"], here)}
    func_bytes = base64.b64decode(task["func"]) if task.get("func") else shared_function(task["func_key"])
    if "calls" in task:
        # Several calls (`chunksize`), one after another: one answer each.
        return {"results": [run(func_bytes, call, task.get("timeout")) for call in task["calls"]]}
    return run(func_bytes, task, task.get("timeout"))


def interpreter():
    """Runs on the Python minor version `RUNNER_PYTHON` names: the current
    one, else `pythonX.Y` on PATH, which replaces this process. Returns an
    error message when the worker has no such interpreter."""
    want = os.environ.get("RUNNER_PYTHON")
    here = "%d.%d" % sys.version_info[:2]
    if not want or want == here:
        return None
    found = shutil.which("python" + want)
    if found and not os.environ.get("RUNNER_PYTHON_MOVED"):
        os.environ["RUNNER_PYTHON_MOVED"] = "1"
        os.execv(found, [found, os.path.abspath(__file__)])
    return ("the function was pickled by Python %s, and this worker has no python%s (its python3 is %s): "
            "install it on the worker, or run the client with Python %s" % (want, want, here, here))


def main():
    missing = interpreter()
    # What the function prints (and its subprocesses) is its logs: standard
    # output goes to standard error while it runs, and the answers to the
    # real standard output.
    answer = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    if os.environ.get("STRATUS_WARM") == "1":
        return serve(sys.stdin.buffer, answer, missing)
    task = json.loads(sys.stdin.buffer.read())
    os.environ.update(task.get("env") or {})
    out = {"error": missing} if missing else answer_task(task)
    sys.stdout.flush()
    answer.write(json.dumps(out).encode())
    answer.flush()


def serve(requests, answer, missing=None):
    """The warm loop (`STRATUS/1 <id> <n> <token>` in, `STRATUS/1 ok <n>`
    out): one interpreter serves many tasks, each with the environment and
    token of its own attempt and fresh globals (the function is unpickled
    per call); modules it imports stay loaded. The variables a call is
    given are put back as they were after it."""
    base = dict(os.environ)
    while True:
        header = requests.readline()
        if not header:
            return
        fields = header.split()
        if len(fields) < 3 or fields[0] != b"STRATUS/1":
            raise SystemExit("bad request header: %r" % header[:100])
        body = requests.read(int(fields[2]))
        env = {"STRATUS_INVOCATION_ID": fields[1].decode()}
        if len(fields) > 3 and fields[3] != b"-":
            env["STRATUS_TOKEN"] = fields[3].decode()
        try:
            task = json.loads(body)
            env.update(task.get("env") or {})
            os.environ.update(env)
            out = json.dumps({"error": missing} if missing else answer_task(task)).encode()
        except Exception as e:  # a task it cannot read: that call fails, the process stays
            out = json.dumps({"error": "the runner could not read its task: %r" % e}).encode()
        for k in env:
            if k in base:
                os.environ[k] = base[k]
            else:
                os.environ.pop(k, None)
        sys.stdout.flush()
        answer.write(b"STRATUS/1 ok %d\n" % len(out) + out)
        answer.flush()


def run(func_bytes, call, timeout=None):
    """One call: `{"result"}`, or `{"error", "traceback", "exception"}`;
    one that runs past `timeout` seconds raises TimeoutError."""
    out = {}

    def late(signum, frame):
        raise TimeoutError("the call ran past its timeout of %g s" % timeout)

    try:
        func = cloudpickle.loads(func_bytes)
        packed = base64.b64decode(call["args"]) if "args" in call else fetch(call["args_key"])
        args, kwargs = cloudpickle.loads(packed)
        kwargs.update(special_args(call.get("special")))
        if timeout:
            signal.signal(signal.SIGALRM, late)
            signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            value = func(*args, **kwargs)
        finally:
            if timeout:
                signal.setitimer(signal.ITIMER_REAL, 0)
        out["result"] = base64.b64encode(cloudpickle.dumps(value)).decode()
    except BaseException as e:  # the caller re-raises it
        out["error"] = repr(e)
        out["traceback"] = traceback.format_exc()
        try:
            out["exception"] = base64.b64encode(cloudpickle.dumps(e)).decode()
        except Exception:
            pass
    return out


if __name__ == "__main__":
    main()
