"""Wire formats: pure functions, bytes in, records out. They know nothing of MQTT or SQL.

- :mod:`envcal.protocols.records` — the records every decoder returns.
- :mod:`envcal.protocols.json_v1` — JSON readings and check summaries (DESIGN.md section 4).
- :mod:`envcal.protocols.hj212` — HJ 212-2017 frames (and 2005 / 2025 variants).
- :mod:`envcal.protocols.hj212_codes` — the HJ 212 code tables (ST, CN, QnRtn, ExeRtn, Flag, Table 1).
- :mod:`envcal.protocols.hj212_commands` — answers (9011-9014) and commands to DAUs.
- :mod:`envcal.protocols.hj212_stream` — cutting a TCP byte stream into frames.
- :mod:`envcal.protocols.sm4` — SM4-ECB encryption of the HJ 212-2025 data area.
"""

from envcal.protocols.records import UTC8, CheckBlock, CheckSummary, ProtocolError, ReadingRecord

__all__ = ["UTC8", "CheckBlock", "CheckSummary", "ProtocolError", "ReadingRecord"]
