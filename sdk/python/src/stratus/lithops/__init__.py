"""Lithops' API on Stratus: a Lithops program runs here when `import lithops`
becomes `import stratus.lithops as lithops`.

`FunctionExecutor` runs local Python functions (lambdas, closures and
`functools.partial` too, serialised with cloudpickle) on Stratus: it deploys
a runner (a process function with the Python standard library and the
cloudpickle this interpreter uses) once per project, sends each call's
arguments as the task's input, and unpickles results, or re-raises the
function's exception. `call_async` is one invocation; `map` is one job.

What is here: `FunctionExecutor(config=None, backend=..., storage=...,
runtime=..., runtime_memory=..., max_workers=..., ...)` (Lithops' settings
accepted and ignored where they do not apply), `call_async`, `map`
(`iterdata` a list, tuple, range or set; dicts as keyword arguments, tuples
as positional ones; `extra_args`; `timeout`; objects as data: a function
with an `obj` parameter maps over `BUCKET/PREFIX/`, `stratus://BUCKET/KEY`
or `http(s)://` URLs, one call per object or per `obj_chunk_size` /
`obj_chunk_number` partition, cut at line ends), the special parameters
`obj`, `storage` (a `Storage`) and `id`, `map_reduce` (the reducer gets the
list of map results; `obj_reduce_by_key` runs one per object), `Storage`
and the `config` helpers, `get_result(fs=None, throw_except=True,
timeout=None)`, `wait(fs=None, return_when=ALL_COMPLETED|ANY_COMPLETED|ALWAYS,
timeout=None)`, `plot(fs=None, dst=None)` (Lithops' timeline and histogram as
PNGs, from the server's per-task timings), `clean`, and use as a context
manager.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Union

import cloudpickle

from ..client import Client
from ..errors import NotFound, StratusError
from .storage import BACKEND, Storage
from .storage.utils import CloudObject, StorageNoSuchKeyError

ALWAYS = 0
ANY_COMPLETED = 1
ALL_COMPLETED = 2

#: A pickled function bigger than this goes to the object store once,
#: instead of with every task.
INLINE_FUNCTION = 256 * 1024
#: A map whose calls would carry more than this many bytes of the pickled
#: function between them sends it once, through the object store (each
#: runner process fetches it once).
SHARED_FUNCTION = 64 * 1024
#: A call's pickled arguments bigger than this go to the object store, and
#: the task carries their key: a task's input stays small however big the
#: data (the server's request bodies are bounded).
INLINE_ARGS = 1 << 20

_TERMINAL = ("succeeded", "failed", "timed_out", "cancelled")


class FunctionException(Exception):
    """A call's function raised, and its exception could not be rebuilt here."""

    def __init__(self, message: str, traceback: str = "") -> None:
        super().__init__(message)
        self.traceback = traceback


#: The pure-Python packages the runner ships beside its script: cloudpickle,
#: and this SDK with its HTTP client, so that a function can use
#: `stratus.lithops` itself (executors inside executors, futures returned).
_VENDORED = ("cloudpickle", "stratus", "httpx", "httpcore", "h11", "anyio", "sniffio", "idna", "certifi",
             "typing_extensions")


def _runner_dir() -> Path:
    """The runner's bundle: the runner script and the packages it ships."""
    import importlib

    d = Path(tempfile.mkdtemp(prefix="stratus-lithops-"))
    shutil.copy(Path(__file__).with_name("_runner.py"), d / "runner.py")
    vendor = d / "vendor"
    vendor.mkdir()
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in _VENDORED:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        path = Path(module.__file__)  # type: ignore[arg-type]
        if path.name == "__init__.py":
            shutil.copytree(path.parent, vendor / name, ignore=skip)
        else:
            shutil.copy(path, vendor / path.name)
    return d


