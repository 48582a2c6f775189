"""The configuration helpers Lithops programs call (`default_config`,
`extract_storage_config`, `load_yaml_config`), for Stratus: a configuration
is a dict whose `lithops` section names the backends (always Stratus here,
whatever it says) and whose `stratus` section may give `url`, `token`,
`project` and `storage_bucket` (else the environment, as the CLI finds it)."""

from __future__ import annotations

import copy
import os
from typing import Any, Dict, Optional

from .storage import BACKEND, bucket_from


def load_yaml_config(config_filename: str) -> Dict[str, Any]:
    """A Lithops YAML configuration file (needs PyYAML)."""
    try:
        import yaml
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("reading a YAML configuration needs PyYAML: pip install pyyaml") from e
    with open(config_filename) as f:
        return yaml.safe_load(f) or {}


def _merge(base: Dict[str, Any], over: Dict[str, Any]) -> Dict[str, Any]:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = copy.deepcopy(v)
    return base


def default_config(config_data: Optional[Dict[str, Any]] = None,
                   config_overwrite: Optional[Dict[str, Any]] = None,
                   load_storage_config: bool = True, **_: Any) -> Dict[str, Any]:
    """The configuration: `config_data` (else `LITHOPS_CONFIG_FILE` if set,
    read as YAML), `config_overwrite` merged over it, with Stratus as the
    compute and storage backend."""
    if config_data is None and os.environ.get("LITHOPS_CONFIG_FILE"):
        config_data = load_yaml_config(os.environ["LITHOPS_CONFIG_FILE"])
    config = copy.deepcopy(config_data or {})
    _merge(config, config_overwrite or {})
    lithops = config.setdefault("lithops", {})
    lithops["backend"] = BACKEND
    lithops["storage"] = BACKEND
    lithops.setdefault("storage_bucket", bucket_from(config))
    config.setdefault("stratus", {})
    return config


def extract_storage_config(config: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """What `Storage(storage_config=...)` takes from a configuration."""
    config = config or {}
    return {"backend": BACKEND, "bucket": bucket_from(config), "stratus": dict(config.get("stratus") or {})}


__all__ = ["default_config", "extract_storage_config", "load_yaml_config"]
