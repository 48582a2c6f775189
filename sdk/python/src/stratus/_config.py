"""Where the server is and which token to send, found as the CLI finds them:
arguments, then `STRATUS_URL` / `STRATUS_TOKEN` / `STRATUS_PROJECT`, then the
credentials file's token for the URL (`$STRATUS_CREDENTIALS`, else
`$XDG_CONFIG_HOME/stratus/credentials.toml`, else
`~/.config/stratus/credentials.toml`). Inside a function, `STRATUS_URL` and
`STRATUS_TOKEN` are the attempt's own."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

DEFAULT_URL = "http://127.0.0.1:7878"


def _env(name: str) -> Optional[str]:
    value = os.environ.get(name)
    return value if value else None


def credentials_path() -> Optional[Path]:
    explicit = _env("STRATUS_CREDENTIALS")
    if explicit:
        return Path(explicit)
    config = _env("XDG_CONFIG_HOME")
    if config:
        return Path(config) / "stratus" / "credentials.toml"
    home = _env("HOME")
    return Path(home) / ".config" / "stratus" / "credentials.toml" if home else None


def token_from_file(url: str) -> Optional[str]:
    path = credentials_path()
    if path is None or not path.exists():
        return None
    try:
        import tomllib  # Python 3.11+
    except ModuleNotFoundError:  # pragma: no cover - older Pythons
        return _parse_tokens(path.read_text()).get(url.rstrip("/"))
    with path.open("rb") as f:
        tokens = tomllib.load(f).get("tokens", {})
    token = tokens.get(url.rstrip("/"))
    return str(token) if token else None


def _parse_tokens(text: str) -> dict:
    """The `[tokens]` table of the credentials file, without a TOML library."""
    tokens, inside = {}, False
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            inside = line == "[tokens]"
        elif inside and "=" in line:
            key, _, value = line.partition("=")
            tokens[key.strip().strip('"')] = value.strip().strip('"')
    return tokens


def resolve(url: Optional[str], token: Optional[str], project: Optional[str]):
    url = (url or _env("STRATUS_URL") or DEFAULT_URL).rstrip("/")
    token = token or _env("STRATUS_TOKEN") or token_from_file(url)
    project = project or _env("STRATUS_PROJECT")
    return url, token, project
