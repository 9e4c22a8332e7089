"""Station and analyzer registry: ``stations/*.toml`` loaded and validated strictly.

A registry file holds ``[[stations]]`` and ``[[analyzers]]`` tables::

    [[stations]]
    id = "ZJ-HZ-AQ01"; name = "杭州西溪"; kind = "ambient_air"
    lat = 30.27; lon = 120.08; operator = "杭州市生态环境监测中心"

    [[analyzers]]
    id = "HZ-AQ01-PM"; station = "ZJ-HZ-AQ01"; model = "..."; serial = "..."
    mn = "..."; rule_pack = "hj817_2018"; protocol = "json"
    channels = [{analyte = "PM2.5", unit = "ug/m3", span = 1000.0, hj212 = "a34004"}]

Unknown keys, unknown units or analytes, duplicate ids and dangling references are errors
that name the file and the key.

Per-analyzer HJ 212 options: ``crc = "modbus"`` and ``encoding = "gbk"`` (opt-in bends of
real devices). SM4 keys never sit in the registry: they come from a separate secrets file
(:func:`load_hj212_keys`).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from envcal.analytes import ANALYTES
from envcal.units import UnitError, parse_unit
from envcal.validation import describe

StationKind = Literal["ambient_air", "flue_gas", "surface_water", "wastewater"]


class RegistryError(ValueError):
    """The registry is invalid; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class ChannelSpec(_Strict):
    analyte: str
    unit: str
    span: float = Field(gt=0)
    hj212: str | None = None
    #: physical range for data-quality tests [channel unit]; defaults to [0, 1.2 * span]
    range_min: float | None = None
    range_max: float | None = None

    @field_validator("analyte")
    @classmethod
    def _known_analyte(cls, v: str) -> str:
        if v not in ANALYTES:
            raise ValueError(f"unknown analyte {v!r} (known: {', '.join(sorted(ANALYTES))})")
        return v

    @field_validator("unit")
    @classmethod
    def _known_unit(cls, v: str) -> str:
        try:
            parse_unit(v)
        except UnitError as exc:
            raise ValueError(str(exc)) from None
        return v

    @property
    def code(self) -> str | None:
        """HJ 212 pollutant code (explicit, else the analyte's default)."""
        return self.hj212 or ANALYTES[self.analyte].hj212


class StationSpec(_Strict):
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    name: str
    kind: StationKind
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    operator: str
    name_en: str | None = None


class AnalyzerSpec(_Strict):
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    station: str
    model: str
    serial: str
    mn: str | None = Field(default=None, max_length=24)
    rule_pack: str
    protocol: Literal["json", "hj212"] = "json"
    pw: str | None = None  # HJ 212 access password, checked when set
    #: HJ 212 CRC the device sends: "modbus" accepts the CRC-16/MODBUS variant too (opt-in)
    crc: Literal["hj212", "modbus"] = "hj212"
    #: HJ 212 text encoding: "gbk" accepts GBK text too (opt-in)
    encoding: Literal["utf-8", "gbk"] = "utf-8"
    channels: list[ChannelSpec] = Field(min_length=1)

    def channel(self, analyte: str) -> ChannelSpec | None:
        for c in self.channels:
            if c.analyte == analyte:
                return c
        return None


class _File(_Strict):
    stations: list[StationSpec] = []
    analyzers: list[AnalyzerSpec] = []


@dataclass
class Registry:
    """All stations and analyzers, with lookups used by ingest and verification."""

    stations: dict[str, StationSpec] = field(default_factory=dict)
    analyzers: dict[str, AnalyzerSpec] = field(default_factory=dict)
    sources: list[Path] = field(default_factory=list)

    def by_mn(self, mn: str) -> AnalyzerSpec | None:
        for a in self.analyzers.values():
            if a.mn == mn:
                return a
        return None

    def station_of(self, analyzer_id: str) -> StationSpec:
        return self.stations[self.analyzers[analyzer_id].station]


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(path.glob("*.toml"))
        if not files:
            raise RegistryError(f"{path}: no *.toml registry files")
        return files
    if not path.is_file():
        raise RegistryError(f"{path}: no such registry file or folder")
    return [path]


