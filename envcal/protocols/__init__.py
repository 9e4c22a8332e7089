"""Wire formats: pure functions, bytes in, records out. They know nothing of MQTT or SQL.

- :mod:`envcal.protocols.records` — the records every decoder returns.
- :mod:`envcal.protocols.json_v1` — JSON readings and check summaries (DESIGN.md section 4).
- :mod:`envcal.protocols.hj212` — HJ 212-2017 frames (and 2005 / 2025 variants).
"""

from envcal.protocols.records import UTC8, CheckBlock, CheckSummary, ProtocolError, ReadingRecord

__all__ = ["UTC8", "CheckBlock", "CheckSummary", "ProtocolError", "ReadingRecord"]
