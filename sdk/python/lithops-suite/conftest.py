"""Lithops' own tests (from its wheel, imports changed to `stratus.lithops`)
against a real `stratus up`: see scripts/lithops-tests.sh. The node has 8
slots: Lithops' tests run functions that wait for calls of their own, which
need free slots."""

import os
import tempfile
from pathlib import Path

import pytest

def _harness():
    """The SDK tests' `Node` (a `stratus up` on a scratch directory)."""
    import importlib.util

    path = Path(os.environ.get("STRATUS_SDK_TESTS", Path(__file__).resolve().parents[1] / "tests")) / "conftest.py"
    spec = importlib.util.spec_from_file_location("stratus_sdk_harness", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Node


Node = _harness()

#: Where Lithops' tests keep their objects (what their own conftest says).
TESTS_PREFIX = "__lithops.test"

from stratus.lithops.config import default_config  # noqa: E402

pytest.lithops_config = default_config(config_overwrite={"lithops": {"log_level": "DEBUG"}})


@pytest.fixture(scope="session", autouse=True)
def stratus_node():
    node = Node(Path(tempfile.mkdtemp(prefix="stratus-lithops-suite-")), slots=8)
    os.environ["STRATUS_URL"] = node.url
    os.environ["STRATUS_TOKEN"] = node.token
    yield node
    node.stop()
