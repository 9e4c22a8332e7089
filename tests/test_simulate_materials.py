"""The simulator's reference values come from envcal's certificate model and rules."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest

from envcal.certificates import certified_value, import_certificate
from envcal.simulate import SimulatorError, load_materials, material_reference

SAMPLES = Path(__file__).resolve().parents[1] / "reference_materials" / "samples"
LOT = "GBW(E)080123-2026-017"  # SO2 56.0 umol/mol, expires 2027-03-01


def test_simulate_material_valid_on_its_expiry_day_as_envcal():
    (doc,) = [m for m in load_materials(SAMPLES) if m.id == LOT]
    assert material_reference(doc, "SO2", "mg/m3", dt.date(2027, 3, 1), 22.4)[0] is True
    assert material_reference(doc, "SO2", "mg/m3", dt.date(2027, 3, 2), 22.4)[0] is False


@pytest.mark.parametrize("molar_volume", [22.4, 22.414])
def test_simulate_material_value_equals_envcal_reference(sqlite_engine, molar_volume):
    # 56.0 umol/mol x 64.06 g/mol / V_m: the pack's molar volume, as envcal's reference
    import_certificate(sqlite_engine, SAMPLES / "gas_so2.json")
    (doc,) = [m for m in load_materials(SAMPLES) if m.id == LOT]
    at = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
    want = certified_value(sqlite_engine, LOT, "SO2", "mg/m3", at, molar_volume=molar_volume)
    _, got = material_reference(doc, "SO2", "mg/m3", at.date(), molar_volume)
    assert got == pytest.approx(want.value, rel=1e-12)
    assert got == pytest.approx(56.0 * 64.06 / molar_volume, rel=1e-3)


def test_simulate_material_nox_alias_order_as_envcal(sqlite_engine):
    # a lot certifying both NO and NO2: envcal takes NO2 for a NOx channel (ALIASES order)
    import_certificate(sqlite_engine, SAMPLES / "gas_so2_no_mix.json")
    docs = {m.id: m for m in load_materials(SAMPLES)}
    data = json.loads((SAMPLES / "gas_so2_no_mix.json").read_text(encoding="utf-8"))
    doc = docs[data["id"]]
    at = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
    want = certified_value(sqlite_engine, doc.id, "NOx", "mg/m3", at, molar_volume=22.4)
    got = material_reference(doc, "NOx", "mg/m3", at.date(), 22.4)
    assert (got is None) == (not want)
    if got is not None:
        assert got[1] == pytest.approx(want.value, rel=1e-12)


def test_simulate_material_invalid_certificate_is_an_error(tmp_path):
    data = json.loads((SAMPLES / "gas_so2.json").read_text(encoding="utf-8"))
    data["expiry"] = data.pop("expires")  # misspelt key: envcal refuses it, so must the simulator
    (tmp_path / "bad.json").write_text(json.dumps(data), encoding="utf-8")
    shutil.copy(SAMPLES / "gas_so2_span.json", tmp_path / "ok.json")
    with pytest.raises(SimulatorError, match="bad.json"):
        load_materials(tmp_path)
