"""One pint registry for envcal; units are converted here, once, at the edges.

Kernels never see units: callers convert certified values and readings into the channel's
unit with :func:`convert` before handing plain float64 arrays to :mod:`envcal.kernels`.

Gas mole fraction <-> mass concentration at standard state (273.15 K, 101.325 kPa)::

    c [mg/m3] = x [umol/mol] * M [g/mol] / V_m [L/mol]

with V_m = 22.4 L/mol in the HJ formulas (HJ 75-2017, HJ 1045-2019 Appendix A) and
22.414 L/mol exact. NOx is expressed as NO2 (M = 46.01 g/mol).
"""

from __future__ import annotations

import re
import tokenize
from dataclasses import dataclass

import pint

ureg = pint.UnitRegistry(autoconvert_offset_to_baseunit=True)
ureg.define("pH = [acidity] = pH_unit")
ureg.define("NTU = [turbidity]")
Q_ = ureg.Quantity

#: Molar volume of an ideal gas at 273.15 K and 101.325 kPa as written in the HJ formulas [L/mol].
MOLAR_VOLUME_HJ = 22.4
#: Molar volume of an ideal gas at 273.15 K and 101.325 kPa, CODATA [L/mol].
MOLAR_VOLUME_EXACT = 22.414

#: Molar masses [g/mol]; NOx is reported as NO2 (HJ 75-2017, 40 CFR 60).
MOLAR_MASS: dict[str, float] = {
    "SO2": 64.06,
    "NOx": 46.01,
    "NO2": 46.01,
    "NO": 30.01,
    "CO": 28.01,
    "CO2": 44.01,
    "O3": 48.00,
    "O2": 32.00,
    "H2S": 34.08,
    "NH3": 17.03,
    "HCl": 36.46,
}


class UnitError(ValueError):
    """A unit string that envcal cannot parse, or a conversion between incompatible units."""


_CUBE = re.compile(r"(?<=[A-Za-zµ])([23])(?![0-9])")


def _normalize(unit: str) -> str:
    s = unit.strip().replace("³", "^3").replace("²", "^2").replace("μ", "µ")
    s = _CUBE.sub(r"^\1", s)  # m3 -> m^3, m2 -> m^2 (as written on Chinese certificates)
    return s


def parse_unit(unit: str) -> pint.Unit:
    """Parse a unit string as written in registries and certificates.

    Parameters
    ----------
    unit : str
        e.g. ``"mg/m3"``, ``"µg/m³"``, ``"umol/mol"``, ``"ppm"``, ``"mg/L"``, ``"%"``, ``"pH"``.

    Returns
    -------
    pint.Unit

    Raises
    ------
    UnitError
        If the string is not a unit envcal knows.
    """
    if not isinstance(unit, str) or not unit.strip():
        raise UnitError(f"empty unit {unit!r}")
    try:
        return ureg.Unit(_normalize(unit))
    except (pint.errors.UndefinedUnitError, pint.errors.DefinitionSyntaxError, AttributeError,
            TypeError, ValueError, AssertionError, tokenize.TokenError, SyntaxError) as exc:
        raise UnitError(f"unknown unit {unit!r}: {exc}") from None


def is_mole_fraction(u: pint.Unit) -> bool:
    return u.dimensionality == ureg.dimensionless.dimensionality


def is_mass_concentration(u: pint.Unit) -> bool:
    return u.dimensionality == (ureg.mg / ureg.m**3).dimensionality


@dataclass(frozen=True)
class Conversion:
    """The factor that took a value from one unit to another, and how it was obtained."""

    factor: float
    from_unit: str
    to_unit: str
    molar_mass: float | None = None
    molar_volume: float | None = None

    def apply(self, value: float) -> float:
        return value * self.factor


