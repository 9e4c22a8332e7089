"""Configuration resolution: command-line flags, then ``ENVCAL_*`` variables, then ``envcal.toml``.

Every command that touches storage takes ``--db URL``; when it is not given the value of
``ENVCAL_DB`` is used, else ``db`` from ``envcal.toml`` in the working directory, else the
SQLite file ``envcal.db``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

DEFAULTS: dict[str, Any] = {
    "db": "sqlite:///envcal.db",
    "broker": "mqtt://127.0.0.1:1883",
    "archive": "archive",
    "stations": "stations",
}


def file_settings(path: Path | None = None) -> dict[str, Any]:
    """Settings from ``envcal.toml`` (or ``ENVCAL_CONFIG``); ``{}`` when there is none."""
    path = path or Path(os.environ.get("ENVCAL_CONFIG", "envcal.toml"))
    if not path.is_file():
        return {}
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    return data.get("envcal", data)


def setting(name: str, flag_value: Any = None, default: Any = None) -> Any:
    """Resolve one setting.

    Parameters
    ----------
    name : str
        Setting name, e.g. ``"db"``; the environment variable is ``ENVCAL_<NAME>``.
    flag_value : Any, optional
        Value given on the command line; wins when not ``None``.
    default : Any, optional
        Fallback when neither flag, environment nor ``envcal.toml`` sets it; defaults
        to the built-in default for ``name``.

    Returns
    -------
    Any
        The resolved value.
    """
    if flag_value is not None:
        return flag_value
    env = os.environ.get(f"ENVCAL_{name.upper()}")
    if env not in (None, ""):
        return env
    toml = file_settings()
    if name in toml:
        return toml[name]
    return default if default is not None else DEFAULTS.get(name)


def db_url(flag_value: str | None = None) -> str:
    """Database URL from ``--db``, ``ENVCAL_DB``, ``envcal.toml`` or ``sqlite:///envcal.db``."""
    return str(setting("db", flag_value))
