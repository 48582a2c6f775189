"""Stratus from Python.

`stratus.Client` speaks the HTTP API: functions, invocations, jobs, objects
and events. Errors are `stratus.StratusError`s (see `stratus.errors`).
"""

from .client import Client, Job, pack_dir
from .errors import (
    BadRequest,
    Conflict,
    ConnectError,
    Forbidden,
    FunctionFailed,
    Gone,
    NotFound,
    QuotaExceeded,
    StratusError,
    Unauthorized,
    Unavailable,
)

__all__ = [
    "BadRequest",
    "Client",
    "Conflict",
    "ConnectError",
    "Forbidden",
    "FunctionFailed",
    "Gone",
    "Job",
    "NotFound",
    "QuotaExceeded",
    "StratusError",
    "Unauthorized",
    "Unavailable",
    "pack_dir",
]

__version__ = "0.1.0"
