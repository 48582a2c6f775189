"""Runs one peer system (Lithops localhost v1 or v2, Ray, Prefect, a plain
Python floor, or Stratus through its Python SDK, `stratus-sdk`: the Lithops
code below with `import stratus.lithops as lithops`) on one workload of the Stratus benchmarks (roundtrip, noop-map,
hash-map, wordcount) and prints one JSON object per repetition on stdout;
everything else, the peers' own output included, goes to stderr. Every result
is checked: a wrong answer is ok=false. Run it with the python that setup.sh
prints; --help lists the options.

Each repetition runs in a fresh child process with its own temporary HOME and
TMPDIR (so Lithops' storage, Ray's session and token, and Prefect's database
start empty), while this process samples the memory of the child's process
tree and kills the tree when the repetition is over or out of time. `n` in the
output is the number of tasks (maps), of timed calls (roundtrip) or of chunks
(wordcount).
"""
import argparse
import ctypes
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

PEERS_DIR = Path(__file__).resolve().parent
WC_DIR = PEERS_DIR.parent.parent / "examples" / "wordcount"
sys.path[:0] = [str(PEERS_DIR), str(WC_DIR)]
import wc  # noqa: E402
import work  # noqa: E402

WORKLOADS = {
    "lithops-v1": ("roundtrip", "noop-map", "hash-map", "wordcount"),
    "lithops-v2": ("roundtrip", "noop-map", "hash-map", "wordcount"),
    "ray": ("roundtrip", "noop-map", "hash-map", "wordcount"),
    "prefect": ("roundtrip", "noop-map", "hash-map"),
    "python": ("wordcount",),
    # The server is the one STRATUS_URL and STRATUS_TOKEN name.
    "stratus-sdk": ("noop-map", "wordcount"),
}
PACKAGE = {"lithops-v1": "lithops", "lithops-v2": "lithops", "ray": "ray", "prefect": "prefect",
           "stratus-sdk": "stratus-sdk"}
SAMPLE_EVERY_S = 0.05


class WrongResult(Exception):
    pass


def check(ok, message):
    if not ok:
        raise WrongResult(message)


# --- word count helpers (Ray and the Python floor read byte ranges of the file) ---


def line_ranges(path, chunk_bytes):
    """Byte ranges of the file, one per chunk_bytes, each holding the whole
    lines that start in its chunk (as Stratus cuts objects)."""
    size = os.path.getsize(path)
    cuts = [0]
    with open(path, "rb") as f:
        for pos in range(chunk_bytes, size, chunk_bytes):
            f.seek(pos - 1)
            f.readline()  # to just past the first newline at or after pos - 1
            cuts.append(f.tell())
    cuts.append(size)
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if a < b]


def count_range(path, start, end):
    with open(path, "rb") as f:
        f.seek(start)
        return wc.count(f.read(end - start))


def lithops_mapper(obj):
    # Lithops' partition stream trims its byte range to whole lines (it reads
    # one byte before and up to 128 KiB past the range to find the line ends).
    return wc.count(obj.data_stream.read())


def lithops_reducer(results):
    return wc.merge(results)


def merge_counts(*counts):
    return wc.merge(counts)


# --- the peers, each started by its constructor (the start-up time) ---


