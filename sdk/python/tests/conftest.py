"""A real `stratus up` per test module, on a scratch data directory: the
binary is `$STRATUS_BIN`, else the workspace's debug or release build."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def stratus_bin() -> str:
    explicit = os.environ.get("STRATUS_BIN")
    if explicit:
        return explicit
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    for build in ("debug", "release"):
        candidate = target / build / "stratus"
        if candidate.exists():
            return str(candidate)
    pytest.exit("no stratus binary: build it (cargo build -p stratus) or set STRATUS_BIN", 2)


class Node:
    def __init__(self, tmp: Path, slots: int = 2) -> None:
        self.tmp = tmp
        env = dict(os.environ, STRATUS_LOG="warn", STRATUS_CREDENTIALS=str(tmp / "credentials.toml"))
        env.pop("STRATUS_TOKEN", None)
        env.pop("STRATUS_URL", None)
        self.proc = subprocess.Popen(
            [stratus_bin(), "up", "--listen", "127.0.0.1:0", "--data-dir", str(tmp / "data"), "--slots", str(slots),
             "--sandbox-path", str(tmp)],
            stdout=subprocess.PIPE,
            env=env,
        )
        line = self.proc.stdout.readline().decode()
        assert line.startswith("stratus listening on "), line
        self.url = line.split()[-1]
        self.token = (tmp / "data" / "admin.token").read_text().strip()
        self.credentials = tmp / "credentials.toml"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    n = Node(tmp_path_factory.mktemp("stratus"))
    yield n
    n.stop()


@pytest.fixture(scope="module")
def client(node):
    from stratus import Client

    with Client(node.url, token=node.token) as c:
        yield c


def write_fn(directory: Path, script: str) -> Path:
    """A process function: `run.sh` with `script` as its body."""
    directory.mkdir(parents=True, exist_ok=True)
    run = directory / "run.sh"
    run.write_text("#!/bin/sh\n" + script + "\n")
    run.chmod(0o755)
    return directory
