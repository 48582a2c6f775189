"""`lithops.retries`: `RetryingFunctionExecutor` wraps a `FunctionExecutor`
and runs a call again, with the same input, when it raised, up to `retries`
times (`map(..., retries=N)`, else the config's `lithops.retries`, else 0).

The retries are decided here, by the client, as in Lithops: a call that
raised is an invocation that succeeded on the server (the runner answered
with the exception), which the server's own retries (`fn deploy --retries`,
for attempts that crash or time out) do not repeat."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from . import ALL_COMPLETED, ALWAYS, ANY_COMPLETED, FunctionExecutor, ResponseFuture

__all__ = ["RetryingFunctionExecutor", "RetryingFuture"]


class RetryingFuture:
    """A call that is run again when it raises: the future of its latest
    run, with the function and input to run it again."""

    def __init__(self, response_future: ResponseFuture, map_function: Callable[..., Any], input: Any,
                 retries: Optional[int] = None, **map_kwargs: Any) -> None:
        self.response_future = response_future
        self.map_function = map_function
        self.input = input
        self.retries = retries or 0
        self.map_kwargs = map_kwargs
        self.failure_count = 0
        self.cancelled = False

    def cancel(self) -> None:
        """No more retries (a run in progress goes on)."""
        self.cancelled = True

    def _should_retry(self) -> bool:
        return not self.cancelled and self.failure_count <= self.retries

    def _retry(self, executor: FunctionExecutor) -> None:
        self.response_future = executor.map(self.map_function, [self.input], **self.map_kwargs)[0]

    @property
    def done(self) -> bool:
        return self.response_future.done

    @property
    def error(self) -> bool:
        return self.response_future.error

    @property
    def success(self) -> bool:
        return self.response_future.success

    def result(self, throw_except: bool = True, timeout: Optional[float] = None, **_: Any) -> Any:
        """The latest run's result, or its exception re-raised."""
        return self.response_future.result(throw_except=throw_except, timeout=timeout)

    def __repr__(self) -> str:
        return f"<RetryingFuture {self.response_future!r} failures={self.failure_count}>"


class RetryingFunctionExecutor:
    """`FunctionExecutor`'s `map`, `wait` and `clean`, with each call run
    again when it raises, up to its `retries`."""

    def __init__(self, executor: FunctionExecutor) -> None:
        self.executor = executor
        self.config = executor.config

    def __enter__(self) -> "RetryingFunctionExecutor":
        self.executor.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.executor.__exit__(*exc)

    def _retries(self, retries: Optional[int]) -> int:
        if retries is not None:
            return retries
        return int((self.config or {}).get("lithops", {}).get("retries", 0))

    def map(self, map_function: Callable, map_iterdata: Sequence[Any], chunksize: Optional[int] = None,
            extra_args: Any = None, extra_env: Optional[Dict[str, str]] = None, runtime_memory: Optional[int] = None,
            obj_chunk_size: Optional[int] = None, obj_chunk_number: Optional[int] = None,
            timeout: Optional[float] = None, retries: Optional[int] = None, **_: Any) -> List[RetryingFuture]:
        """One call per element of `map_iterdata`, each run again up to
        `retries` times when it raises."""
        items = list(map_iterdata)
        map_kwargs: Dict[str, Any] = dict(chunksize=chunksize, extra_args=extra_args, extra_env=extra_env,
                                          obj_chunk_size=obj_chunk_size, obj_chunk_number=obj_chunk_number,
                                          timeout=timeout)
        futures = self.executor.map(map_function, items, **map_kwargs)
        if len(futures) != len(items):
            raise ValueError("retries need one call per element of map_iterdata (objects partitioned into "
                             "several calls are not retried one by one)")
        n = self._retries(retries)
        return [RetryingFuture(f, map_function, item, n, **map_kwargs) for item, f in zip(items, futures)]

    def wait(self, fs: List[RetryingFuture], throw_except: bool = True, return_when: int = ALL_COMPLETED,
             timeout: Optional[float] = None, **_: Any) -> Tuple[List[RetryingFuture], List[RetryingFuture]]:
        """Waits as `FunctionExecutor.wait`, running again the calls that
        raised and have retries left; `(done, not_done)`. A call is done
        when it succeeded or ran out of retries."""
        by_future = {id(f.response_future): f for f in fs}
        judged: "set[int]" = set()  # the runs already counted (done, or failed and retried)
        while True:
            done, pending = self.executor.wait([f.response_future for f in fs], return_when=return_when,
                                               timeout=timeout)
            finished, waiting = [], [by_future[id(p)] for p in pending]
            for d in done:
                f = by_future[id(d)]
                if id(d) not in judged:
                    judged.add(id(d))
                    if d.error:
                        f.failure_count += 1
                        if f._should_retry():
                            f._retry(self.executor)
                            by_future[id(f.response_future)] = f
                            waiting.append(f)
                            continue
                finished.append(f)
            if return_when == ALWAYS or (return_when == ANY_COMPLETED and finished) or not waiting:
                return finished, waiting

    def get_result(self, fs: List[RetryingFuture], throw_except: bool = True, timeout: Optional[float] = None,
                   **_: Any) -> List[Any]:
        """The calls' results, after their retries."""
        self.wait(fs, return_when=ALL_COMPLETED, timeout=timeout)
        return [f.result(throw_except=throw_except) for f in fs]

    def clean(self, fs: Any = None, cs: Any = None, clean_cloudobjects: bool = True, **_: Any) -> None:
        self.executor.clean(fs, cs, clean_cloudobjects)