def load_registry(paths: str | Path | Iterable[str | Path]) -> Registry:
    """Load and validate a registry from TOML files or folders of them.

    Parameters
    ----------
    paths : str or Path or iterable of them
        Registry TOML file(s) or folder(s) (all ``*.toml`` inside, sorted by name).

    Returns
    -------
    Registry

    Raises
    ------
    RegistryError
        On unreadable TOML, an unknown key, unit or analyte, a duplicate id, or a reference
        to a station that does not exist; the message names the file and key.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    reg = Registry()
    origin: dict[str, Path] = {}
    mns: dict[str, str] = {}
    for p in paths:
        for f in _files(Path(p)):
            try:
                data = tomllib.loads(f.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:  # TOMLDecodeError, or an int too long for Python
                raise RegistryError(f"{f}: invalid TOML: {exc}") from None
            try:
                parsed = _File.model_validate(data)
            except ValidationError as exc:
                raise RegistryError(describe(f, exc, data)) from None
            reg.sources.append(f)
            for i, s in enumerate(parsed.stations):
                if s.id in reg.stations:
                    raise RegistryError(f"{f}: stations[{i}].id: duplicate station id {s.id!r} "
                                        f"(first defined in {origin['s:' + s.id]})")
                reg.stations[s.id] = s
                origin["s:" + s.id] = f
            for i, a in enumerate(parsed.analyzers):
                if a.id in reg.analyzers:
                    raise RegistryError(f"{f}: analyzers[{i}].id: duplicate analyzer id {a.id!r} "
                                        f"(first defined in {origin['a:' + a.id]})")
                seen = set()
                for j, c in enumerate(a.channels):
                    if c.analyte in seen:
                        raise RegistryError(f"{f}: analyzers[{i}].channels[{j}].analyte: duplicate "
                                            f"channel {c.analyte!r} on analyzer {a.id!r}")
                    seen.add(c.analyte)
                if a.mn:
                    if a.mn in mns:
                        raise RegistryError(f"{f}: analyzers[{i}].mn: duplicate MN {a.mn!r} "
                                            f"(also analyzer {mns[a.mn]!r})")
                    mns[a.mn] = a.id
                reg.analyzers[a.id] = a
                origin["a:" + a.id] = f
    for a in reg.analyzers.values():
        if a.station not in reg.stations:
            raise RegistryError(f"{origin['a:' + a.id]}: analyzer {a.id!r}: station: unknown station "
                                f"{a.station!r}")
    return reg


#: Environment variable naming the HJ 212 secrets file (SM4 keys).
SECRETS_ENV = "ENVCAL_HJ212_SECRETS"


class _KeyFile(_Strict):
    sm4: dict[str, str] = {}

    @field_validator("sm4")
    @classmethod
    def _hex_keys(cls, v: dict[str, str]) -> dict[str, str]:
        for aid, text in v.items():
            if len(text) != 32 or any(c not in "0123456789abcdefABCDEF" for c in text):
                raise ValueError(f"key of analyzer {aid!r} must be 32 hex digits (128 bits)")
        return v


def load_hj212_keys(path: str | Path, registry: Registry | None = None) -> dict[str, bytes]:
    """SM4 keys of HJ 212-2025 devices from a secrets file (never from the registry).

    The file is TOML::

        [sm4]
        "HZ-AQ01-PM" = "30303030303030303030303030303030"   # 32 hex digits per analyzer

    Parameters
    ----------
    path : str or Path
        The secrets file (given by ``--secrets`` or ``ENVCAL_HJ212_SECRETS``).
    registry : Registry, optional
        When given, every analyzer id must be in it.

    Returns
    -------
    dict of str to bytes
        Analyzer id -> 16-byte key.

    Raises
    ------
    RegistryError
        Unreadable file, unknown key, a key that is not 32 hex digits, an unknown analyzer;
        the message names the file and never shows a key.

    References
    ----------
    HJ 212-2025, clause 6.4.2 (SM4, 16-byte key) and 6.4.3 (key management).
    """
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RegistryError(f"{p}: cannot read HJ 212 secrets file: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError) as exc:  # TOMLDecodeError, or an int too long for Python
        raise RegistryError(f"{p}: invalid TOML: {exc}") from None
    try:
        parsed = _KeyFile.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(x) for x in err["loc"]) or "(file)"
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"{p}: {where}: {msg}")  # no input echoed: it may be a key
        raise RegistryError("\n".join(lines)) from None
    if registry is not None:
        for aid in parsed.sm4:
            if aid not in registry.analyzers:
                raise RegistryError(f"{p}: sm4.{aid}: unknown analyzer {aid!r} (not in the registry)")
    return {aid: bytes.fromhex(text) for aid, text in parsed.sm4.items()}


def hj212_options(spec: AnalyzerSpec, keys: dict[str, bytes] | None = None) -> dict:
    """Keyword arguments of :func:`envcal.protocols.hj212.decode_frame` for one analyzer.

    Parameters
    ----------
    spec : AnalyzerSpec
    keys : dict, optional
        Output of :func:`load_hj212_keys`.

    Returns
    -------
    dict
        ``{"crc": ..., "encoding": ..., "key": bytes or None}``.
    """
    return {"crc": spec.crc, "encoding": spec.encoding, "key": (keys or {}).get(spec.id)}


def sync_registry(engine, reg: Registry) -> None:
    """Upsert the registry's stations, analyzers and channels into the database."""
    from sqlmodel import Session, select

    from envcal.models import Analyzer, Channel, Station

    with Session(engine) as s:
        for st in reg.stations.values():
            row = s.get(Station, st.id) or Station(id=st.id, name=st.name, kind=st.kind,
                                                    lat=st.lat, lon=st.lon, operator=st.operator)
            row.name, row.kind, row.lat, row.lon, row.operator = st.name, st.kind, st.lat, st.lon, st.operator
            s.add(row)
        s.flush()
        for a in reg.analyzers.values():
            row = s.get(Analyzer, a.id) or Analyzer(id=a.id, station_id=a.station, model=a.model,
                                                     serial=a.serial, rule_pack=a.rule_pack)
            row.station_id, row.model, row.serial = a.station, a.model, a.serial
            row.mn, row.rule_pack, row.protocol = a.mn, a.rule_pack, a.protocol
            s.add(row)
        s.flush()
        for a in reg.analyzers.values():
            existing = {c.analyte: c for c in s.exec(select(Channel).where(Channel.analyzer_id == a.id))}
            for c in a.channels:
                row = existing.get(c.analyte) or Channel(analyzer_id=a.id, analyte=c.analyte,
                                                         unit=c.unit, span=c.span)
                row.unit, row.span, row.hj212_code = c.unit, c.span, c.code
                s.add(row)
        s.commit()
