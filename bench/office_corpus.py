"""A documents-only corpus for the README's PDF/DOCX path: five EcoStride help pages written as
three PDFs (fpdf2, headings in a larger font) and two Word files (python-docx, real headings), with
a corpus.yaml and no qa.jsonl.

    python bench/office_corpus.py /tmp/officedocs
    assistant questions /tmp/officedocs && assistant compare /tmp/officedocs --limit 10
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

SRC = Path(__file__).parent.parent / "corpora" / "ecostride" / "docs"
PDFS, DOCX = ["exchanges", "gift-cards", "shipping-domestic"], ["warranty", "loyalty-programme"]
# fpdf2's core fonts are Latin-1: typographic quotes and dashes become their ASCII forms.
ASCII = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2014": "-", "\u2013": "-"})


def blocks(md: str) -> list[str]:
    return [b.strip() for b in re.split(r"\n\s*\n", md) if b.strip()]


def main(out: Path) -> None:
    import docx
    from fpdf import FPDF

    (out / "docs").mkdir(parents=True, exist_ok=True)
    for name in PDFS:
        pdf = FPDF()
        pdf.add_page()
        for b in blocks((SRC / f"{name}.md").read_text()):
            m = re.match(r"^(#+)\s+(.*)", b)
            text = (m.group(2) if m else b).translate(ASCII).replace("\u20ac", "EUR ")
            pdf.set_font("Helvetica", "B" if m else "", (18 if len(m.group(1)) == 1 else 14) if m else 11)
            pdf.multi_cell(0, 9 if m else 6, text, new_x="LMARGIN", new_y="NEXT")
            if not m:
                pdf.ln(2)
        pdf.output(str(out / "docs" / f"{name}.pdf"))
    for name in DOCX:
        d = docx.Document()
        for b in blocks((SRC / f"{name}.md").read_text()):
            m = re.match(r"^(#+)\s+(.*)", b)
            d.add_heading(m.group(2), level=len(m.group(1))) if m else d.add_paragraph(b)
        d.save(str(out / "docs" / f"{name}.docx"))
    (out / "corpus.yaml").write_text(
        f"name: {out.name}\ndescription: EcoStride, an online store for eco-friendly sneakers (help pages as PDF "
        "and Word files)\nsystem_prompt: >-\n  You are the customer support assistant of EcoStride, an online store "
        "for eco-friendly sneakers. Answer in one or two short sentences. If you do not know the answer, say "
        "\"I don't know.\"\n")
    print(f"wrote {out}: {len(PDFS)} PDFs, {len(DOCX)} Word files, no qa.jsonl")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/officedocs"))
