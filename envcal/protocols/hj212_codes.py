"""HJ 212 code tables: system codes, command codes, answer codes, Flag bits, timeouts.

The one home of these tables; the decoder, the encoders, the gateway and the DAU emulator
all read them from here.

Flag (HJ 212-2017 Table 3, HJ 212-2025 Table 3): bit 0 = the sender wants an answer, bit 1 =
the frame carries PNUM/PNO (a split upload), bits 2 and up = the standard's version (0 =
HJ/T 212-2005, 1 = HJ 212-2017, 2 = HJ 212-2025). A 2017 frame has Flag 4..7, a 2025 frame
8..11. The 2017 text calls bit 0 "A" and bit 1 "D"; the 2025 text swaps the letters, not
the bit positions.

References
----------
HJ 212-2017, Table 1 (timeouts and retries), Table 3 (Flag), Table 5 (system codes),
Table 6 (execution results), Table 7 (request answers), Table 8 (data flags), Table 9
(command codes). HJ 212-2025, Table 3 (Flag version 2, RF), Table 12 (new command codes
1001, 1002, 1014, 2062, 3024, 9015), clause 6.4.4 (which commands are encrypted).
"""

from __future__ import annotations

from enum import IntEnum

from envcal.protocols.records import DATA_FLAGS

__all__ = [
    "CN",
    "DATA_FLAGS",
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT_S",
    "FLAG_ACK",
    "FLAG_SPLIT",
    "ST",
    "ST_BY_STATION_KIND",
    "ST_SYSTEM",
    "TIMEOUTS",
    "VERSIONS",
    "VERSION_2005",
    "VERSION_2017",
    "VERSION_2025",
    "ExeRtn",
    "QnRtn",
    "flag_for",
    "flag_version",
    "must_encrypt",
    "wants_answer",
]

#: Flag bit 0: the sender asks for an answer (2017 "A", 2025 "D").
FLAG_ACK = 0b01
#: Flag bit 1: the frame carries PNUM and PNO (2017 "D", 2025 "A").
FLAG_SPLIT = 0b10
VERSION_2005 = 0
VERSION_2017 = 1
VERSION_2025 = 2
#: Flag version number -> standard.
VERSIONS = {VERSION_2005: "HJ/T 212-2005", VERSION_2017: "HJ 212-2017", VERSION_2025: "HJ 212-2025"}

#: System code of the interaction frames (9011..9015).
ST_SYSTEM = "91"
#: System codes (HJ 212-2017 Table 5).
ST = {
    "21": "surface water quality", "22": "air quality", "23": "acoustic environment quality",
    "24": "groundwater quality", "25": "soil quality", "26": "seawater quality",
    "27": "volatile organic compounds", "31": "air pollution source",
    "32": "surface water pollution source", "33": "groundwater pollution source",
    "34": "marine pollution source", "35": "soil pollution source", "36": "noise source",
    "37": "vibration source", "38": "radioactive source", "39": "construction dust source",
    "41": "electromagnetic source", "51": "flue gas process monitoring",
    "52": "wastewater process monitoring", "91": "system interaction",
}

#: System code of each registry station kind (envcal.registry.StationKind).
ST_BY_STATION_KIND = {"ambient_air": "22", "flue_gas": "31", "surface_water": "21", "wastewater": "32"}

#: Command codes (HJ 212-2017 Table 9, plus the HJ 212-2025 additions).
CN = {
    "1000": "set timeout and retries",
    "1001": "upload DAU hardware serial (2025)",
    "1002": "set DAU MN (2025)",
    "1011": "get / upload device time",
    "1012": "set device time",
    "1013": "time calibration request",
    "1014": "key exchange (2025)",
    "1061": "get / upload real-time data interval",
    "1062": "set real-time data interval",
    "1063": "get / upload minute data interval",
    "1064": "set minute data interval",
    "1072": "set device password",
    "2011": "real-time data",
    "2012": "stop real-time data",
    "2021": "equipment status data",
    "2022": "stop equipment status data",
    "2031": "daily data",
    "2041": "equipment running time daily data",
    "2051": "minute data",
    "2061": "hourly data",
    "2062": "automatic standard-sample check data (2025)",
    "2081": "DAU start-up time",
    "3011": "zero / span calibration",
    "3012": "immediate sampling",
    "3013": "cleaning / back-flush",
    "3014": "comparison sampling",
    "3015": "over-limit sample retention",
    "3016": "set sampling period",
    "3017": "get / upload sampling period",
    "3018": "get / upload sample output time",
    "3019": "get / upload instrument id",
    "3020": "get / upload device information",
    "3021": "set device parameters",
    "3024": "start standard-sample check (2025)",
    "9011": "request answer",
    "9012": "execution result",
    "9013": "notification answer",
    "9014": "data answer",
    "9015": "heartbeat (2025)",
}