def conversion(from_unit: str, to_unit: str, analyte: str | None = None,
               molar_volume: float = MOLAR_VOLUME_HJ) -> Conversion:
    """Multiplicative factor from ``from_unit`` to ``to_unit`` for ``analyte``.

    Parameters
    ----------
    from_unit, to_unit : str
        Unit strings (see :func:`parse_unit`). Offset units (degC) are refused: they are not
        multiplicative; convert temperatures with :func:`convert`.
    analyte : str, optional
        Needed for mole fraction <-> mass concentration of gases (molar mass from
        :data:`MOLAR_MASS`).
    molar_volume : float, default 22.4
        Molar volume at 273.15 K and 101.325 kPa [L/mol]; 22.4 in the HJ formulas,
        22.414 exact. Recorded in the returned :class:`Conversion`.

    Returns
    -------
    Conversion

    Raises
    ------
    UnitError
        Incompatible dimensions, or a gas conversion for an analyte without molar mass.

    References
    ----------
    HJ 75-2017, Appendix A (ppm to mg/m3 at standard state); HJ 1045-2019, Appendix A.
    """
    fu, tu = parse_unit(from_unit), parse_unit(to_unit)
    try:
        if fu.dimensionality == tu.dimensionality:
            return Conversion(float(Q_(1.0, fu).to(tu).magnitude), from_unit, to_unit)
    except pint.errors.OffsetUnitCalculusError:
        raise UnitError(f"{from_unit} -> {to_unit} is not a multiplicative conversion") from None
    gas = (is_mole_fraction(fu) and is_mass_concentration(tu)) or (
        is_mass_concentration(fu) and is_mole_fraction(tu))
    if not gas:
        raise UnitError(f"cannot convert {from_unit} ({fu.dimensionality}) to {to_unit} "
                        f"({tu.dimensionality})")
    if analyte not in MOLAR_MASS:
        raise UnitError(f"cannot convert {from_unit} to {to_unit} for {analyte!r}: "
                        "no molar mass known")
    if not molar_volume > 0:
        raise UnitError(f"molar volume must be positive, got {molar_volume}")
    mm = MOLAR_MASS[analyte]
    # 1 umol/mol -> mm / V_m mg/m3
    per_umol = mm / molar_volume  # mg/m3 per umol/mol
    if is_mole_fraction(fu):
        to_umol = float(Q_(1.0, fu).to(ureg.micromole / ureg.mole).magnitude)
        mgm3 = to_umol * per_umol
        factor = mgm3 * float(Q_(1.0, ureg.mg / ureg.m**3).to(tu).magnitude)
    else:
        to_mgm3 = float(Q_(1.0, fu).to(ureg.mg / ureg.m**3).magnitude)
        umol = to_mgm3 / per_umol
        factor = umol * float(Q_(1.0, ureg.micromole / ureg.mole).to(tu).magnitude)
    return Conversion(factor, from_unit, to_unit, mm, molar_volume)


def convert(value: float, from_unit: str, to_unit: str, analyte: str | None = None,
            molar_volume: float = MOLAR_VOLUME_HJ) -> float:
    """Convert one value between units (including degC/K and gas ppm <-> mg/m3).

    Parameters
    ----------
    value : float
        Value in ``from_unit``.
    from_unit, to_unit : str
        Unit strings.
    analyte : str, optional
        Gas analyte for mole fraction <-> mass concentration.
    molar_volume : float, default 22.4
        [L/mol] at 273.15 K, 101.325 kPa.

    Returns
    -------
    float
        Value in ``to_unit``.

    Examples
    --------
    >>> round(convert(56.0, "umol/mol", "mg/m3", "SO2"), 2)
    160.15
    >>> round(convert(56.0, "umol/mol", "mg/m3", "SO2", molar_volume=22.414), 2)
    160.05

    References
    ----------
    HJ 75-2017, Appendix A; DESIGN.md section 5.
    """
    fu, tu = parse_unit(from_unit), parse_unit(to_unit)
    if fu.dimensionality == tu.dimensionality:
        try:
            return float(Q_(value, fu).to(tu).magnitude)
        except pint.errors.DimensionalityError as exc:  # pragma: no cover - guarded above
            raise UnitError(str(exc)) from None
    return conversion(from_unit, to_unit, analyte, molar_volume).apply(value)
