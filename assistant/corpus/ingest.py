"""Binary documents (PDF, Word, PowerPoint, Excel) to Markdown, once per file content.

Teams' documents are mostly PDFs, Word files and slide decks. `markitdown` turns DOCX, PPTX and
XLSX into Markdown with their headings, slide titles and sheet names kept. PDFs are read page by
page with the pdfminer that markitdown brings (markitdown itself returns one text without page
numbers), so a passage can be cited as `docs/manual.pdf p. 3`; a line set in a clearly larger
font than the body text becomes a Markdown heading (the largest size `#`), so chunking and
question generation see the structure.

A conversion is cached by the file's content hash under `<cache>/ingest/` (see
`runtime.cache_dir`): converting a long PDF again costs seconds, reading the cache milliseconds.

A file that cannot be used (encrypted, corrupt, no text layer, over the size cap) raises
`IngestError` with one line saying what is wrong and how to fix it. It is skipped, not fatal: the
corpus still builds from its other documents, and `assistant check` lists it.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import re
import statistics
import zipfile
from dataclasses import dataclass
from pathlib import Path

from assistant.config import IngestSettings
from assistant.errors import AssistantError
from assistant.runtime import cache_dir
from assistant.storage import atomic_write_json

SUFFIXES = (".pdf", ".docx", ".pptx", ".xlsx")
CONVERTER_VERSION = 1  # bump when the Markdown produced for the same file changes
HEADING_SIZE_RATIO = 1.15  # a line set this much larger than the body text is a heading
_OLE_MAGIC = b"\xd0\xcf\x11\xe0"  # password-protected Office files are OLE containers, not zips
# The part every valid file of a format holds: with it, a failed conversion is the library's fault.
_MAIN_PART = {".docx": "word/document.xml", ".pptx": "ppt/presentation.xml", ".xlsx": "xl/workbook.xml"}
# The libraries behind each format's conversion, named with their versions when one of them fails.
_LIBRARIES = {".docx": ("markitdown", "mammoth", "beautifulsoup4", "lxml"),
              ".pptx": ("markitdown", "python-pptx", "lxml"),
              ".xlsx": ("markitdown", "openpyxl", "pandas"),
              ".pdf": ("pdfminer.six",)}


class IngestError(AssistantError):
    """A document that cannot be converted; the message says what is wrong and how to fix it."""


@dataclass
class Converted:
    text: str  # Markdown
    pages: list[int] | None = None  # for PDFs: the text line where each page starts (page 1 first)


def page_at(pages: list[int] | None, line: int) -> int | None:
    """1-based page number holding text line `line`, or None for formats without pages."""
    if not pages:
        return None
    return bisect.bisect_right(pages, line) or 1


def _cache_path(data: bytes, suffix: str) -> Path:
    digest = hashlib.sha256(data + f"\0{suffix}\0{CONVERTER_VERSION}".encode()).hexdigest()
    return cache_dir() / "ingest" / f"{digest[:32]}.json"


def convert(path: Path, settings: IngestSettings | None = None) -> Converted:
    """Markdown (and page starts for PDFs) of a binary document; raises IngestError when unusable."""
    settings = settings or IngestSettings()
    size = path.stat().st_size
    if size > settings.max_file_mb * 1024 * 1024:
        raise IngestError(f"file is {size / 1024 / 1024:.1f} MB, over the size cap of {settings.max_file_mb} MB; "
                          "split it, or raise ingest.max_file_mb in corpus.yaml")
    data = path.read_bytes()
    suffix = path.suffix.lower()
    cached = _cache_path(data, suffix)
    if cached.exists():
        try:
            row = json.loads(cached.read_text(encoding="utf-8"))
            return Converted(row["text"], row["pages"])
        except (ValueError, KeyError, OSError):
            pass  # a damaged cache entry is converted again
    if suffix != ".pdf" and data[:4] == _OLE_MAGIC:
        raise IngestError("file is password-protected (or an old binary Office format); save an unprotected "
                          f"{suffix} copy and replace it")
    result = _pdf(path) if suffix == ".pdf" else _markitdown(path)
    if not result.text.strip():
        what = {".pdf": "no text layer (a scanned or image-only PDF?); run OCR on it (e.g. `ocrmypdf in.pdf "
                        "out.pdf`) and replace it",
                ".pptx": "the deck has no text (empty, or slides that are only pictures); add the text or remove it",
                ".xlsx": "the workbook has no cells with text; add content or remove it"}
        raise IngestError(f"no text extracted: {what.get(suffix, 'the document is empty; add text or remove it')}")
    try:
        atomic_write_json(cached, {"text": result.text, "pages": result.pages}, indent=None)
    except OSError:
        pass  # a read-only cache only costs time
    return result


def _markitdown(path: Path) -> Converted:
    from markitdown import StreamInfo
    from markitdown.converters import DocxConverter, PptxConverter, XlsxConverter

    # The format's own converter, not MarkItDown's guessing: a damaged .docx must fail, not come
    # back as its raw bytes read as plain text.
    suffix = path.suffix.lower()
    converter = {".docx": DocxConverter, ".pptx": PptxConverter, ".xlsx": XlsxConverter}[suffix]()
    try:
        with open(path, "rb") as f:
            text = converter.convert(f, StreamInfo(extension=suffix, filename=path.name)).markdown
    except Exception as e:  # markitdown wraps every parser's failure; its class names the cause
        if not _is_container(path, suffix):
            raise IngestError(f"cannot be read as {suffix} ({_reason(e)}); the file is corrupt or not a {suffix} "
                              "file: export it again from the application that made it") from None
        if suffix != ".docx":
            raise IngestError(library_failure(suffix, e)) from None
        try:
            text = _docx_plain(path)
        except Exception as e2:
            raise IngestError(library_failure(suffix, e2)) from None
    # markitdown marks slides with HTML comments; they carry no content.
    text = re.sub(r"<!--\s*Slide number:\s*\d+\s*-->\n?", "", text)
    return Converted(re.sub(r"\n{3,}", "\n\n", text).strip() + "\n")


def _docx_plain(path: Path) -> str:
    """A .docx through mammoth and markitdown's HTML converter, without markitdown's pre-processing.

    That pre-processing (equations to LaTeX, double strike-through) round-trips word/document.xml
    through BeautifulSoup's lxml-xml builder. lxml 6.2.0 stopped handing the namespace map to a
    parser target's start(), so bs4 writes `<document>` for `<w:document>` and mammoth then finds
    no body in any file ("Could not find the body element"). Without it only equations are lost,
    which a text corpus can spare.
    """
    import mammoth
    from markitdown.converters import HtmlConverter

    with open(path, "rb") as f:
        html = mammoth.convert_to_html(f).value
    return HtmlConverter().convert_string(html).markdown


def _is_container(path: Path, suffix: str) -> bool:
    """Is this a well-formed Office file of its format (a zip holding the format's main part)?"""
    try:
        with zipfile.ZipFile(path) as z:
            return _MAIN_PART[suffix] in z.namelist()
    except (zipfile.BadZipFile, OSError, KeyError):
        return False


def library_failure(suffix: str, e: Exception) -> str:
    """One line for a valid document that a conversion library failed on: not the user's file."""
    from importlib.metadata import PackageNotFoundError, version

    def v(name: str) -> str:
        try:
            return f"{name} {version(name)}"
        except PackageNotFoundError:
            return f"{name} (not installed)"

    return (f"a conversion library failed on this valid {suffix} file ({_reason(e)}; {', '.join(map(v, _LIBRARIES[suffix]))}); "
            "likely a library version the project was not tested with, not a fault of the file: install the "
            "locked versions (`make setup`) and report the file if it still fails")


def _reason(e: Exception) -> str:
    msg = str(e).strip().splitlines()
    return f"{e.__class__.__name__}: {msg[-1][:120]}" if msg else e.__class__.__name__


def _pdf(path: Path) -> Converted:
    """Page by page with pdfminer; a line set clearly larger than the body text becomes a heading."""
    from pdfminer.high_level import extract_pages
    from pdfminer.layout import LTChar, LTTextContainer, LTTextLine
    from pdfminer.pdfdocument import PDFEncryptionError, PDFPasswordIncorrect

    def size(line) -> float:
        sizes = [c.size for c in line if isinstance(c, LTChar)]
        return statistics.median(sizes) if sizes else 0.0

    try:  # each page: its text lines in reading order, with font size and vertical position
        pages = [[(re.sub(r"\s+", " ", ln.get_text()).strip(), size(ln), ln.y0, ln.y1)
                  for box in layout if isinstance(box, LTTextContainer)
                  for ln in box if isinstance(ln, LTTextLine) and ln.get_text().strip()]
                 for layout in extract_pages(str(path))]
    except (PDFPasswordIncorrect, PDFEncryptionError):
        raise IngestError("the PDF is encrypted (password-protected); save an unprotected copy and replace it") from None
    except Exception as e:  # pdfminer raises many classes for damaged files (PDFSyntaxError, PSEOF, ...)
        raise IngestError(f"cannot be read as PDF ({_reason(e)}); the file is corrupt or not a PDF: "
                          "export it again from the application that made it") from None
    # The body size is the size most characters are set in.
    weights: dict[float, int] = {}
    for page in pages:
        for text, s, _, _ in page:
            weights[round(s, 1)] = weights.get(round(s, 1), 0) + len(text)
    body_size = max(weights, key=weights.get) if weights else 0.0

    def is_heading(text: str, s: float) -> bool:
        return bool(text) and bool(body_size) and s >= HEADING_SIZE_RATIO * body_size and len(text) < 120

    # Heading levels by size: the largest heading size is `#`, the next `##`, smaller ones `###`.
    sizes = sorted({round(s, 1) for page in pages for text, s, _, _ in page if is_heading(text, s)}, reverse=True)
    lines: list[str] = []
    starts: list[int] = []
    for page in pages:
        starts.append(len(lines))
        para: list[str] = []
        below = None  # bottom of the previous line
        # Line spacing differs between PDFs: a gap clearly wider than the page's usual one ends a paragraph.
        gaps = [a[2] - b[3] for a, b in zip(page, page[1:]) if a[2] - b[3] > 0]
        usual = statistics.median(gaps) if gaps else 0.0
        for text, s, y0, y1 in page + [("", 0.0, 0.0, 0.0)]:  # the sentinel ends the page's last paragraph
            heading = is_heading(text, s)
            gap = below is not None and (below - y1) > 1.5 * usual + 1.0
            if (heading or not text or gap) and para:
                lines += [re.sub(r"(?<=[a-z])- (?=[a-z])", "", " ".join(para)), ""]  # mend hyphenation
                para = []
            if heading:
                lines += ["#" * min(sizes.index(round(s, 1)) + 1, 3) + f" {text}", ""]
            elif text:
                para.append(text)
            below = y0
    return Converted("\n".join(lines), starts)
