"""Layered YAML configuration: an environment file extends the base and overrides only what differs."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONF = PROJECT_ROOT / "conf" / "local.yml"


class ConfigError(ValueError):
    """A configuration file is missing, malformed or names an unknown key."""


def deep_merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> dict[str, Any]:
    """Read a config file, following its `extends` chain, then apply `overrides` (a nested dict)."""
    path = Path(path) if path else DEFAULT_CONF
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at top level")
    parent = data.pop("extends", None)
    if parent:
        data = deep_merge(load_config(path.parent / parent), data)
    if overrides:
        data = deep_merge(data, overrides)
    return data


def set_dotted(conf: dict, dotted_key: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict, refusing keys the config does not already have (typo guard)."""
    node = conf
    parts = dotted_key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            raise ConfigError(f"unknown config key: {dotted_key}")
        node = node[part]
    if parts[-1] not in node:
        raise ConfigError(f"unknown config key: {dotted_key}")
    node[parts[-1]] = value
