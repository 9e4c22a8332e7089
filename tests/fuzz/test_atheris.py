"""A short, bounded coverage-guided run (atheris / libFuzzer) over the two wire decoders;
skipped with the reason where atheris does not install."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SECONDS = int(os.environ.get("ENVCAL_ATHERIS_SECONDS", "10"))

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("atheris") is None,
                                 reason="atheris is not installed (pip install atheris; "
                                        "wheels exist for Linux x86-64 only)")]


@pytest.mark.parametrize("target", ["json", "hj212"])
def test_atheris_decoder_bounded_run(target, tmp_path):
    from fuzz_inputs import hj212_seeds, json_seeds

    corpus = tmp_path / "corpus"  # start from valid inputs so the fuzzer gets past the envelope
    corpus.mkdir()
    for i, seed in enumerate(json_seeds() if target == "json" else hj212_seeds()):
        (corpus / f"seed{i}").write_bytes(seed)
    env = dict(os.environ, PYTHONPATH=str(HERE.parents[1]))
    r = subprocess.run([sys.executable, str(HERE / "atheris_target.py"), target, str(corpus),
                        f"-max_total_time={SECONDS}", "-rss_limit_mb=2048", "-timeout=5",
                        f"-artifact_prefix={tmp_path}/"],
                       capture_output=True, text=True, timeout=SECONDS + 120, env=env, cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "DONE" in out and "Done" in out, out[-2000:]
    assert not list(tmp_path.glob("crash-*")) and not list(tmp_path.glob("timeout-*"))
