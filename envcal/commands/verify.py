"""``envcal results list`` and ``envcal verify replay|pending``."""

from __future__ import annotations

import datetime as dt
import json

import typer

from envcal.config import db_url, setting

DbOption = typer.Option(None, "--db", help="Database URL (default: ENVCAL_DB or sqlite:///envcal.db)")


def _time(value: str) -> dt.datetime:
    t = dt.datetime.fromisoformat(value)
    if t.tzinfo is None:
        raise typer.BadParameter(f"{value!r} has no UTC offset (write e.g. 2026-11-01T00:00+08:00)")
    return t


def register(app: typer.Typer) -> None:
    results_app = typer.Typer(no_args_is_help=True, help="Check results (what was decided).")
    verify_app = typer.Typer(no_args_is_help=True, help="Verification: evaluate and replay checks.")
    app.add_typer(results_app, name="results")
    app.add_typer(verify_app, name="verify")

    @results_app.command("list")
    def results_list(
        db: str | None = DbOption,
        as_json: bool = typer.Option(False, "--json", help="Print a JSON list."),
        analyzer: str | None = typer.Option(None, help="Only this analyzer."),
        analyte: str | None = typer.Option(None, help="Only this analyte."),
        verdict: str | None = typer.Option(None, help="pass | warn | fail | invalid"),
        since: str | None = typer.Option(None, "--from", help="Checks ending at or after (ISO 8601)."),
        until: str | None = typer.Option(None, "--to", help="Checks ending before (ISO 8601)."),
        limit: int | None = typer.Option(None, help="At most this many."),
    ) -> None:
        """List stored check results (JSON fields: analyzer, analyte, kind, check_id, start, end,
        n, mean, reference, error_abs, error_rel_pct, error_fs_pct, drift_fs_pct, en, verdict,
        rule, pack_version, material, ...)."""
        from envcal.db import init_db, make_engine
        from envcal.verify import list_results

        engine = make_engine(db_url(db))
        init_db(engine)
        rows = list_results(engine, analyzer=analyzer, analyte=analyte, verdict=verdict,
                            start=_time(since) if since else None,
                            end=_time(until) if until else None, limit=limit)
        if as_json:
            typer.echo(json.dumps(rows, ensure_ascii=False, indent=1))
            return
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"{len(rows)} results")
        for col in ("end", "analyzer", "analyte", "kind", "mean", "reference", "error_fs_pct",
                    "error_rel_pct", "verdict", "rule"):
            t.add_column(col)
        for r in rows:
            t.add_row(*(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c] if r[c] is not None else "-")
                        for c in ("end", "analyzer", "analyte", "kind", "mean", "reference",
                                  "error_fs_pct", "error_rel_pct", "verdict", "rule")))
        Console().print(t)

    def _verifier(db, stations):
        from envcal.db import init_db, make_engine
        from envcal.registry import load_registry, sync_registry
        from envcal.verify import Verifier

        engine = make_engine(db_url(db))
        init_db(engine)
        registry = load_registry(setting("stations", stations))
        sync_registry(engine, registry)
        return Verifier(engine, registry)

    @verify_app.command("replay")
    def verify_replay(
        start: str = typer.Option(..., "--from", help="Period start, ISO 8601 with offset."),
        end: str = typer.Option(..., "--to", help="Period end (exclusive), ISO 8601 with offset."),
        db: str | None = DbOption,
        archive: str | None = typer.Option(None, "--archive", help="NetCDF archive folder."),
        stations: str | None = typer.Option(None, "--stations", help="Registry TOML file or folder."),
        analyzer: list[str] = typer.Option(None, "--analyzer", help="Only these analyzers."),
        as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
        dask: str | None = typer.Option(None, "--dask", help="Read the archive and compute plateau "
                                        "statistics on Dask: 'local' (2-worker LocalCluster) or a "
                                        "scheduler address tcp://HOST:PORT."),
    ) -> None:
        """Re-evaluate every check that ended in [--from, --to) from the hot store and archive."""
        from rich.progress import Progress

        from envcal.verify import replay, result_json

        v = _verifier(db, stations)
        with Progress(transient=True) as bar:
            task = bar.add_task("replaying checks", total=None)
            if dask:
                from envcal.replay_dask import replay_dask

                def _progress(phase: str, d: int, n: int) -> None:
                    bar.update(task, description=phase, completed=d, total=n)

                results = replay_dask(v, setting("archive", archive), _time(start), _time(end),
                                      scheduler=dask, analyzer_ids=analyzer or None, progress=_progress)
            else:
                results = replay(v, setting("archive", archive), _time(start), _time(end),
                                 analyzer_ids=analyzer or None,
                                 progress=lambda d, n: bar.update(task, completed=d, total=n))
        if as_json:
            typer.echo(json.dumps([result_json(r) for r in results], ensure_ascii=False))
        else:
            counts: dict[str, int] = {}
            for r in results:
                counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
            typer.echo(f"re-evaluated {len(results)} channel checks: "
                       + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))

    @verify_app.command("pending")
    def verify_pending(
        db: str | None = DbOption,
        stations: str | None = typer.Option(None, "--stations", help="Registry TOML file or folder."),
        stale_minutes: float = typer.Option(30.0, help="A check with no end reading is complete "
                                            "after this many minutes of newer data."),
    ) -> None:
        """Evaluate every complete check in the hot store that has no result yet."""
        v = _verifier(db, stations)
        results = v.verify_pending(stale_after=dt.timedelta(minutes=stale_minutes))
        typer.echo(f"evaluated {len(results)} channel checks")
