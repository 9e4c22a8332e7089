"""Write the sample certificate PDF ``GBW(E)080123-2026-017.pdf`` (run from anywhere).

The PDF stands in for a producer's scanned certificate; it is made up. Only core fonts are
used (ASCII text), so the output is small (~2 KB) and reproducible (fixed creation date).

Usage: ``python reference_materials/make_sample_pdf.py``
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from fpdf import FPDF

OUT = Path(__file__).with_name("samples") / "GBW(E)080123-2026-017.pdf"

LINES = [
    ("Certificate of Certified Reference Material (sample, made up)", 13),
    ("Sulfur dioxide in nitrogen, GBW(E)080123, lot 2026-017", 11),
    ("Producer: Zhejiang Example Standard Gas Co., Ltd. (fictitious)", 10),
    ("Certified value: SO2 = 56.0 umol/mol, U = 0.6 umol/mol (k = 2)", 10),
    ("Matrix: N2. Cylinder: 4 L aluminium, 10 MPa at filling.", 10),
    ("Date of certification: 2026-03-01. Valid until: 2027-03-01.", 10),
    ("Traceability: gravimetric preparation (ISO 6142-1), verified against", 10),
    ("primary standards of the national metrology institute.", 10),
    ("This document is a test fixture of the envcal project.", 9),
]


def make(path: Path = OUT) -> Path:
    pdf = FPDF(format="A4")
    pdf.set_creation_date(dt.datetime(2026, 3, 1, tzinfo=dt.UTC))
    pdf.set_title("GBW(E)080123-2026-017")
    pdf.set_author("envcal sample")
    pdf.set_compression(True)
    pdf.add_page()
    for text, size in LINES:
        pdf.set_font("Helvetica", size=size)
        pdf.cell(0, 9, text, new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(path))
    return path


if __name__ == "__main__":
    p = make()
    print(f"wrote {p} ({p.stat().st_size} bytes)")