class ResponseFuture:
    """One call: an invocation, or one task of a map job."""

    def __init__(self, executor: "FunctionExecutor", call_id: str, invocation: Optional[str] = None,
                 job: Optional[str] = None, index: int = 0, sub: Optional[int] = None) -> None:
        self._executor = executor
        self.call_id = call_id
        self.invocation = invocation
        #: Its place among the calls of its task, when a task runs several
        #: (`chunksize`).
        self.sub = sub
        self.job = job
        self.index = index
        self._state: Optional[str] = None
        self._read = False
        self._output: Optional[Dict[str, Any]] = None
        self._failure: Optional[str] = None
        #: False for the map calls of a `map_reduce`, whose results go to
        #: the reducer, not to `get_result`.
        self._produce_output = True

    def __getstate__(self) -> Dict[str, Any]:
        # A future returned by a function travels without its executor (and
        # its HTTP client); the executor that receives it adopts it.
        state = dict(self.__dict__)
        state["_executor"] = None
        return state

    @property
    def ready(self) -> bool:
        """Accepted by the server: queued, and so bound to run."""
        return True

    @property
    def running(self) -> bool:
        return False

    @property
    def done(self) -> bool:
        return self._state in _TERMINAL

    @property
    def success(self) -> bool:
        return self._state == "succeeded" and self._output is not None and "error" not in self._output

    @property
    def error(self) -> bool:
        return self.done and not self.success

    def _settle(self, state: str, output: Optional[str], failure: Optional[str]) -> None:
        self._state = state
        if output is not None:
            try:
                self._output = json.loads(output)
                if self.sub is not None and self._output is not None:
                    self._output = self._output["results"][self.sub]
            except (ValueError, KeyError, IndexError, TypeError):
                self._output, self._failure = None, f"the runner printed no result: {output[:200]!r}"
        if failure:
            self._failure = failure

    def result(self, throw_except: bool = True, timeout: Optional[float] = None) -> Any:
        """The call's result; its exception re-raised (or `None` without
        `throw_except`) if it raised."""
        if not self.done:
            self._executor.wait([self], return_when=ALL_COMPLETED, timeout=timeout)
        out = self._output or {}
        if "result" in out:
            value = cloudpickle.loads(base64.b64decode(out["result"]))
            return self._executor._resolve(value)
        if not throw_except:
            return None
        if "exception" in out:
            try:
                exc = cloudpickle.loads(base64.b64decode(out["exception"]))
            except Exception:
                exc = None
            if isinstance(exc, BaseException):
                # The remote traceback goes with it (Python 3.11+: a note).
                if out.get("traceback") and hasattr(exc, "add_note"):
                    exc.add_note("Traceback on the Stratus worker:\n" + out["traceback"].rstrip())
                raise exc
        if "error" in out:
            raise FunctionException(out["error"], out.get("traceback", ""))
        raise FunctionException(self._failure or f"the call ended {self._state}")

    def __repr__(self) -> str:
        return f"<ResponseFuture {self.call_id} {self._state or 'pending'}>"


class FuturesList(list):
    """The futures of a `map`, which can be chained: `fexec.map(f,
    data).map(g).get_result()` maps `g` over `f`'s results."""

    def __init__(self, executor: "FunctionExecutor", futures: Iterable[ResponseFuture]) -> None:
        super().__init__(futures)
        self._executor = executor

    def __reduce__(self) -> Any:
        # Returned by a function: a plain list of futures.
        return (list, (list(self),))

    def map(self, map_function: Callable, **kw: Any) -> "FuturesList":
        return self._executor.map(map_function, list(self), **kw)

    def map_reduce(self, map_function: Callable, reduce_function: Callable, **kw: Any) -> ResponseFuture:
        return self._executor.map_reduce(map_function, self._executor._consume(list(self)), reduce_function, **kw)

    def wait(self, **kw: Any) -> Any:
        return self._executor.wait(list(self), **kw)

    def get_result(self, **kw: Any) -> Any:
        return self._executor.get_result(list(self), **kw)


