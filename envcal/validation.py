"""Error messages for strictly validated data files (registry, rule packs, certificates).

Every message names where the problem is, as a dotted path with list indexes
(``analyzers[2].channels[0].unit``), and the object's ``id`` where it has one, so that a
person can find the line to fix.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError


def loc_path(loc: tuple) -> str:
    """``("analyzers", 2, "unit")`` -> ``"analyzers[2].unit"``."""
    parts: list[str] = []
    for p in loc:
        if isinstance(p, int):
            if parts:
                parts[-1] = f"{parts[-1]}[{p}]"
            else:
                parts.append(f"[{p}]")
        else:
            parts.append(str(p))
    return ".".join(parts)


def error_message(err: dict) -> str:
    """The message of one pydantic error, with envcal's wording for the common cases."""
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "required field is missing"
    return err["msg"]


def describe(path: Path | str, exc: ValidationError, data: dict, *, whole: str = "(file)") -> str:
    """One line per error: ``{path}: {where} (id='...'): {message}``."""
    lines = []
    for err in exc.errors():
        loc = loc_path(err["loc"])
        where = loc or whole
        top = err["loc"][:2]
        if len(top) == 2 and isinstance(top[1], int):
            try:
                obj_id = data[top[0]][top[1]].get("id")
                if obj_id:
                    where = f"{loc} (id={obj_id!r})"
            except (KeyError, IndexError, AttributeError, TypeError):
                pass
        lines.append(f"{path}: {where}: {error_message(err)}")
    return "\n".join(lines)
