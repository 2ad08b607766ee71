"""Notebook parameters that work on Databricks and locally: a text widget when `dbutils` is there, otherwise
the environment variable `SOCIALREC_NB_<NAME>` (upper case), otherwise the default.

    from socialrec.ops.widgets import param
    lake = param("lake", "", "lake root (empty: the config's)")
"""
from __future__ import annotations

import os
import sys

ENV_PREFIX = "SOCIALREC_NB_"


def _dbutils():
    main = sys.modules.get("__main__")
    found = getattr(main, "dbutils", None)
    if found is not None:
        return found
    try:  # a notebook's globals live in the IPython user namespace
        from IPython import get_ipython

        shell = get_ipython()
        return shell.user_ns.get("dbutils") if shell is not None else None
    except Exception:
        return None


def param(name: str, default: str = "", label: str | None = None, dbutils=None) -> str:
    """The parameter's value as text (widgets only carry text); `dbutils` may be passed explicitly."""
    dbutils = dbutils or _dbutils()
    if dbutils is not None:
        try:
            dbutils.widgets.text(name, str(default), label or name)
            return dbutils.widgets.get(name)
        except Exception:  # no widget support in this context (e.g. a job without the parameter)
            pass
    return os.environ.get(ENV_PREFIX + name.upper(), str(default))


def param_bool(name: str, default: bool = False, label: str | None = None, dbutils=None) -> bool:
    return param(name, "true" if default else "false", label, dbutils).strip().lower() in ("1", "true", "yes", "y")


def notebook_conf(conf_path: str = "", lake: str = "", sets: str = "") -> dict:
    """The config a notebook works with: `conf_path` (relative to the working folder, the project root or, on
    Databricks where a notebook runs in notebooks/, its parent; empty: conf/local.yml), `lake` overriding
    lake.root, and `sets` as `key=value` pairs separated by commas or semicolons (like `socialrec run --set`)."""
    from pathlib import Path

    import yaml

    from socialrec.config import PROJECT_ROOT, load_config, set_dotted

    path = None
    if conf_path:
        candidates = [Path(conf_path), PROJECT_ROOT / conf_path, Path.cwd().parent / conf_path]
        path = next((c for c in candidates if c.is_file()), Path(conf_path))
    conf = load_config(path)
    if lake:
        conf["lake"]["root"] = lake
    for pair in filter(None, (p.strip() for p in sets.replace(";", ",").split(","))):
        key, _, value = pair.partition("=")
        set_dotted(conf, key.strip(), yaml.safe_load(value))
    return conf
