"""Disk full on the archive directory: compaction into a 2 MB tmpfs that has no room left.

The compaction must report the error, keep the rows in the SQL hot store, leave no partial
file behind, and succeed once space is available."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess

import pytest
from support.mqtt_ingest import DATA, count, payload, prepared, reading

from envcal.archive import compact
from envcal.ingest import IngestCore

pytestmark = pytest.mark.fault


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs (root only): the archive directory of a nearly full disk."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a 2 MB tmpfs for the disk-full test")
    mnt = tmp_path / "archive"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=True)


def _fill(path, leave: int) -> os.PathLike:
    """Fill the file system of ``path`` with one file until ``leave`` bytes remain."""
    filler = path / "filler.bin"
    free = shutil.disk_usage(path).free
    with filler.open("wb") as fh:
        fh.write(b"\0" * max(0, free - leave))
    return filler


def _files(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_compact_disk_full_reports_keeps_rows_then_succeeds(small_disk, tmp_path):
    eng, reg = prepared(f"sqlite:///{tmp_path / 'envcal.db'}")
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=2)
    base = dt.datetime.combine(day, dt.time(1), dt.UTC)
    core = IngestCore(eng, reg)
    core.ingest([(DATA, payload([reading(s, base) for s in range(i, i + 100)]))
                 for i in range(1, 3001, 100)])
    n_rows = count(eng, "reading")
    assert n_rows == 6000

    filler = _fill(small_disk, leave=4096)  # not even room for a NetCDF header
    report = compact(eng, small_disk, reg)
    assert len(report.errors) == 1, report.lines()
    err = report.errors[0].error
    assert "space" in err.lower() or "errno 28" in err.lower() or "hdf" in err.lower(), err
    assert "ERROR" in "\n".join(report.lines())
    assert report.rows_deleted == 0
    assert count(eng, "reading") == n_rows  # nothing deleted from the hot store
    assert count(eng, "archive_file") == 0
    assert _files(small_disk) == ["filler.bin"]  # no partial or temporary file left

    filler.unlink()  # space is available again: the same call now succeeds
    report = compact(eng, small_disk, reg)
    assert report.errors == [], report.lines()
    assert report.rows_deleted == n_rows
    assert count(eng, "reading") == 0
    assert count(eng, "archive_file") == 1
    files = _files(small_disk)
    assert len(files) == 1 and files[0].endswith(f"{day:%Y%m%d}.nc"), files
    from envcal.stats import stats
    assert stats(eng, ["readings"])["readings"] == n_rows  # archived values still counted
    eng.dispose()
