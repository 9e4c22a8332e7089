"""``overview_page_load``: the Overview page with 1,000 analyzers and a year of daily check
results (365,000 rows) in SQLite, run through Streamlit's AppTest (the whole script: queries
in :func:`envcal.views.overview` plus rendering). Aim: under 2 s.

Baseline: what a naive page would do — read the whole ``check_result`` table with
``pandas.read_sql`` and take each channel's newest verdict with a groupby.
Quick mode: 200 analyzers x 90 days.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import time
from pathlib import Path

from benchmarks.common import best_of, row

ROOT = Path(__file__).resolve().parents[1]


def run(quick: bool) -> list[dict]:
    import pandas as pd
    from streamlit.testing.v1 import AppTest

    from envcal import views
    from envcal.db import init_db, make_engine
    from envcal.ui.common import SESSION_KEY
    from envcal.ui.seed import seed_scale
    from envcal.users import Actor

    n_an, days = (200, 90) if quick else (1000, 365)
    now = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        eng = make_engine(url)
        init_db(eng)
        t0 = time.perf_counter()
        n = seed_scale(eng, analyzers=n_an, days=days, now=now)
        seed_s = time.perf_counter() - t0
        views.overview(eng, now)  # warm up (numba, rule packs)
        views_s = best_of(lambda: views.overview(eng, now), 3)

        old = {k: os.environ.get(k) for k in ("ENVCAL_DB", "ENVCAL_REFRESH_S")}
        os.environ["ENVCAL_DB"] = url
        os.environ["ENVCAL_REFRESH_S"] = "3600"
        try:
            at = AppTest.from_file(str(ROOT / "app_streamlit.py"), default_timeout=120)
            at.session_state[SESSION_KEY] = Actor("bench", "viewer")
            at.run()  # first run: imports, engine, caches
            if at.exception:
                raise RuntimeError(str(at.exception))

            def page():
                at.switch_page("envcal/ui/pages/overview.py").run()

            page_s = best_of(page, 3)
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

        def naive():
            df = pd.read_sql("select analyzer_id, analyte, kind, \"end\", verdict from check_result",
                             eng)
            df.sort_values("end").groupby(["analyzer_id", "analyte", "kind"]).tail(1)

        base_s = best_of(naive, 3)
        eng.dispose()
    return [row("overview_page_load", page_s, "pandas_read_all_results", base_s,
                analyzers=n_an, results=n, views_overview_s=views_s, seed_s=seed_s,
                target_s=2.0)]
