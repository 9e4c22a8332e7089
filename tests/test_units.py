import pytest

from envcal.units import UnitError, conversion, convert, parse_unit


def test_units_so2_hj_molar_volume():
    # 56.0 umol/mol * 64.06 g/mol / 22.4 L/mol = 3587.36 / 22.4 = 160.15 mg/m3
    assert convert(56.0, "umol/mol", "mg/m3", "SO2") == pytest.approx(160.15, abs=0.005)


def test_units_so2_exact_molar_volume():
    # 3587.36 / 22.414 = 160.05 mg/m3
    assert convert(56.0, "ppm", "mg/m³", "SO2", molar_volume=22.414) == pytest.approx(160.05, abs=0.005)


def test_units_nox_as_no2_roundtrip():
    # 100 umol/mol NOx as NO2: 100 * 46.01 / 22.4 = 205.40 mg/m3
    mg = convert(100.0, "umol/mol", "mg/m3", "NOx")
    assert mg == pytest.approx(205.40, abs=0.005)
    assert convert(mg, "mg/m3", "umol/mol", "NOx") == pytest.approx(100.0)


def test_units_conversion_records_constants():
    c = conversion("umol/mol", "mg/m3", "SO2", molar_volume=22.414)
    assert (c.molar_mass, c.molar_volume) == (64.06, 22.414)


def test_units_same_dimension():
    assert convert(1.0, "mg/m3", "ug/m3") == pytest.approx(1000.0)
    assert convert(20.9, "%", "umol/mol") == pytest.approx(209000.0)
    assert convert(25.0, "degC", "K") == pytest.approx(298.15)


@pytest.mark.parametrize("a,b,analyte,msg", [
    ("mg/m3", "m/s", "SO2", "cannot convert"),  # wrong dimension, not a gas conversion
    ("umol/mol", "mg/m3", "PM2.5", "no molar mass"),
    ("pH", "mg/L", None, "cannot convert"),
])
def test_units_refused(a, b, analyte, msg):
    with pytest.raises(UnitError, match=msg):
        convert(1.0, a, b, analyte)


def test_units_parse_unknown():
    with pytest.raises(UnitError, match="unknown unit"):
        parse_unit("bogons")
