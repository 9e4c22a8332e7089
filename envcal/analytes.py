"""The analytes envcal knows: names, Chinese names, HJ 212 codes, CF names and dimensions.

HJ 212 pollutant codes are from HJ 212-2017 Tables B.1 (water) and B.2 (gas); see
``shared/standards/HJ212-2017.txt``. ``dimension`` is the pint dimensionality family a
channel or certified value of the analyte may have (``gas`` = mole fraction or mass
concentration, convertible at standard state through the molar mass).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Analyte:
    name: str
    zh: str
    hj212: str | None
    dimension: str  # gas | mass_concentration | mole_fraction | ph | velocity | temperature | pressure | flow | percent | volume_flow
    standard_name: str | None = None  # CF standard name where one exists
    long_name: str = ""


ANALYTES: dict[str, Analyte] = {a.name: a for a in [
    # flue gas (HJ 75/76-2017) and ambient gas (HJ 818-2018)
    Analyte("SO2", "二氧化硫", "a21026", "gas",
            "mass_concentration_of_sulfur_dioxide_in_air", "sulfur dioxide"),
    Analyte("NOx", "氮氧化物", "a21002", "gas",
            None, "nitrogen oxides as NO2"),
    Analyte("NO", "一氧化氮", "a21003", "gas",
            "mass_concentration_of_nitrogen_monoxide_in_air", "nitrogen monoxide"),
    Analyte("NO2", "二氧化氮", "a21004", "gas",
            "mass_concentration_of_nitrogen_dioxide_in_air", "nitrogen dioxide"),
    Analyte("CO", "一氧化碳", "a21005", "gas",
            "mass_concentration_of_carbon_monoxide_in_air", "carbon monoxide"),
    Analyte("O3", "臭氧", "a05024", "gas", "mass_concentration_of_ozone_in_air", "ozone"),
    Analyte("O2", "氧气含量", "a19001", "mole_fraction",
            None, "oxygen (volume fraction)"),
    Analyte("dust", "烟尘", "a34013", "mass_concentration", None, "particulate matter (smoke dust)"),
    Analyte("PM2.5", "细颗粒物", "a34004", "mass_concentration",
            "mass_concentration_of_pm2p5_ambient_aerosol_particles_in_air", "PM2.5"),
    Analyte("PM10", "可吸入颗粒物", "a34002", "mass_concentration",
            "mass_concentration_of_pm10_ambient_aerosol_particles_in_air", "PM10"),
    Analyte("velocity", "烟气流速", "a01011", "velocity", None, "flue gas velocity"),
    Analyte("flue_temp", "烟气温度", "a01012", "temperature", None, "flue gas temperature"),
    Analyte("flue_pressure", "烟气压力", "a01013", "pressure", None, "flue gas pressure"),
    Analyte("flue_humidity", "烟气湿度", "a01014", "percent", None, "flue gas humidity"),
    Analyte("flow", "采样流量", None, "volume_flow", None, "sampler flow rate"),
    Analyte("temperature", "温度", "a01001", "temperature", "air_temperature", "air temperature"),
    Analyte("pressure", "气压", "a01006", "pressure", "air_pressure", "air pressure"),
    # water (HJ 353/354/355-2019, HJ 915)
    Analyte("CODcr", "化学需氧量", "w01018", "mass_concentration", None, "chemical oxygen demand (dichromate)"),
    Analyte("NH3-N", "氨氮", "w21003", "mass_concentration",
            None, "ammonia nitrogen"),
    Analyte("TP", "总磷", "w21011", "mass_concentration", None, "total phosphorus"),
    Analyte("TN", "总氮", "w21001", "mass_concentration", None, "total nitrogen"),
    Analyte("pH", "pH值", "w01001", "ph", None, "pH"),
    Analyte("water_temp", "水温", "w01010", "temperature", None, "water temperature"),
    Analyte("DO", "溶解氧", "w01009", "mass_concentration", None, "dissolved oxygen"),
    Analyte("water_flow", "污水流量", "w00000", "volume_flow", None, "effluent flow"),
]}

#: HJ 212 pollutant code -> analyte name.
BY_HJ212: dict[str, str] = {a.hj212: a.name for a in ANALYTES.values() if a.hj212}


def known(name: str) -> bool:
    """Whether ``name`` is an analyte envcal knows."""
    return name in ANALYTES