class QnRtn(IntEnum):
    """Request answer codes (``QnRtn``, HJ 212-2017 Table 7)."""

    READY = 1
    REJECTED = 2
    PW_ERROR = 3
    MN_ERROR = 4
    ST_ERROR = 5
    FLAG_ERROR = 6
    QN_ERROR = 7
    CN_ERROR = 8
    CRC_ERROR = 9
    UNKNOWN = 100


class ExeRtn(IntEnum):
    """Execution result codes (``ExeRtn``, HJ 212-2017 Table 6)."""

    SUCCESS = 1
    FAILED = 2
    BAD_CONDITION = 3
    TIMEOUT = 4
    BUSY = 5
    FAULT = 6
    NO_DATA = 100


#: Default answer timeout [s] and number of resends per link type (HJ 212-2017 Table 1;
#: NB-IoT from HJ 212-2025 Table 1).
TIMEOUTS = {
    "GPRS": (10.0, 3), "CDMA": (10.0, 3), "ADSL": (5.0, 3), "WCDMA": (10.0, 3),
    "TD-SCDMA": (10.0, 3), "CDMA2000": (10.0, 3), "PLC": (10.0, 3), "TD-LTE": (10.0, 3),
    "FDD-LTE": (10.0, 3), "WIMAX": (10.0, 3), "NB-IOT": (30.0, 5),
}
DEFAULT_TIMEOUT_S, DEFAULT_RETRIES = TIMEOUTS["GPRS"]


def flag_for(version: int, *, ack: bool, split: bool = False) -> int:
    """The Flag value of a frame.

    Parameters
    ----------
    version : int
        0 (HJ/T 212-2005), 1 (HJ 212-2017) or 2 (HJ 212-2025).
    ack : bool
        The sender asks for an answer (bit 0).
    split : bool, optional
        The frame carries PNUM/PNO (bit 1).

    Returns
    -------
    int
        ``version << 2 | split << 1 | ack``: 2017 -> 4..7, 2025 -> 8..11.

    References
    ----------
    HJ 212-2017 Table 3 (Flag); HJ 212-2025 Table 3 (example Flag=9).
    """
    if version not in VERSIONS:
        raise ValueError(f"unknown HJ 212 version {version!r} (0, 1 or 2)")
    return version << 2 | (FLAG_SPLIT if split else 0) | (FLAG_ACK if ack else 0)


def flag_version(flag: int | None) -> int:
    """The standard's version in a Flag value (``flag >> 2``; no Flag = HJ/T 212-2005).

    Parameters
    ----------
    flag : int or None

    Returns
    -------
    int
        0, 1, 2 (or larger for a Flag no known standard defines).

    References
    ----------
    HJ 212-2017 Table 3; HJ 212-2025 Table 3.
    """
    return VERSION_2005 if flag is None else flag >> 2


def wants_answer(flag: int | None) -> bool:
    """Whether a frame's Flag asks for an answer (bit 0; no Flag = no answer).

    Parameters
    ----------
    flag : int or None

    Returns
    -------
    bool

    References
    ----------
    HJ 212-2017 Table 3 ("A: 命令是否应答"); HJ 212-2025 Table 3 ("D").
    """
    return flag is not None and bool(flag & FLAG_ACK)


def must_encrypt(cn: str) -> bool:
    """Whether HJ 212-2025 requires the CP of this command to be SM4-encrypted.

    Parameters
    ----------
    cn : str
        Command code.

    Returns
    -------
    bool
        True for the data commands 2000..2999, for 1014 and for 3020.

    References
    ----------
    HJ 212-2025, clause 6.4.4.
    """
    return cn in ("1014", "3020") or (len(cn) == 4 and cn.isdigit() and "2000" <= cn <= "2999")
