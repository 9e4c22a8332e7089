"""The layers of envcal, enforced on the source (AST) and at run time.

1. Pure modules (wire formats, kernels, units, the check vocabulary and core, the rule
   model) import no SQLAlchemy/SQLModel, paho or Streamlit, directly or through what they
   import at module level.
2. No import cycles between envcal modules (module- and function-level imports both count;
   importing ``a.b`` imports the package ``a`` first).
3. No private name (``_x``) imported from another module.

Violations in modules not yet reworked are listed in the ALLOWED_* sets below, each with a
comment; the sets only shrink (a stale entry fails too).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "envcal"
FORBIDDEN = ("sqlalchemy", "sqlmodel", "paho", "streamlit", "alembic")

PURE = (
    "envcal.codes", "envcal.units", "envcal.analytes", "envcal.validation", "envcal.kernels",
    "envcal.kernels_ref", "envcal.protocols", "envcal.protocols.records",
    "envcal.protocols.json_v1", "envcal.protocols.hj212", "envcal.checks", "envcal.checks.core",
    "envcal.checks.result", "envcal.rules", "envcal.numba_cache",
)

#: models that must become pure but still live with their storage code (another area's
#: module); the lead splits them at merge (certificates/model.py), then moves them to PURE
PURE_PENDING: dict[str, str] = {
    "envcal.certificates": "CertificateDoc and the unit conversion sit with the import/revoke code",
}

#: import cycles still present, as sorted tuples of the modules of one strongly connected
#: component; the lead empties this at merge
ALLOWED_CYCLES: set[tuple[str, ...]] = set()

#: (importing module, imported module, private name) still used across modules
ALLOWED_PRIVATE: set[tuple[str, str, str]] = {
    # archive.py (another area) does not export its hot-store reader yet
    ("envcal.replay_dask", "envcal.archive", "_fetch_hot"),
    # certificates.py (another area) keeps its unit conversion private; the simulator must
    # use that one conversion (not a copy) - to be exported as a public name at merge
    ("envcal.simulate", "envcal.certificates", "_convert_value"),
}


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        if "migrations" in p.parts:
            continue
        rel = p.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _resolve(mod: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    pkg = mod.split(".") if MODULES[mod].name == "__init__.py" else mod.split(".")[:-1]
    base = pkg[: len(pkg) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(mod: str) -> list[tuple[str, str | None, bool]]:
    """(imported module, imported name or None, at module level) of one module."""
    tree = ast.parse(MODULES[mod].read_text(encoding="utf-8"))
    top = set(map(id, tree.body))
    out = []

    def walk(node, module_level):
        for child in ast.iter_child_nodes(node):
            lvl = module_level and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                          ast.Lambda))
            if isinstance(child, ast.Import):
                out.extend((a.name, None, lvl) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = _resolve(mod, child)
                for a in child.names:
                    sub = f"{base}.{a.name}"
                    out.append((sub if sub in MODULES else base, None if sub in MODULES else a.name,
                                lvl))
            elif isinstance(child, ast.If) and _is_type_checking(child):
                continue
            walk(child, lvl)

    del top
    walk(tree, True)
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _envcal_deps(mod: str, *, module_level_only: bool) -> set[str]:
    deps = set()
    for name, _, lvl in _imports(mod):
        if module_level_only and not lvl:
            continue
        for p in _parents(name):
            # a module's own packages are initialised before it: no edge to them
            if p in MODULES and p != mod and not mod.startswith(p + "."):
                deps.add(p)
    return deps


def test_layers_pure_modules_import_no_storage_mqtt_or_ui():
    bad = []
    for mod in PURE:
        seen, todo = set(), [mod, *_parents(mod)[:-1]]
        while todo:
            m = todo.pop()
            if m in seen or m not in MODULES:
                continue
            seen.add(m)
            for name, _, lvl in _imports(m):
                if not lvl and m != mod:
                    continue  # a function-level import of a dependency runs only when called
                if name.split(".")[0] in FORBIDDEN:
                    bad.append(f"{mod}: {m} imports {name}" + ("" if lvl else " (in a function)"))
            todo.extend(_envcal_deps(m, module_level_only=True))
    assert bad == []


def test_layers_pure_pending_still_listed_for_a_reason():
    code = ("import sys\n"
            f"for m in {list(PURE_PENDING)!r}:\n"
            "    __import__(m)\n"
            f"print(bool([k for k in sys.modules if k.split('.')[0] in {FORBIDDEN!r}]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True", "PURE_PENDING modules are pure now: move them to PURE"


def test_layers_pure_modules_at_run_time():
    code = ("import sys\n"
            f"for m in {list(PURE)!r}:\n"
            "    __import__(m)\n"
            f"print(sorted(k for k in sys.modules if k.split('.')[0] in {FORBIDDEN!r}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _cycles() -> set[tuple[str, ...]]:
    graph = {m: _envcal_deps(m, module_level_only=False) for m in MODULES}
    index, low, stack, on, comps = {}, {}, [], set(), []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            comps.append(comp)

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            strong(v)
    out = set()
    for comp in comps:
        if len(comp) > 1:
            out.add(tuple(sorted(comp)))
    return out


def test_layers_no_import_cycles():
    found = _cycles()
    assert found - ALLOWED_CYCLES == set(), "new import cycles"
    assert ALLOWED_CYCLES - found == set(), "stale ALLOWED_CYCLES entries: remove them"


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _module_aliases(mod: str) -> dict[str, str]:
    """Local names bound to envcal modules (``from envcal import x``, ``import envcal.x as y``)."""
    tree = ast.parse(MODULES[mod].read_text(encoding="utf-8"))
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in MODULES and a.asname:
                    out[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(mod, node)
            for a in node.names:
                if f"{base}.{a.name}" in MODULES:
                    out[a.asname or a.name] = f"{base}.{a.name}"
    return out


def test_layers_no_private_names_across_modules():
    found = set()
    for mod in MODULES:
        for name, attr, _ in _imports(mod):
            if attr and _private(attr) and name.startswith("envcal"):
                found.add((mod, name, attr))
        aliases = _module_aliases(mod)
        for node in ast.walk(ast.parse(MODULES[mod].read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Attribute) and _private(node.attr)
                    and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and aliases[node.value.id] != mod):
                found.add((mod, aliases[node.value.id], node.attr))
    assert found - ALLOWED_PRIVATE == set(), "private names imported across modules"
    assert ALLOWED_PRIVATE - found == set(), "stale ALLOWED_PRIVATE entries: remove them"


#: modules reworked for the layers (issue 12): imports at the top, except these deferred
#: ones, each for a measured start-up cost (ARCHITECTURE.md, "Deferred imports")
REWORKED = (
    "envcal.codes", "envcal.checks", "envcal.checks.core", "envcal.checks.result",
    "envcal.checks.extract", "envcal.checks.store", "envcal.checks.verifier", "envcal.verify",
    "envcal.state", "envcal.stats", "envcal.trends", "envcal.views", "envcal.alerts",
    "envcal.alerts.common", "envcal.alerts.config", "envcal.alerts.engine",
    "envcal.alerts.periods", "envcal.alerts.staff",
    "envcal.kernels", "envcal.kernels_ref", "envcal.rules", "envcal.rules.confirmations",
    "envcal.data_quality", "envcal.replay_dask", "envcal.validation", "envcal.models",
    "envcal.db", "envcal.sqltypes", "envcal.numba_cache", "envcal.protocols.records",
    "envcal.commands.stats", "envcal.commands.verify",
)
ALLOWED_DEFERRED: dict[str, set[str]] = {
    "envcal.rules": {"envcal.units"},  # pint registry, +1.5 s on every rules import
    "envcal.data_quality": {"scipy.stats"},  # 3.4 s; only the falsification test needs it
    "envcal.replay_dask": {"distributed", "dask"},  # 1.8 s; only `verify replay --dask`
    "envcal.db": {"alembic.config", "alembic", "alembic.autogenerate", "alembic.migration"},
    # 1.9 s; only migrations
    # the CLI imports every command module at start (`envcal --help` must stay fast)
    "envcal.commands.verify": {"envcal.db", "envcal.verify", "envcal.registry",
                               "envcal.replay_dask", "rich.console", "rich.table",
                               "rich.progress"},
}


def test_layers_reworked_modules_import_at_the_top():
    late = {}
    for mod in REWORKED:
        names = {n for n, _, lvl in _imports(mod) if not lvl}
        extra = names - ALLOWED_DEFERRED.get(mod, set())
        if extra:
            late[mod] = sorted(extra)
    assert late == {}
