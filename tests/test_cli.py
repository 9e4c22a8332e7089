"""``envcal`` start-up: a command imports only its own module (see envcal.cli.COMMANDS)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import envcal.commands
from envcal.cli import COMMANDS, app

_PROBE = """
import contextlib, io, json, sys
from envcal.cli import main
sys.argv = ["envcal", *json.loads(sys.argv[1])]
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main()
    except SystemExit:
        pass
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("numba", "envcal", "sqlmodel", "sqlalchemy"))))
"""


def _modules_after(args: list[str]) -> list[str]:
    out = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(args)], capture_output=True,
                         text=True, check=True, timeout=120).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_cli_help_imports_no_command_module():
    mods = _modules_after(["--help"])
    assert not [m for m in mods if m.startswith("envcal.commands.")], mods
    assert "numba" not in mods


def test_cli_stats_json_on_sqlite_imports_no_numba_nor_sqlalchemy(tmp_path):
    url = f"sqlite:///{tmp_path / 'e.db'}"
    from envcal.db import init_db, make_engine

    init_db(make_engine(url))
    mods = _modules_after(["stats", "--json", "--db", url])
    assert "envcal.commands.stats" in mods
    assert "numba" not in mods and "envcal.models" not in mods and "sqlmodel" not in mods, mods
    assert "sqlalchemy" not in mods, mods


def test_cli_stats_missing_database_is_one_line_exit_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "envcal.cli", "stats", "--json", "--db",
                        f"sqlite:///{tmp_path / 'none.db'}"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    assert "no database at" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "none.db").exists()


def test_cli_stats_sqlite_without_schema_is_one_line_exit_2(tmp_path):
    (tmp_path / "empty.db").write_bytes(b"")
    r = subprocess.run([sys.executable, "-m", "envcal.cli", "stats", "--json", "--db",
                        f"sqlite:///{tmp_path / 'empty.db'}"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    assert "cannot read" in r.stderr and "envcal db upgrade" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_cli_commands_table_covers_every_command_module():
    modules = {f"envcal.commands.{m.name}" for m in pkgutil.iter_modules(envcal.commands.__path__)}
    assert {mod for mod, _ in COMMANDS.values()} == modules


def test_cli_commands_table_entries_resolve_to_their_command():
    import click
    import typer

    group = typer.main.get_command(app)
    ctx = click.Context(group)
    for name in COMMANDS:
        cmd = group.get_command(ctx, name)
        assert cmd is not None and cmd.name == name, name