class Lithops:
    """The same program on Lithops localhost (version 1 or 2) and, with
    `stratus.lithops` in place of `lithops`, on Stratus (version None)."""

    def __init__(self, version):
        if version is None:
            import stratus.lithops as lithops

            # A function's memory is capped on Stratus (256 MiB by default),
            # not on Lithops localhost: the word count's 64 MiB chunks need more.
            self.config = {"lithops": {"backend": "stratus", "storage": "stratus", "log_level": "WARNING",
                                       "runtime_memory": 2048}}
        else:
            import lithops

            # The storage lives under the child's TMPDIR, which Lithops reads on import.
            self.config = {
                "lithops": {"backend": "localhost", "storage": "localhost", "log_level": "WARNING"},
                # The default runtime is "python3" on PATH, not this virtualenv's.
                "localhost": {"runtime": sys.executable, "version": version},
            }
        self.lithops, self.version = lithops, version
        self.executor = lithops.FunctionExecutor(config=self.config)

    def call(self, x):
        result = self.executor.get_result(fs=self.executor.call_async(work.noop, x))
        # Lithops 3.8.0 localhost v2 race: get_result stops the worker threads,
        # and a job invoked before the previous job's manager thread has
        # exited is left to that dying manager and never runs (a hang, about
        # one call in 30 here). Waiting for the manager, inside the timed
        # call, avoids it.
        manager = self.executor.compute_handler.job_manager if self.version == 2 else None
        if manager:
            manager.join()
        return result

    def map(self, fn, inputs):
        return self.executor.get_result(fs=self.executor.map(fn, inputs))

    def upload(self, path):
        """Puts the file into Lithops' storage; returns its URL."""
        storage = self.lithops.Storage(config=self.config)
        storage.upload_file(path, storage.bucket, "corpus/text.txt")
        return f"{storage.backend}://{storage.bucket}/corpus/text.txt"

    def wordcount(self, url, chunk_bytes):
        fs = self.executor.map_reduce(lithops_mapper, [url], lithops_reducer, obj_chunk_size=chunk_bytes)
        result = self.executor.get_result(fs=fs)
        return result, len(fs) - 1  # the futures are the map tasks and the reducer


class Ray:
    def __init__(self):
        import logging

        import ray

        self.ray = ray
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        self.noop = ray.remote(work.noop)

    def call(self, x):
        return self.ray.get(self.noop.remote(x))

    def map(self, fn, inputs):
        task = self.ray.remote(fn)
        return self.ray.get([task.remote(i) for i in inputs])

    def wordcount(self, path, chunk_bytes):
        mapper, reducer = self.ray.remote(count_range), self.ray.remote(merge_counts)
        ranges = line_ranges(path, chunk_bytes)
        return self.ray.get(reducer.remote(*[mapper.remote(path, a, b) for a, b in ranges])), len(ranges)


class Prefect:
    def __init__(self):
        from prefect import flow, task
        from prefect.server.api.server import SubprocessASGIServer

        # The temporary server Prefect starts on first use, started here so
        # that it counts as start-up (the client finds the same instance).
        SubprocessASGIServer().start()
        noop = task(work.noop)
        hash_task = task(work.hash_task)

        @flow
        def one_task(x):
            return noop.submit(x).result()

        @flow
        def noop_map(inputs):
            return noop.map(inputs).result()

        @flow
        def hash_map(inputs):
            return hash_task.map(inputs).result()

        self.one_task = one_task
        self.flows = {work.noop: noop_map, work.hash_task: hash_map}

    def call(self, x):
        return self.one_task(x)

    def map(self, fn, inputs):
        return self.flows[fn](inputs)


class Python:
    """The floor: a process pool over byte ranges of the file."""

    def __init__(self):
        import multiprocessing

        self.pool = multiprocessing.Pool(os.cpu_count())

    def wordcount(self, path, chunk_bytes):
        ranges = line_ranges(path, chunk_bytes)
        counts = self.pool.starmap(count_range, [(path, a, b) for a, b in ranges])
        return wc.merge(counts), len(ranges)


def start(system):
    if system.startswith("lithops-"):
        return Lithops(int(system[-1]))
    if system == "stratus-sdk":
        return Lithops(None)
    return {"ray": Ray, "prefect": Prefect, "python": Python}[system]()


# --- the workloads, run in the child process ---


def percentile(sorted_values, p):
    """As bench/src/stats.rs: the value at round((n - 1) * p)."""
    return sorted_values[int((len(sorted_values) - 1) * p + 0.5)]


def roundtrip(peer, args):
    for i in range(args.warmup):
        check(peer.call(i) == i, "wrong warm-up result")
    times = []
    for i in range(args.calls):
        t = time.perf_counter()
        r = peer.call(i)
        times.append(time.perf_counter() - t)
        check(r == i, f"call {i} returned {r!r}")
    times.sort()
    return {
        "p50_us": percentile(times, 0.5) * 1e6,
        "p99_us": percentile(times, 0.99) * 1e6,
        "mean_us": sum(times) / len(times) * 1e6,
    }