class FunctionExecutor:
    """Runs Python functions on Stratus, as Lithops' `FunctionExecutor` does
    on its backends. Settings Lithops reads from its config (`backend`,
    `storage`, `runtime`, `runtime_memory`, `max_workers`, `log_level`, ...)
    are accepted; `runtime` names a Python environment of the project
    (`stratus pyenv`) whose packages the calls import; `runtime_memory`
    (MiB) and `timeout` (s) apply to the
    runner, the rest do not apply here."""

    def __init__(
        self,
        config: Optional[Dict[str, Any]] = None,
        runtime: Optional[str] = None,
        runtime_memory: Optional[int] = None,
        timeout: Optional[float] = None,
        client: Optional[Client] = None,
        **settings: Any,
    ) -> None:
        self.config = dict(config or {})
        stratus_cfg = self.config.get("stratus", {})
        self.client = client or Client(stratus_cfg.get("url"), stratus_cfg.get("token"), stratus_cfg.get("project"))
        #: A Python environment of the project (`stratus pyenv`) whose
        #: packages the calls import.
        self.runtime = runtime or stratus_cfg.get("runtime")
        self.runtime_memory = runtime_memory or self.config.get("lithops", {}).get("runtime_memory")
        self.timeout = timeout
        self.settings = settings
        self.executor_id = hashlib.sha1(str(time.time_ns()).encode()).hexdigest()[:10]
        self._functions: Dict[bool, str] = {}
        self._futures: List[ResponseFuture] = []
        self._objects: List[str] = []
        self._calls = 0
        self._last_call = ""
        self.storage = Storage(config=self.config, client=self.client)


    # ---- set-up ----

    def _runner(self, network: bool = False) -> str:
        """The runner function's name, deployed the first time it is needed;
        with `network`, the one that may reach the network (for calls that
        read URLs), a function of its own."""
        if network in self._functions:
            return self._functions[network]
        pyenv = None
        if self.runtime:
            try:
                pyenv = self.client.pyenv(self.runtime)
            except NotFound:
                raise ValueError(f"runtime {self.runtime!r} is not a Python environment of this project: create it "
                                 f"with `stratus pyenv create {self.runtime} --requirements requirements.txt`") from None
        d = _runner_dir()
        try:
            from ..client import pack_dir

            digest = hashlib.sha256(pack_dir(d)).hexdigest()
            # One runner per code, Python version, environment and network.
            py = "%d%d" % sys.version_info[:2]
            env_tag = f"-{hashlib.sha256(self.runtime.encode()).hexdigest()[:8]}" if self.runtime else ""
            name = f"lithops-{digest[:16]}-py{py}{env_tag}{'-net' if network else ''}"
            try:
                existing = self.client.function(name)
            except NotFound:
                existing = None
            pinned = (existing or {}).get("pyenv") or {}
            stale_env = pyenv is not None and (pinned.get("requirements"), pinned.get("python")) != (
                pyenv["requirements"], pyenv.get("python"))
            # Another memory or timeout than the runner has: a new version.
            stale_limits = existing is not None and (
                (self.runtime_memory is not None and existing.get("memory_mb") != int(self.runtime_memory))
                or (self.timeout is not None and existing.get("timeout_ms") != int(self.timeout * 1000)))
            if existing is None or existing.get("artifact") != digest or stale_env or stale_limits:
                self.client.deploy(
                    name,
                    directory=d,
                    cmd="python3 runner.py",
                    # Pickled code runs only on the Python minor version that
                    # pickled it: the runner moves to that interpreter.
                    env={"RUNNER_PYTHON": "%d.%d" % sys.version_info[:2]},
                    warm=True,
                    warm_token=True,
                    memory_mb=self.runtime_memory,
                    timeout=self.timeout,
                    network=network,
                    pyenv=self.runtime,
                )
        finally:
            shutil.rmtree(d, ignore_errors=True)
        self._functions[network] = name
        return name

    def _task(self, func_ref: Dict[str, str], args: Sequence[Any], kwargs: Dict[str, Any],
              env: Optional[Dict[str, str]] = None, special: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        pickled = cloudpickle.dumps((tuple(args), dict(kwargs)))
        task: Dict[str, Any] = dict(func_ref, python="%d.%d" % sys.version_info[:2])
        if len(pickled) <= INLINE_ARGS:
            task["args"] = base64.b64encode(pickled).decode()
        else:
            key = f"lithops/{self.executor_id}/args-{hashlib.sha256(pickled).hexdigest()[:24]}.pickle"
            self.client.put_object(key, pickled)
            self._objects.append(key)
            task["args_key"] = key
        if env:
            task["env"] = {str(k): str(v) for k, v in env.items()}
        if special:
            task["special"] = special
        return task

    def _special(self, params: "set[str]", kwargs: Dict[str, Any], index: int,
                 obj: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """The special parameters the runner fills in for a function whose
        parameters are `params`: `storage` (a `Storage` of this project),
        `id` (the call's index) and `obj` (the object or partition it
        reads), unless the call gives them."""
        special: Dict[str, Any] = {}
        if "storage" in params and "storage" not in kwargs:
            special["storage"] = self.storage_config()
        if "id" in params and "id" not in kwargs:
            special["id"] = index
        if obj is not None:
            special["obj"] = obj
        return special

    def storage_config(self) -> Dict[str, Any]:
        """What a function's `storage` is made from: the bucket; the server
        and token are the attempt's own."""
        return {"bucket": self.storage.bucket}

    def _func_ref(self, func: Callable, calls: int = 1) -> Dict[str, str]:
        """How `calls` tasks name the function: inline, or by the key of
        an object holding it (named by its content, so a runner may keep
        what it fetched)."""
        _by_value(func)
        pickled = cloudpickle.dumps(func)
        if len(pickled) <= INLINE_FUNCTION and len(pickled) * calls <= SHARED_FUNCTION:
            return {"func": base64.b64encode(pickled).decode()}
        key = f"lithops/{self.executor_id}/func-{hashlib.sha256(pickled).hexdigest()[:32]}.pickle"
        if key not in self._objects:
            self.client.put_object(key, pickled)
            self._objects.append(key)
        return {"func_key": key}

    def _call_id(self) -> str:
        self._calls += 1
        return f"{self.executor_id}/{self._calls:05d}"

    # ---- Lithops' API ----

    def call_async(self, func: Callable, data: Any = (), extra_args: Any = None, timeout: Optional[float] = None,
                   extra_env: Optional[Dict[str, str]] = None, **_: Any) -> ResponseFuture:
        """Runs `func` once on `data` (a tuple: positional arguments; a dict:
        keyword arguments; anything else: the one argument), with
        `extra_env` in its environment; with `timeout` (s), a call that runs
        longer raises `TimeoutError`."""
        if isinstance(data, ResponseFuture):
            data = self._consume([data])[0]
        args, kwargs = _arguments(data, extra_args)
        task = self._task(self._func_ref(func), args, kwargs, extra_env, self._special(_parameters(func), kwargs, 0))
        if timeout:
            task["timeout"] = float(timeout)
        invocation = self.client.call_async(self._runner(), json.dumps(task))
        self._last_call = "call_async"
        future = ResponseFuture(self, self._call_id(), invocation=invocation)
        self._futures.append(future)
        return future

    def map(self, map_function: Callable, map_iterdata: Union[Iterable[Any], str], extra_args: Any = None,
            chunksize: Optional[int] = None, timeout: Optional[float] = None,
            extra_env: Optional[Dict[str, str]] = None, obj_chunk_size: Optional[int] = None,
            obj_chunk_number: Optional[int] = None, **_: Any) -> "FuturesList":
        """Runs `map_function` once per element of `map_iterdata` (a list,
        tuple, range or set; futures stand for their results, which are then
        read), as one job; a future per call, in order. A function with an
        `obj` parameter maps over objects instead (see the module's doc).
        With `timeout` (s), a call that runs longer raises `TimeoutError`."""
        futures, _ = self._map(map_function, map_iterdata, extra_args, extra_env, obj_chunk_size, obj_chunk_number,
                               chunksize, timeout)
        self._last_call = "map"
        return futures

    def _map(self, func: Callable, iterdata: Union[Iterable[Any], str], extra_args: Any,
             extra_env: Optional[Dict[str, str]], obj_chunk_size: Optional[int], obj_chunk_number: Optional[int],
             chunksize: Optional[int] = None, timeout: Optional[float] = None) -> "tuple[FuturesList, List[str]]":
        """The map's futures, and for each call the object it reads (`""`
        when it reads none)."""
        items = [iterdata] if isinstance(iterdata, str) else list(iterdata)
        if items and all(isinstance(x, ResponseFuture) for x in items):
            items = self._consume(items)
        calls: List["tuple[tuple, Dict[str, Any], Optional[Dict[str, Any]]]"] = []
        params = _parameters(func)
        if "obj" in params:
            for item in items:
                rest = dict(item) if isinstance(item, dict) else {}
                where = rest.pop("obj", None) if isinstance(item, dict) else item
                if not isinstance(where, str):
                    raise ValueError(f"a function with an obj parameter maps over objects: got {where!r}")
                for spec in self._objects_of(where, obj_chunk_size, obj_chunk_number):
                    args, kwargs = _arguments(rest, extra_args)
                    calls.append((args, kwargs, spec))
        else:
            calls = [(*_arguments(item, extra_args), None) for item in items]
        ref = self._func_ref(func, len(calls))
        tasks = [self._task(ref, args, kwargs, extra_env, self._special(params, kwargs, i, spec))
                 for i, (args, kwargs, spec) in enumerate(calls)]
        if not tasks:
            return FuturesList(self, []), []
        if timeout:
            for t in tasks:
                t["timeout"] = float(timeout)
        network = any(spec and spec.get("url") for _, _, spec in calls)
        n = max(1, int(chunksize or 1))
        if n == 1:
            job = self.client.map(self._runner(network), tasks)
            places = [(i, None) for i in range(len(tasks))]
        else:
            # `chunksize` calls per task, run one after another by the runner.
            per_call = ("args", "args_key", "special")
            grouped = []
            for start in range(0, len(tasks), n):
                group = tasks[start : start + n]
                common = {k: v for k, v in group[0].items() if k not in per_call}
                common["calls"] = [{k: t[k] for k in per_call if k in t} for t in group]
                grouped.append(common)
            job = self.client.map(self._runner(network), grouped)
            places = [(i // n, i % n) for i in range(len(tasks))]
        futures = FuturesList(self, [ResponseFuture(self, self._call_id(), job=job.id, index=t, sub=sub)
                                     for t, sub in places])
        self._futures.extend(futures)
        return futures, [(spec or {}).get("url") or (spec or {}).get("path", "") for _, _, spec in calls]

    def _objects_of(self, where: str, chunk_size: Optional[int], chunk_number: Optional[int]) -> List[Dict[str, Any]]:
        """The objects (or partitions) a string of iterdata names: a URL; a
        `[BACKEND://]BUCKET/KEY`; or every object under `[BACKEND://]BUCKET/
        PREFIX/` (or a whole bucket)."""
        if where.startswith(("http://", "https://")):
            size = None
            if chunk_size or chunk_number:
                import httpx

                size = int(httpx.head(where, follow_redirects=True).headers["content-length"])
            return _partitions({"url": where}, size, chunk_size, chunk_number)
        path = where.split("://", 1)[1] if "://" in where else where
        bucket, _, key = path.partition("/")
        if not key or key.endswith("/"):
            listed = [(o["Key"], o["Size"]) for o in self.storage.list_objects(bucket, key)]
            if not listed:
                raise StorageNoSuchKeyError(bucket, key)
        else:
            size = self.client.head_object(f"{bucket}/{key}")
            if size is None:
                raise StorageNoSuchKeyError(bucket, key)
            listed = [(key, size)]
        out = []
        for k, size in listed:
            base = {"backend": BACKEND, "bucket": bucket, "key": k, "path": f"{bucket}/{k}"}
            out.extend(_partitions(base, size, chunk_size, chunk_number))
        return out

    def _resolve(self, value: Any) -> Any:
        """A call's result, with the futures it returned (a function that
        started calls of its own) replaced by their results, as Lithops does:
        a future by its result, a list of futures by the list of results."""
        if isinstance(value, ResponseFuture):
            value._executor = self
            return value.result()
        if isinstance(value, list) and value and all(isinstance(v, ResponseFuture) for v in value):
            for v in value:
                v._executor = self
            self.wait(value, return_when=ALL_COMPLETED)
            return [v.result() for v in value]
        return value

    def _consume(self, futures: List["ResponseFuture"]) -> List[Any]:
        """The results of futures used as data, which are then read."""
        self.wait(futures, return_when=ALL_COMPLETED)
        results = [f.result() for f in futures]
        for f in futures:
            f._read = True
        return results

    def map_reduce(self, map_function: Callable, map_iterdata: Union[Iterable[Any], str], reduce_function: Callable,
                   extra_args: Any = None, extra_env: Optional[Dict[str, str]] = None,
                   obj_chunk_size: Optional[int] = None, obj_chunk_number: Optional[int] = None,
                   obj_reduce_by_key: bool = False, reducer_one_per_object: bool = False,
                   spawn_reducer: int = 20, **_: Any) -> "FuturesList":
        """`map`, then `reduce_function` on the list of the map's results (in
        input order), on Stratus: once, or once per object with
        `obj_reduce_by_key`. Returns every call's future, the map's and the
        reducers'; `get_result` gives the reducers' results."""
        futures, objects = self._map(map_function, map_iterdata, extra_args, extra_env, obj_chunk_size,
                                     obj_chunk_number)
        self.wait(futures, return_when=ALL_COMPLETED)
        for f in futures:
            f._read = True
            f._produce_output = False
        groups: Dict[str, List[ResponseFuture]] = {}
        if obj_reduce_by_key or reducer_one_per_object:
            for f, o in zip(futures, objects):
                groups.setdefault(o, []).append(f)
        else:
            groups[""] = list(futures)
        reducers = [self.call_async(reduce_function, ([f.result() for f in group],), extra_env=extra_env)
                    for group in groups.values()]
        self._last_call = "map_reduce"
        return FuturesList(self, list(futures) + reducers)

    def wait(self, fs: Optional[Sequence[ResponseFuture]] = None, throw_except: bool = True,
             return_when: int = ALL_COMPLETED, timeout: Optional[float] = None,
             **_: Any) -> "tuple[List[ResponseFuture], List[ResponseFuture]]":
        """Waits for the futures (all of this executor's by default): for all
        of them, for any one, or not at all (`ALWAYS`); `(done, not_done)`."""
        futures = list(self._futures if fs is None else ([fs] if isinstance(fs, ResponseFuture) else fs))
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._refresh([f for f in futures if not f.done])
            done = [f for f in futures if f.done]
            pending = [f for f in futures if not f.done]
            if (return_when == ALWAYS or not pending or (return_when == ANY_COMPLETED and done)):
                return done, pending
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"{len(pending)} of {len(futures)} calls are not done")
            # Waits on the server for one of them (inside a function, its
            # slot is lent to other work meanwhile, so parents waiting for
            # their children do not take every slot).
            left = 5.0 if return_when == ALL_COMPLETED else 0.5
            if deadline is not None:
                left = max(0.0, min(left, deadline - time.monotonic()))
            first = pending[0]
            if first.job:
                self.client.job(first.job, wait=left)
            else:
                self.client.invocation(first.invocation, wait=left)  # type: ignore[arg-type]

    def get_result(self, fs: Optional[Union[ResponseFuture, Sequence[ResponseFuture]]] = None,
                   throw_except: bool = True, timeout: Optional[float] = None, **_: Any) -> Any:
        """The results of the futures, in order: by default those of this
        executor not read yet (which are then read). As in Lithops, a single
        result comes alone unless the last call was a `map`."""
        if fs is None:
            futures = [f for f in self._futures if not f._read]
        else:
            futures = [fs] if isinstance(fs, ResponseFuture) else list(fs)
        futures = [f for f in futures if f._produce_output]
        self.wait(futures, return_when=ALL_COMPLETED, timeout=timeout)
        results = [f.result(throw_except=throw_except) for f in futures]
        if fs is None:
            for f in futures:
                f._read = True
        if len(results) == 1 and self._last_call != "map":
            return results[0]
        return results

    def plot(self, fs: Optional[Sequence[ResponseFuture]] = None, dst: Optional[str] = None) -> List[str]:
        """Lithops' plots of the calls (all of this executor's by default):
        a timeline (one bar per call from start to end, by worker) and a
        histogram of run times, as PNGs named `DST_timeline.png` and
        `DST_histogram.png` (`dst` defaults to `./lithops_plots/<executor>`);
        their paths. Needs matplotlib (`pip install 'stratus-sdk[plot]'`)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        futures = list(self._futures if fs is None else fs)
        self.wait(futures, return_when=ALL_COMPLETED)
        rows = []
        timings: Dict[str, Dict[int, Dict[str, Any]]] = {}
        for f in futures:
            if f.job:
                if f.job not in timings:
                    timings[f.job] = {t["index"]: t for t in self.client.job_timings(f.job)}
                t = timings[f.job].get(f.index)
            else:
                inv = self.client.invocation(f.invocation)  # type: ignore[arg-type]
                t = dict(inv, index=0)
            if t and t.get("started_at") and t.get("finished_at"):
                rows.append((t["queued_at"], t["started_at"], t["finished_at"], t.get("worker") or "-", t["state"]))
        if not rows:
            raise ValueError("no call has run yet")
        base = min(r[0] for r in rows)
        dst = dst or os.path.join("lithops_plots", self.executor_id)
        os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
        fig, ax = plt.subplots(figsize=(10, 6))
        workers = sorted({r[3] for r in rows})
        for i, (queued, started, finished, worker, state) in enumerate(sorted(rows, key=lambda r: (r[3], r[1]))):
            colour = "tab:green" if state == "succeeded" else "tab:red"
            ax.plot([(queued - base) / 1000, (started - base) / 1000], [i, i], color="lightgrey", linewidth=1)
            ax.plot([(started - base) / 1000, (finished - base) / 1000], [i, i], color=colour, linewidth=2)
        ax.set_xlabel("seconds since the first call was queued")
        ax.set_ylabel(f"calls, by worker ({len(workers)} worker{'s' if len(workers) != 1 else ''})")
        ax.set_title(f"{len(rows)} calls: waiting (grey), running (green), failed (red)")
        timeline = f"{dst}_timeline.png"
        fig.savefig(timeline)
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(10, 6))
        ax.hist([(r[2] - r[1]) / 1000 for r in rows], bins=min(50, max(5, len(rows) // 4)))
        ax.set_xlabel("run time (s)")
        ax.set_ylabel("calls")
        histogram = f"{dst}_histogram.png"
        fig.savefig(histogram)
        plt.close(fig)
        return [timeline, histogram]

    def clean(self, fs: Optional[Sequence[ResponseFuture]] = None, cs: Any = None, clean_cloudobjects: bool = True,
              **_: Any) -> None:
        """Drops the objects this executor stored (large functions and
        arguments), and the cloud objects `cs` (one, or a list)."""
        if cs is not None:
            self.storage.delete_cloudobjects([cs] if isinstance(cs, CloudObject) else list(cs))
        for key in self._objects:
            try:
                self.client.delete_object(key)
            except StratusError:
                pass
        self._objects.clear()

    def __enter__(self) -> "FunctionExecutor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.clean()

    # ---- state ----

    def _refresh(self, futures: List[ResponseFuture]) -> None:
        """Reads the state (and output) of every pending future: once per
        invocation, once per job."""
        by_job: Dict[str, List[ResponseFuture]] = {}
        for f in futures:
            if f.job:
                by_job.setdefault(f.job, []).append(f)
            elif f.invocation:
                inv = self.client.invocation(f.invocation)
                if inv["state"] in _TERMINAL:
                    output = self.client.output(f.invocation).decode() if inv["state"] == "succeeded" else None
                    f._settle(inv["state"], output, (inv.get("error") or {}).get("message"))
        for job_id, fs in by_job.items():
            job = self.client.job(job_id)
            if job.state not in _TERMINAL and job["succeeded"] + job["failed"] + job["cancelled"] < job["total"]:
                continue
            results = {r["index"]: r for r in self.client.results(job_id)}
            for f in fs:
                r = results.get(f.index)
                if r and r["status"] in _TERMINAL:
                    failure = (r.get("error") or {}).get("message")
                    f._settle(r["status"], r.get("output"), failure)


def _installed_paths() -> List[str]:
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    paths.update(p for p in sysconfig.get_paths().values() if p)
    return [os.path.realpath(p) for p in paths]


def _user_module(module: Any) -> bool:
    """A module of the caller's own: from a file, not installed, not the
    standard library (the runner could not import it)."""
    path = getattr(module, "__file__", None)
    if path is None:
        return False
    real = os.path.realpath(path)
    return not any(real.startswith(p + os.sep) for p in _installed_paths())


def _by_value(func: Callable) -> None:
    """The caller's own modules that `func` uses, directly or through each
    other, are pickled with their code, as Lithops' module analysis ships
    the modules a function needs: the runner could not import them.
    Installed packages and the standard library go by reference."""
    import functools
    import types

    seen: "set[int]" = set()

    def module(m: Any) -> None:
        if id(m) in seen or not isinstance(m, types.ModuleType):
            return
        seen.add(id(m))
        if m.__name__ == "__main__" or not _user_module(m):
            return
        cloudpickle.register_pickle_by_value(m)
        for v in list(vars(m).values()):
            value(v)

    def value(v: Any) -> None:
        if isinstance(v, types.ModuleType):
            module(v)
        elif isinstance(v, functools.partial):
            value(v.func)
        elif isinstance(v, (types.FunctionType, type)):
            module(sys.modules.get(getattr(v, "__module__", None) or ""))
            if isinstance(v, types.FunctionType) and id(v) not in seen:
                seen.add(id(v))
                code(v, v.__code__)

    def code(f: Any, c: Any) -> None:
        # What a function (of __main__ too) names: its globals and closure.
        for name in c.co_names:
            if name in f.__globals__:
                value(f.__globals__[name])
        for const in c.co_consts:
            if isinstance(const, types.CodeType):
                code(f, const)
        for cell in f.__closure__ or ():
            try:
                value(cell.cell_contents)
            except ValueError:
                pass

    value(func)


def _parameters(func: Callable) -> "set[str]":
    """The names of `func`'s parameters (none when they cannot be read)."""
    import inspect

    try:
        return set(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return set()


def _partitions(base: Dict[str, Any], size: Optional[int], chunk_size: Optional[int],
                chunk_number: Optional[int]) -> List[Dict[str, Any]]:
    """An object as one call's `obj`, or cut into partitions of `chunk_size`
    bytes, or into `chunk_number` of them (whole lines each: the runner
    reads on to the end of a partition's last line)."""
    if size is None or not (chunk_size or chunk_number) or size == 0:
        return [dict(base, part=0, size=size)]
    if chunk_number:
        n = max(1, int(chunk_number))
        cuts = [size * i // n for i in range(n + 1)]
    else:
        step = max(1, int(chunk_size))  # type: ignore[arg-type]
        cuts = list(range(0, size, step)) + [size]
    return [dict(base, part=i, size=size, range=[cuts[i], cuts[i + 1]], chunk_size=cuts[i + 1] - cuts[i])
            for i in range(len(cuts) - 1)]


def _arguments(data: Any, extra_args: Any) -> "tuple[tuple, dict]":
    """Lithops' rules: a dict is keyword arguments, a tuple positional ones,
    anything else the one argument; `extra_args` (a tuple or a dict) is added."""
    if isinstance(data, dict):
        # Lithops' dicts may also carry `args` (positional) and `kwargs`.
        rest = dict(data)
        args = tuple(rest.pop("args", ()))
        kwargs = dict(rest.pop("kwargs", {}))
        kwargs.update(rest)
    elif isinstance(data, tuple):
        args, kwargs = data, {}
    else:
        args, kwargs = (data,), {}
    if isinstance(extra_args, dict):
        kwargs.update(extra_args)
    elif isinstance(extra_args, tuple):
        args = tuple(args) + extra_args
    elif extra_args is not None:
        args = tuple(args) + (extra_args,)
    return tuple(args), kwargs


__all__ = [
    "ALL_COMPLETED",
    "ALWAYS",
    "ANY_COMPLETED",
    "CloudObject",
    "FunctionException",
    "FunctionExecutor",
    "FuturesList",
    "ResponseFuture",
    "RetryingFunctionExecutor",
    "Storage",
    "StorageNoSuchKeyError",
]

from .retries import RetryingFunctionExecutor  # noqa: E402  (it builds on the names above)
