"""`Client`: the Stratus HTTP API from Python.

Everything the CLI does with functions, invocations, jobs, objects and events,
with the same rules: the server is found from the arguments, `STRATUS_URL`,
or `http://127.0.0.1:7878`; the token from the arguments, `STRATUS_TOKEN`, or
the CLI's credentials file. Errors are `stratus.errors.StratusError`s carrying
the server's code and message.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import time
from pathlib import Path
from typing import Any, BinaryIO, Dict, Iterable, Iterator, List, Optional, Union

import httpx

from . import _config
from .errors import ConnectError, FunctionFailed, StratusError, from_response

Json = Dict[str, Any]
Data = Union[bytes, str, BinaryIO, Iterable[bytes]]

#: How long one request waits for a synchronous invoke or a `wait` (the
#: server answers within 15 minutes).
LONG = 15 * 60 + 30


def _bytes(data: Union[bytes, str, None]) -> bytes:
    if data is None:
        return b""
    return data.encode() if isinstance(data, str) else bytes(data)


def pack_dir(directory: Union[str, Path]) -> bytes:
    """A process function's directory as a tar archive whose bytes depend only
    on the files' names, contents and executable bits (as the CLI packs it):
    sorted entries, zero times and owners; links and special files refused."""
    root = Path(directory)
    if not root.is_dir():
        raise ValueError(f"{root} is not a directory")
    entries = sorted(p for p in root.rglob("*"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for path in entries:
            rel = path.relative_to(root).as_posix()
            if path.is_symlink() or not (path.is_dir() or path.is_file()):
                raise ValueError(f"{path}: only regular files and directories go into a bundle")
            info = tarfile.TarInfo(rel)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if path.is_dir():
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
                data = path.read_bytes()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Job(dict):
    """A job as the server describes it (`id`, `state`, `total`, `succeeded`,
    `failed`, ...), a dict with `id` and `state` as attributes too."""

    @property
    def id(self) -> str:
        return self["id"]

    @property
    def state(self) -> str:
        return self["state"]


class Client:
    """A client of one Stratus server, acting in one project.

    >>> c = Client()                      # STRATUS_URL / STRATUS_TOKEN, or the CLI's
    >>> c.invoke("hello", b"Ada")
    b'hello, Ada!'
    """

    def __init__(
        self,
        url: Optional[str] = None,
        token: Optional[str] = None,
        project: Optional[str] = None,
        timeout: float = 30.0,
    ) -> None:
        self.url, self.token, self.project = _config.resolve(url, token, project)
        headers = {}
        if self.token:
            headers["authorization"] = f"Bearer {self.token.strip()}"
        if self.project:
            headers["stratus-project"] = self.project
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- plumbing ----

    def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            res = self._http.request(method, path, **kw)
        except httpx.TransportError as e:
            raise ConnectError("connect", f"cannot reach the Stratus server at {self.url}: {e}") from e
        if res.status_code >= 400:
            raise from_response(res.status_code, res.content)
        return res

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        return self._send(method, path, **kw).json()

    # ---- functions ----

    def upload_artifact(self, data: bytes) -> str:
        """Stores a wasm module or a bundle; its sha256, by which functions name it."""
        digest = hashlib.sha256(data).hexdigest()
        try:
            self._send("HEAD", f"/v1/artifacts/{digest}")
        except StratusError as e:
            if e.status != 404:
                raise
            self._send("PUT", f"/v1/artifacts/{digest}", content=data)
        return digest

    def deploy(
        self,
        name: str,
        *,
        wasm: Union[str, Path, bytes, None] = None,
        directory: Union[str, Path, None] = None,
        cmd: Optional[str] = None,
        warm: bool = False,
        warm_token: bool = False,
        env: Optional[Dict[str, str]] = None,
        timeout: Optional[float] = None,
        memory_mb: Optional[int] = None,
        retries: int = 0,
        network: bool = False,
        max_procs: Optional[int] = None,
        cpus: Optional[float] = None,
        vars: Optional[List[str]] = None,
        secrets: Optional[Dict[str, str]] = None,
        tags: Optional[List[str]] = None,
        pyenv: Optional[str] = None,
    ) -> Json:
        """Deploys a new version of `name`: a WASI module (`wasm`: a path or
        its bytes), or a process function (`directory` and `cmd`, run in the
        unpacked directory; `warm` keeps one process per slot, and
        `warm_token` sends it each attempt's token in the request header). It reads the
        project's variables `vars`, each in the environment variable of its
        name, and its secrets `secrets` ({secret: environment variable}), at
        their values when each attempt starts. Each attempt takes a slot of
        every tag in `tags` that has a limit (`set_limit`). A process
        function runs with the packages of the project's Python environment
        `pyenv` (`create_pyenv`), else of its directory's requirements.txt."""
        if (wasm is None) == (directory is None):
            raise ValueError("give wasm= or directory= (with cmd=)")
        if wasm is not None:
            module = wasm if isinstance(wasm, (bytes, bytearray)) else Path(wasm).read_bytes()
            artifact = self.upload_artifact(bytes(module))
            runtime: Json = {"kind": "wasm"}
        else:
            if not cmd:
                raise ValueError("a process function needs cmd=")
            artifact = self.upload_artifact(pack_dir(directory))  # type: ignore[arg-type]
            runtime = {"kind": "process", "cmd": cmd, "warm": warm}
            if warm_token:
                runtime["token"] = True
        body: Json = {"runtime": runtime, "artifact": artifact, "env": env or {}, "retries": retries}
        if timeout is not None:
            body["timeout_ms"] = int(timeout * 1000)
        for key, value in (("memory_mb", memory_mb), ("max_procs", max_procs), ("cpus", cpus)):
            if value is not None:
                body[key] = value
        if network:
            body["network"] = True
        if vars:
            body["vars"] = list(vars)
        if secrets:
            body["secrets"] = [{"name": k, "env": v} for k, v in secrets.items()]
        if tags:
            body["tags"] = list(tags)
        if pyenv:
            body["pyenv"] = pyenv
        elif directory is not None and (Path(directory) / "requirements.txt").is_file():
            body["requirements"] = (Path(directory) / "requirements.txt").read_text()
        return self._json("PUT", f"/v1/functions/{name}", json=body)

    # ---- Python environments ----

    def create_pyenv(self, name: str, requirements: Union[str, Path, List[str]], python: Optional[str] = None,
                     wait: Optional[float] = None) -> Json:
        """Sets the project's Python environment `name`: the packages of a
        requirements file (its path, its text, or a list of requirements),
        for Python `python` (e.g. "3.11"; default: the workers' python3).
        With `wait` (s), waits until the server's slots have installed it;
        a failed install raises `StratusError` with pip's message."""
        if isinstance(requirements, list):
            text = "".join(r + "\n" for r in requirements)
        elif isinstance(requirements, Path) or (isinstance(requirements, str) and "\n" not in requirements
                                                  and Path(requirements).is_file()):
            text = Path(requirements).read_text()
        else:
            text = str(requirements)
        body: Json = {"requirements": text}
        if python:
            body["python"] = python
        env = self._json("PUT", f"/v1/pyenvs/{name}", json=body)
        if wait is not None:
            deadline = time.monotonic() + wait
            while env["state"] in ("absent", "installing") and time.monotonic() < deadline:
                time.sleep(0.5)
                env = self.pyenv(name)
            if env["state"] == "failed":
                raise StratusError("pyenv_failed", f"python environment {name} did not install: {env.get('message')}")
        return env

    def pyenvs(self) -> List[Json]:
        return self._json("GET", "/v1/pyenvs")["pyenvs"]

    def pyenv(self, name: str) -> Json:
        return self._json("GET", f"/v1/pyenvs/{name}")

    def delete_pyenv(self, name: str) -> None:
        self._send("DELETE", f"/v1/pyenvs/{name}")

    def functions(self) -> List[Json]:
        return self._json("GET", "/v1/functions")["functions"]

    def function(self, name: str) -> Json:
        return self._json("GET", f"/v1/functions/{name}")

    def delete_function(self, name: str) -> None:
        self._send("DELETE", f"/v1/functions/{name}")

    # ---- invocations ----

    def invoke(self, name: str, data: Union[bytes, str, None] = None, *, tags: Optional[List[str]] = None) -> bytes:
        """Runs `name` on `data` and returns its output; raises
        `FunctionFailed` when it failed or timed out. `tags`: concurrency
        tags of this call, beside the function's."""
        params = {"tags": ",".join(tags)} if tags else None
        res = self._send("POST", f"/v1/functions/{name}/invoke", params=params, content=_bytes(data), timeout=LONG)
        if res.status_code == 202:  # still running after the server's longest wait
            return self.wait(res.json()["id"])
        return res.content

    def call_async(self, name: str, data: Union[bytes, str, None] = None, *, tags: Optional[List[str]] = None) -> str:
        """Queues an invocation of `name`; its id, once it is durable."""
        params = {"async": "true"}
        if tags:
            params["tags"] = ",".join(tags)
        return self._json("POST", f"/v1/functions/{name}/invoke", params=params, content=_bytes(data))["id"]

    def invocation(self, id: str, wait: Optional[float] = None) -> Json:
        params = {"wait": str(wait)} if wait is not None else None
        return self._json("GET", f"/v1/invocations/{id}", params=params, timeout=LONG)

    def invocations(self, function: Optional[str] = None, limit: int = 50) -> List[Json]:
        params: Json = {"limit": limit}
        if function:
            params["function"] = function
        return self._json("GET", "/v1/invocations", params=params)["invocations"]

    def wait(self, id: str, timeout: Optional[float] = None) -> bytes:
        """Waits for an invocation to finish: its output, or `FunctionFailed`.
        With `timeout` (seconds), `TimeoutError` past it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 60.0 if deadline is None else max(0.0, min(60.0, deadline - time.monotonic()))
            inv = self.invocation(id, wait=left)
            state = inv["state"]
            if state == "succeeded":
                return self.output(id)
            if state in ("failed", "timed_out", "cancelled"):
                logs = self.logs(id)[-4096:].decode("utf-8", "replace")
                message = (inv.get("error") or {}).get("message") or state
                raise FunctionFailed("function_" + state, message, None, inv, logs)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"invocation {id} is still {state}")

    def output(self, id: str) -> bytes:
        return self._send("GET", f"/v1/invocations/{id}/output").content

    def logs(self, id: str) -> bytes:
        return self._send("GET", f"/v1/invocations/{id}/logs").content

    # ---- jobs ----

    def map(
        self, name: str, inputs: Iterable[Any], reduce: Optional[str] = None, *, tags: Optional[List[str]] = None
    ) -> Job:
        """A job of one task of `name` per input (its JSON text is the task's
        stdin), with an optional reducer; returns once the job is durable.
        Every task carries the concurrency `tags`."""
        lines = b"".join(json.dumps(x).encode() + b"\n" for x in inputs)
        params: Json = {"function": name}
        if reduce:
            params["reduce"] = reduce
        if tags:
            params["tags"] = ",".join(tags)
        headers = {"content-type": "application/x-ndjson"}
        return Job(self._json("POST", "/v1/jobs", params=params, content=lines, headers=headers, timeout=LONG))

    def map_reduce(self, name: str, inputs: Iterable[Any], reducer: str) -> Job:
        return self.map(name, inputs, reduce=reducer)

    def map_objects(
        self, name: str, prefix: str, chunk_size: Optional[int] = None, reduce: Optional[str] = None
    ) -> Job:
        """A job of one task per object under `BUCKET/PREFIX` (or per chunk of
        `chunk_size` bytes, cut at line ends)."""
        body: Json = {"function": name, "objects": prefix}
        if chunk_size:
            body["chunk_size"] = chunk_size
        if reduce:
            body["reduce"] = reduce
        return Job(self._json("POST", "/v1/jobs", json=body, timeout=LONG))

    def job(self, id: str, wait: Optional[float] = None) -> Job:
        params = {"wait": str(wait)} if wait is not None else None
        return Job(self._json("GET", f"/v1/jobs/{id}", params=params, timeout=LONG))

    def jobs(self, limit: int = 50) -> List[Job]:
        return [Job(j) for j in self._json("GET", "/v1/jobs", params={"limit": limit})["jobs"]]

    def wait_job(self, id: str, timeout: Optional[float] = None) -> Job:
        """Waits for a job to end (any end); the job."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 60.0 if deadline is None else max(0.0, min(60.0, deadline - time.monotonic()))
            job = self.job(id, wait=left)
            if job.state in ("succeeded", "failed", "cancelled"):
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {id} is still {job.state}")

    def results(self, id: str) -> List[Json]:
        """A job's task results in input order: `index`, `invocation`,
        `status`, `output` (or `output_base64`), `error`."""
        out: List[Json] = []
        start: Optional[int] = 0
        while start is not None:
            page = self._json("GET", f"/v1/jobs/{id}/results", params={"from": start, "limit": 1000})
            out.extend(page["results"])
            start = page.get("next")
        return out

    def workers(self) -> List[Json]:
        """The workers the server knows: `id`, `host`, `slots`, `local`,
        `state`, `running`, ..."""
        return self._json("GET", "/v1/workers")["workers"]

    def job_timings(self, id: str) -> List[Json]:
        """When each of a job's tasks was queued, started and finished (ms
        since the epoch) and on which worker, in input order: `index`,
        `invocation`, `state`, `attempts`, `worker`, `queued_at`,
        `started_at`, `finished_at`."""
        out: List[Json] = []
        start: Optional[int] = 0
        while start is not None:
            page = self._json("GET", f"/v1/jobs/{id}/timings", params={"from": start, "limit": 10000})
            out.extend(page["tasks"])
            start = page.get("next")
        return out

    def cancel_job(self, id: str) -> int:
        """Cancels a job; how many queued tasks will never start."""
        return self._json("POST", f"/v1/jobs/{id}/cancel")["cancelled_queued"]

    # ---- objects ----

    def put_object(self, key: str, data: Data) -> int:
        """Stores `BUCKET/KEY` from bytes, a file object or an iterator of
        chunks (streamed, never held whole); its size."""
        if isinstance(data, str):
            data = data.encode()
        if hasattr(data, "read"):
            f = data

            def chunks() -> Iterator[bytes]:
                while True:
                    block = f.read(1 << 20)  # type: ignore[union-attr]
                    if not block:
                        return
                    yield block

            content: Any = chunks()
        else:
            content = data
        return self._json("PUT", f"/v1/objects/{key}", content=content, timeout=LONG)["size"]

    def get_object(self, key: str, start: Optional[int] = None, end: Optional[int] = None) -> bytes:
        """`BUCKET/KEY`'s bytes; with `start` (and `end`, exclusive), only
        that range of them."""
        headers = None
        if start is not None:
            last = "" if end is None else str(end - 1)
            headers = {"range": f"bytes={start}-{last}"}
        return self._send("GET", f"/v1/objects/{key}", headers=headers, timeout=LONG).content

    def head_object(self, key: str) -> Optional[int]:
        """`BUCKET/KEY`'s size, or `None` when it does not exist."""
        res = self._http.request("HEAD", f"/v1/objects/{key}")
        if res.status_code == 404:
            return None
        if res.status_code >= 400:
            raise from_response(res.status_code, res.content)
        return int(res.headers["content-length"])

    def stream_object(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """`BUCKET/KEY`'s bytes as they arrive."""
        with self._http.stream("GET", f"/v1/objects/{key}", timeout=LONG) as res:
            if res.status_code >= 400:
                raise from_response(res.status_code, res.read())
            yield from res.iter_bytes(chunk_size)

    def list_objects(self, bucket: str, prefix: str = "") -> List[Json]:
        return self._json("GET", f"/v1/objects/{bucket}", params={"prefix": prefix})["objects"]

    def delete_object(self, key: str) -> None:
        self._send("DELETE", f"/v1/objects/{key}")

    # ---- events ----

    def publish(
        self,
        type: str,
        source: str,
        data: Any = None,
        id: Optional[str] = None,
        subject: Optional[str] = None,
    ) -> Json:
        """Publishes one CloudEvent; `{"accepted", "stored", "duplicates"}`
        once committed (an event whose source and id are stored is ignored)."""
        event: Json = {"specversion": "1.0", "type": type, "source": source}
        for key, value in (("id", id), ("subject", subject), ("data", data)):
            if value is not None:
                event[key] = value
        return self._json("POST", "/v1/events", json=event)

    def publish_batch(self, events: List[Json]) -> Json:
        return self._json("POST", "/v1/events", json=events)

    def events(
        self, after: int = 0, type: Optional[str] = None, subject_prefix: Optional[str] = None, limit: int = 100
    ) -> List[Json]:
        """Events numbered after `after`, oldest first (each has its `seq`)."""
        params: Json = {"after": after, "limit": limit}
        if type:
            params["type"] = type
        if subject_prefix:
            params["subject_prefix"] = subject_prefix
        return self._json("GET", "/v1/events", params=params)["events"]

    def follow_events(
        self, after: int = 0, type: Optional[str] = None, subject_prefix: Optional[str] = None
    ) -> Iterator[Json]:
        """Events as they are stored, from `after` on, without end."""
        params: Json = {"after": after, "follow": "true"}
        if type:
            params["type"] = type
        if subject_prefix:
            params["subject_prefix"] = subject_prefix
        with self._http.stream("GET", "/v1/events", params=params, timeout=None) as res:
            if res.status_code >= 400:
                raise from_response(res.status_code, res.read())
            for line in res.iter_lines():
                if line:
                    yield json.loads(line)

    # ---- variables and secrets ----

    def set_variable(self, name: str, value: Any, *, json_value: bool = False) -> Json:
        """Sets variable `name` to `value` (text; with `json_value`, any
        JSON value, stored as its JSON text). Functions deployed with it in
        `vars` read the new value from their next attempt."""
        if json_value:
            body = {"value": json.dumps(value), "json": True}
        else:
            body = {"value": str(value)}
        return self._json("PUT", f"/v1/variables/{name}", json=body)

    def variable(self, name: str) -> Any:
        """A variable's value: text, or the value itself when it was set as JSON."""
        v = self._json("GET", f"/v1/variables/{name}")
        return json.loads(v["value"]) if v["json"] else v["value"]

    def variables(self) -> List[Json]:
        return self._json("GET", "/v1/variables")["variables"]

    def delete_variable(self, name: str) -> None:
        self._send("DELETE", f"/v1/variables/{name}")

    def set_secret(self, name: str, value: str) -> Json:
        """Sets secret `name`; the answer (and every later one) holds its
        version and dates, never its value."""
        return self._json("PUT", f"/v1/secrets/{name}", json={"value": value})

    def secrets(self) -> List[Json]:
        return self._json("GET", "/v1/secrets")["secrets"]

    def delete_secret(self, name: str) -> None:
        self._send("DELETE", f"/v1/secrets/{name}")

    # ---- concurrency limits ----

    def set_limit(self, tag: str, slots: int) -> Json:
        """At most `slots` attempts carrying `tag` run at once; 0 pauses it."""
        return self._json("PUT", f"/v1/limits/{tag}", json={"slots": slots})

    def limit(self, tag: str) -> Json:
        """A limit with its occupancy: `running`, `waiting`, and the
        attempts holding its slots (`holders`) and waiting (`waiters`)."""
        return self._json("GET", f"/v1/limits/{tag}")

    def limits(self) -> List[Json]:
        return self._json("GET", "/v1/limits")["limits"]

    def delete_limit(self, tag: str) -> None:
        self._send("DELETE", f"/v1/limits/{tag}")

    def reset_limit(self, tag: str) -> Json:
        """Releases every slot of `tag` (admin)."""
        return self._json("POST", f"/v1/limits/{tag}/reset")

    def whoami(self) -> Json:
        return self._json("GET", "/v1/whoami")