def task_map(peer, args, fn, expected):
    t = time.perf_counter()
    results = peer.map(fn, list(range(args.n)))
    wall = time.perf_counter() - t
    check(len(results) == args.n, f"{len(results)} results for {args.n} tasks")
    for i, (r, e) in enumerate(zip(results, expected)):
        check(r == e, f"task {i} returned {r!r}, expected {e!r}")
    return {"wall_s": wall, "tasks_per_s": args.n / wall}


def wordcount(peer, args):
    out, source = {}, args.data
    if hasattr(peer, "upload"):
        t = time.perf_counter()
        source = peer.upload(args.data)
        out["upload_s"] = time.perf_counter() - t
    t = time.perf_counter()
    counts, chunks = peer.wordcount(source, args.chunk_bytes)
    wall = time.perf_counter() - t
    got = {"total": sum(counts.values()), "distinct": len(counts)}
    check(got == args.expect, f"counted {got}, expected {args.expect}")
    mb = os.path.getsize(args.data) / 1e6
    return {**out, "n": chunks, "wall_s": wall, "mb_per_s": mb / wall}


def run_child(args):
    """One repetition; its result goes to the file args.child as JSON."""
    out = {"ok": False}
    try:
        t = time.perf_counter()
        peer = start(args.system)
        out["startup_s"] = time.perf_counter() - t
        if args.workload == "roundtrip":
            out.update(roundtrip(peer, args))
        elif args.workload == "noop-map":
            out.update(task_map(peer, args, work.noop, range(args.n)))
        elif args.workload == "hash-map":
            out.update(task_map(peer, args, work.hash_task, map(work.hash_task, range(args.n))))
        else:
            out.update(wordcount(peer, args))
        out["ok"] = True
    except WrongResult as e:
        out["error"] = f"wrong result: {e}"
    except Exception as e:
        traceback.print_exc()
        out["error"] = f"{type(e).__name__}: {e}"
    Path(args.child).write_text(json.dumps(out))
    # No orderly shutdown (Ray's can hang, Prefect's takes seconds): the
    # parent kills whatever this process started.
    sys.stderr.flush()
    os._exit(0)


# --- the parent: one child per repetition, memory sampling, timeouts ---


