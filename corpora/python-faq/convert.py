"""Convert the Python FAQ from Debian's python3.11-doc package into this corpus's Markdown docs.

    apt-get install python3.11-doc
    pip install markitdown            # only for this script; not a runtime dependency
    python corpora/python-faq/convert.py

Keeps each page's main text with its headings (one .md per FAQ page), drops Sphinx navigation,
permalink anchors and the per-page table of contents, and turns internal links into plain text.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from bs4 import BeautifulSoup
from markitdown import MarkItDown, StreamInfo

SRC = Path("/usr/share/doc/python3.11/html/faq")
OUT = Path(__file__).resolve().parent / "docs"
PAGES = ["general", "programming", "design", "library", "extending", "windows", "gui", "installed"]


def main_html(path: Path) -> str:
    soup = BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")
    body = soup.find("div", attrs={"role": "main"}) or soup.find("div", class_="body")
    for toc in body.find_all("nav", class_="contents") + body.find_all("div", class_="contents"):
        toc.decompose()
    for a in body.find_all("a", class_="headerlink"):
        a.decompose()
    for a in body.find_all("a"):  # links to other pages of the docs make no sense offline
        a.replace_with(a.get_text())
    return str(body)


def to_markdown(html: str) -> str:
    md = MarkItDown().convert_stream(io.BytesIO(html.encode()), stream_info=StreamInfo(extension=".html")).markdown
    md = re.sub(r"\n{3,}", "\n\n", md)
    return md.strip() + "\n"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for page in PAGES:
        md = to_markdown(main_html(SRC / f"{page}.html"))
        (OUT / f"{page}.md").write_text(md, encoding="utf-8")
        print(f"{page}.md: {len(md.split())} words")


if __name__ == "__main__":
    main()
