import pytest
from sqlmodel import Session, select

from envcal.models import Analyzer, Channel, Station
from envcal.registry import RegistryError, load_registry, sync_registry

GOOD = """
[[stations]]
id = "S1"
name = "s"
kind = "flue_gas"
lat = 30.0
lon = 120.0
operator = "op"

[[analyzers]]
id = "A1"
station = "S1"
model = "m"
serial = "x"
rule_pack = "hj75_2017"
channels = [{ analyte = "SO2", unit = "mg/m3", span = 200.0 }]
"""


def _write(tmp_path, text, name="r.toml"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_registry_shipped_network_loads(registry):
    kinds = {s.kind for s in registry.stations.values()}
    assert kinds == {"ambient_air", "flue_gas", "surface_water", "wastewater"}
    assert sum(1 for s in registry.stations.values() if s.kind == "flue_gas") == 2
    cems = registry.analyzers["JX-PP01-CEMS"]
    assert cems.channel("SO2").code == "a21026"
    assert registry.by_mn("33040000000001").id == "JX-PP01-CEMS"


def test_registry_good_file(tmp_path):
    reg = load_registry(_write(tmp_path, GOOD))
    assert list(reg.analyzers) == ["A1"]


@pytest.mark.parametrize(
    "old,new,message",
    [
        ('serial = "x"', 'serial = "x"\ncolour = "red"', r"analyzers\[0\]\.colour \(id='A1'\): unknown key"),
        ('unit = "mg/m3"', 'unit = "bogons"', "unknown unit 'bogons'"),
        ('analyte = "SO2"', 'analyte = "XYZ"', "unknown analyte 'XYZ'"),
        ('station = "S1"', 'station = "S9"', "unknown station 'S9'"),
        ('kind = "flue_gas"', 'kind = "volcano"', r"stations\[0\]\.kind"),
        ("span = 200.0", "span = -1.0", "greater than 0"),
        ("lat = 30.0", "lat = 95.0", r"stations\[0\]\.lat"),
    ],
)
def test_registry_invalid_named(tmp_path, old, new, message):
    p = _write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(RegistryError, match=message) as exc:
        load_registry(p)
    assert str(p) in str(exc.value)


def test_registry_duplicate_id_across_files(tmp_path):
    d = tmp_path / "reg"
    d.mkdir()
    _write(d, GOOD, "a.toml")
    _write(d, GOOD.split("[[analyzers]]")[0].replace('id = "S1"', 'id = "S2"')
           + "[[analyzers]]" + GOOD.split("[[analyzers]]")[1], "b.toml")
    with pytest.raises(RegistryError, match="duplicate analyzer id 'A1'"):
        load_registry(d)


def test_registry_duplicate_channel(tmp_path):
    text = GOOD.replace('channels = [{ analyte = "SO2", unit = "mg/m3", span = 200.0 }]',
                        'channels = [{ analyte = "SO2", unit = "mg/m3", span = 200.0 },'
                        ' { analyte = "SO2", unit = "ppm", span = 70.0 }]')
    with pytest.raises(RegistryError, match="duplicate channel 'SO2'"):
        load_registry(_write(tmp_path, text))


def test_registry_bad_toml(tmp_path):
    with pytest.raises(RegistryError, match="invalid TOML"):
        load_registry(_write(tmp_path, "[[stations]\nid="))


def test_registry_sync_is_idempotent(engine, registry):
    sync_registry(engine, registry)
    sync_registry(engine, registry)
    with Session(engine) as s:
        assert len(s.exec(select(Station)).all()) == len(registry.stations)
        assert len(s.exec(select(Analyzer)).all()) == len(registry.analyzers)
        n_channels = sum(len(a.channels) for a in registry.analyzers.values())
        assert len(s.exec(select(Channel)).all()) == n_channels


# --------------------------------------------------------------------------- HJ 212 options
def test_registry_hj212_opt_ins(tmp_path):
    from envcal.registry import hj212_options

    text = GOOD.replace('serial = "x"', 'serial = "x"\nmn = "M1"\nprotocol = "hj212"\n'
                        'crc = "modbus"\nencoding = "gbk"')
    a = load_registry(_write(tmp_path, text)).analyzers["A1"]
    assert (a.crc, a.encoding) == ("modbus", "gbk")
    assert hj212_options(a) == {"crc": "modbus", "encoding": "gbk", "key": None}
    a0 = load_registry(_write(tmp_path, GOOD, "g.toml")).analyzers["A1"]
    assert (a0.crc, a0.encoding) == ("hj212", "utf-8")


@pytest.mark.parametrize("line, message", [('crc = "ccitt"', r"analyzers\[0\]\.crc"),
                                           ('encoding = "latin-1"', r"analyzers\[0\]\.encoding"),
                                           ('sm4_key = "00"', "unknown key")])
def test_registry_hj212_options_strict(tmp_path, line, message):
    with pytest.raises(RegistryError, match=message):
        load_registry(_write(tmp_path, GOOD.replace('serial = "x"', f'serial = "x"\n{line}')))


def test_hj212_keys_file(tmp_path):
    from envcal.registry import hj212_options, load_hj212_keys

    reg = load_registry(_write(tmp_path, GOOD))
    p = _write(tmp_path, '[sm4]\nA1 = "30303030303030303030303030303030"\n', "secrets.toml")
    keys = load_hj212_keys(p, reg)
    assert keys == {"A1": b"0" * 16}
    assert hj212_options(reg.analyzers["A1"], keys)["key"] == b"0" * 16


@pytest.mark.parametrize("text, message", [
    ('[sm4]\nA1 = "3030"\n', "32 hex digits"),
    ('[sm4]\nA9 = "30303030303030303030303030303030"\n', "unknown analyzer 'A9'"),
    ('[keys]\nA1 = "30303030303030303030303030303030"\n', "keys: unknown key"),
    ('[sm4\n', "invalid TOML"),
])
def test_hj212_keys_file_strict(tmp_path, text, message):
    from envcal.registry import load_hj212_keys

    reg = load_registry(_write(tmp_path, GOOD))
    with pytest.raises(RegistryError, match=message) as exc:
        load_hj212_keys(_write(tmp_path, text, "secrets.toml"), reg)
    assert "303030" not in str(exc.value)


def test_hj212_keys_file_missing(tmp_path):
    from envcal.registry import load_hj212_keys

    with pytest.raises(RegistryError, match="cannot read"):
        load_hj212_keys(tmp_path / "nope.toml")


def test_registry_huge_integer_is_invalid_toml(tmp_path):
    # tomllib raises a plain ValueError (not TOMLDecodeError) for an integer over 4300 digits
    with pytest.raises(RegistryError, match="invalid TOML"):
        load_registry(_write(tmp_path, GOOD.replace("lat = 30.0", "lat = " + "9" * 5000)))