def process_table():
    """{pid: (ppid, rss_bytes)} of every live (non-zombie) process."""
    page = os.sysconf("SC_PAGE_SIZE")
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
            rss_pages = int(Path(f"/proc/{name}/statm").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        if fields[0] != "Z":
            table[int(name)] = (int(fields[1]), rss_pages * page)
    return table


def descendants(root, table):
    children = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class Sampler(threading.Thread):
    """Peak of the summed RSS of this process's descendants."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.done = 0, threading.Event()

    def run(self):
        while not self.done.wait(SAMPLE_EVERY_S):
            table = process_table()
            self.peak = max(self.peak, sum(table[p][1] for p in descendants(os.getpid(), table)))


def kill_descendants():
    """Kills every process below this one (peers leave daemons behind: Ray's
    raylet and GCS, Lithops' cleaner, Prefect's server) and reaps them."""
    for _ in range(100):
        pids = descendants(os.getpid(), process_table())
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def child_env(rep_dir):
    home, tmp = rep_dir / "home", rep_dir / "tmp"
    home.mkdir()
    tmp.mkdir()
    return {
        **os.environ,
        # Ray writes an auth token under $HOME/.ray; Lithops caches runtime
        # metadata in ~/.lithops and Prefect keeps its database in ~/.prefect.
        "HOME": str(home),
        "TMPDIR": str(tmp),
        # Ray's workers import the task modules by name.
        "PYTHONPATH": os.pathsep.join([str(PEERS_DIR), str(WC_DIR)]),
        "RAY_USAGE_STATS_ENABLED": "0",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # Quiets Prefect's console only: its run logs still go to its server.
        "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
    }


def run_rep(args, argv):
    """Runs one repetition in a child process; returns its result and whether it timed out."""
    rep_dir = Path(tempfile.mkdtemp(prefix="stratus-peer-"))
    result_file = rep_dir / "result.json"
    sampler = Sampler()
    sampler.start()
    child = subprocess.Popen(
        [sys.executable, __file__, *argv, "--child", str(result_file)],
        env=child_env(rep_dir),
        stdin=subprocess.DEVNULL,
        stdout=sys.stderr,  # the peers' chatter must not reach our stdout
    )
    timed_out = False
    try:
        child.wait(timeout=args.timeout)
        if result_file.exists():
            out = json.loads(result_file.read_text())
        else:
            out = {"ok": False, "error": f"the benchmark process exited with code {child.returncode}"}
    except subprocess.TimeoutExpired:
        timed_out = True
        out = {"ok": False, "error": f"timeout after {args.timeout:g}s"}
    finally:
        sampler.done.set()
        sampler.join()
        kill_descendants()
        shutil.rmtree(rep_dir, ignore_errors=True)
    out["peak_rss_mib"] = sampler.peak / 2**20
    return out, timed_out


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--system", required=True, choices=WORKLOADS)
    p.add_argument("--workload", required=True, choices=["roundtrip", "noop-map", "hash-map", "wordcount"])
    p.add_argument("--n", type=int, default=1000, help="tasks of a map (default 1000)")
    p.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    p.add_argument("--calls", type=int, default=100, help="timed round trips (default 100)")
    p.add_argument("--warmup", type=int, default=10, help="untimed round trips first (default 10)")
    p.add_argument("--data", help="word count: the text file")
    p.add_argument("--chunk-bytes", type=int, help="word count: bytes per chunk, cut at line ends")
    p.add_argument("--expect", type=json.loads, help='word count: {"total": T, "distinct": D}')
    p.add_argument("--timeout", type=float, default=600, help="seconds per repetition (default 600)")
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: run one repetition
    args = p.parse_args(argv)
    if args.workload not in WORKLOADS[args.system]:
        p.error(f"{args.system} runs only {', '.join(WORKLOADS[args.system])}")
    if args.workload == "wordcount":
        if not (args.data and args.chunk_bytes and args.expect):
            p.error("wordcount needs --data, --chunk-bytes and --expect")
        if not os.path.isfile(args.data):
            p.error(f"no such file: {args.data}")
        args.data = os.path.abspath(args.data)  # Ray's workers run elsewhere
        if args.chunk_bytes <= 0 or not isinstance(args.expect, dict) or set(args.expect) != {"total", "distinct"}:
            p.error('--chunk-bytes must be positive and --expect {"total": T, "distinct": D}')
    if min(args.n, args.reps, args.calls) < 1 or args.warmup < 0 or args.timeout <= 0:
        p.error("--n, --reps, --calls and --timeout must be positive, --warmup not negative")
    return args


def main():
    argv = sys.argv[1:]
    args = parse_args(argv)
    if args.child:
        run_child(args)
        return
    # Daemons that the peers detach (e.g. Lithops' cleaner) are re-parented
    # to us rather than to init, so that kill_descendants finds them.
    PR_SET_CHILD_SUBREAPER = 36
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    package = PACKAGE.get(args.system)
    version = importlib.metadata.version(package) if package else platform.python_version()
    for rep in range(args.reps):
        out, timed_out = run_rep(args, argv)
        record = {
            "system": args.system,
            "workload": args.workload,
            "n": {"roundtrip": args.calls, "wordcount": None}.get(args.workload, args.n),
            "rep": rep,
            "wall_s": None,
            "tasks_per_s": None,
            "mb_per_s": None,
            "p50_us": None,
            "p99_us": None,
            "mean_us": None,
            "startup_s": None,
            "upload_s": None,
            "peak_rss_mib": None,
            "ok": False,
            "error": None,
            "version": version,
            **out,
        }
        print(json.dumps(record), flush=True)
        if timed_out:
            break


if __name__ == "__main__":
    main()
