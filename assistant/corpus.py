"""A corpus folder: `corpus.yaml`, `docs/` and `qa.jsonl`, loaded and validated.

Validation never stops at the first problem: every problem is collected as a `Problem` with its
file and line, so `assistant check` can list them all and the user fixes them in one pass.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from . import ingest
from .config import ConfigError, CorpusConfig, IngestSettings, load_config
from .errors import AssistantError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Binary formats (PDF, DOCX, PPTX, XLSX) are converted to Markdown by assistant/ingest.py.
DOC_SUFFIXES = (".md", ".markdown", ".txt", ".html", ".htm") + ingest.SUFFIXES
Split = Literal["train", "val", "test"]
Kind = Literal["answerable", "unanswerable", "general", "safety"]


class QAItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(..., min_length=1)
    question: str = Field(..., min_length=1)
    answer: str = ""
    key_facts: list[str] = []
    source: str = ""
    fact_id: str = ""
    split: Split = "test"
    kind: Kind = "answerable"
    # Who wrote the row: absent for hand-written rows; "synthetic" or "augmented" rows come from
    # `assistant questions` with the generator's name. Left out of the dump when absent, so the
    # fingerprints of existing QA sets (and what was built from them) do not change.
    origin: Literal["synthetic", "augmented"] | None = Field(None, exclude_if=lambda v: v is None)
    generator: str | None = Field(None, exclude_if=lambda v: v is None)

    @field_validator("question")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("question is blank")
        return v

    def model_post_init(self, _ctx) -> None:
        if not self.fact_id:
            self.fact_id = self.id


@dataclass
class Document:
    path: str  # relative to the corpus folder, e.g. "docs/returns.md"
    text: str
    pages: list[int] | None = None  # PDFs: the text line where each page starts (see ingest.page_at)

    @property
    def title(self) -> str:
        for line in self.text.splitlines():
            if line.startswith("#"):
                return line.lstrip("#").strip()
        return Path(self.path).stem.replace("-", " ").replace("_", " ").title()


@dataclass
class Problem:
    file: str
    line: int  # 0: about the whole file (a binary document), printed as `file: message`
    message: str
    warning: bool = False  # does not block a build (e.g. a document skipped because it has no text)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}" if self.line else f"{self.file}: {self.message}"


class CorpusError(AssistantError):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))

    def lines(self) -> list[str]:
        return [str(p) for p in self.problems]


@dataclass
class Corpus:
    root: Path
    config: CorpusConfig
    documents: list[Document]
    qa: list[QAItem] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.config.name

    def questions(self, split: str | None = None, kind: str | None = None) -> list[QAItem]:
        return [q for q in self.qa if (split is None or q.split == split) and (kind is None or q.kind == kind)]

    def document(self, path: str) -> Document | None:
        return next((d for d in self.documents if d.path == path), None)

    def hash_documents(self, h: "hashlib._Hash") -> "hashlib._Hash":
        """Feed every document (path and text, in path order) into the hash `h`."""
        for d in sorted(self.documents, key=lambda d: d.path):
            h.update(d.path.encode() + b"\0" + d.text.encode() + b"\0")
        return h

    def fingerprint(self) -> str:
        """Hash of every document and QA row: changes whenever the corpus content does."""
        h = self.hash_documents(hashlib.sha256())
        for q in self.qa:
            h.update(q.model_dump_json().encode())
        return h.hexdigest()[:16]

    @property
    def qa_path(self) -> Path:
        """The question set: `qa_file` of corpus.yaml (default qa.jsonl) in the corpus folder."""
        return self.root / self.config.qa_file

    @property
    def runs_dir(self) -> Path:
        """Where the corpus's artifacts go, always from its absolute location, never from the
        working directory: `runs_dir` of corpus.yaml (relative to the corpus folder); else, for a
        corpus in this project's `corpora/` (the bundled demo), `<project>/runs/<folder>`; else a
        `runs/` folder inside the corpus folder. Two corpus folders never share one."""
        root = self.root.resolve()
        if self.config.runs_dir:
            return (root / self.config.runs_dir).resolve()
        if root.parent == PROJECT_ROOT / "corpora":
            return PROJECT_ROOT / "runs" / root.name
        return root / "runs"


class _TextFromHTML(HTMLParser):
    """HTML to text that keeps headings as Markdown, so chunking sees the structure."""

    HEADINGS = {"h1": "#", "h2": "##", "h3": "###", "h4": "####"}
    BLOCKS = {"p", "div", "li", "tr", "br", "section", "article", "table", "ul", "ol"}

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in self.HEADINGS:
            self.parts.append(f"\n\n{self.HEADINGS[tag]} ")
        elif tag in self.BLOCKS:
            self.parts.append("\n\n" if tag == "p" else "\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        elif tag in self.HEADINGS:
            self.parts.append("\n\n")

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)

    def text(self) -> str:
        text = "".join(self.parts)
        text = re.sub(r"[ \t]+", " ", text)
        return re.sub(r"\n\s*\n\s*\n+", "\n\n", text).strip()


class DocumentError(AssistantError):
    """A document that cannot be read as text (not UTF-8, binary); the message says the fix."""


def read_text_document(path: Path) -> str:
    """A .md/.txt/.html document's text, refused when it is binary or not UTF-8 (garbage indexed
    as text would be retrieved and quoted back to users)."""
    from .storage import NotUTF8, read_utf8

    with open(path, "rb") as f:
        head = f.read(8192)
    if b"\0" in head:
        raise DocumentError(f"{path}:1: binary content (NUL bytes) in a {path.suffix} file; "
                            "convert it to text or remove it")
    try:
        return read_utf8(path)
    except NotUTF8 as e:
        raise DocumentError(f"{path}:{e.line}: {e}") from None


def read_document(path: Path, settings: IngestSettings | None = None) -> str:
    if path.suffix.lower() in ingest.SUFFIXES:
        return ingest.convert(path, settings).text
    text = read_text_document(path)
    if path.suffix.lower() in (".html", ".htm"):
        parser = _TextFromHTML()
        parser.feed(text)
        return parser.text()
    return text


def load_documents(root: Path, settings: IngestSettings | None = None) -> tuple[list[Document], list[Problem]]:
    docs_dir = root / "docs"
    if not docs_dir.is_dir():
        return [], [Problem(str(docs_dir), 1, "docs/ folder not found; put the corpus documents (.md, .txt, .html) there")]
    docs, problems = [], []
    for path in sorted(docs_dir.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        if path.suffix.lower() not in DOC_SUFFIXES:
            problems.append(Problem(str(path), 1, f"unsupported document type {path.suffix!r}; "
                                    f"convert it to one of {', '.join(DOC_SUFFIXES)} or remove it"))
            continue
        pages = None
        try:
            if path.suffix.lower() in ingest.SUFFIXES:
                converted = ingest.convert(path, settings)
                text, pages = converted.text, converted.pages
            else:
                text = read_document(path)
        except ingest.IngestError as e:  # skipped, not fatal: the other documents still build
            problems.append(Problem(path.as_posix(), 0, str(e), warning=True))
            continue
        except DocumentError as e:
            problems.append(Problem(*_split_problem(str(e))))
            continue
        if not text.strip():
            problems.append(Problem(str(path), 1, "document is empty; add text or remove it"))
            continue
        docs.append(Document(path.relative_to(root).as_posix(), text, pages))
    if not docs and all(p.warning for p in problems):
        problems.append(Problem(str(docs_dir), 1, "no usable documents found; add .md, .txt, .html, .pdf, .docx, "
                                ".pptx or .xlsx files"))
    else:
        problems += _formats_lost(docs, problems)
    return docs, problems


def _formats_lost(docs: list[Document], problems: list[Problem]) -> list[Problem]:
    """An error for each binary format whose every file failed: a whole format lost is more often a
    broken conversion library than a set of broken files, and must not pass as a warning."""
    out = []
    for suffix in ingest.SUFFIXES:
        failed = [p for p in problems if p.warning and p.file.lower().endswith(suffix)]
        if failed and not any(d.path.lower().endswith(suffix) for d in docs):
            names = ", ".join(Path(p.file).name for p in failed[:5]) + (", ..." if len(failed) > 5 else "")
            out.append(Problem(str(Path(failed[0].file).parent), 1, f"every {suffix} document failed to convert "
                               f"({len(failed)} of {len(failed)}: {names}); fix or remove them (see each file's "
                               "message above), or move them out of docs/ to build without them"))
    return out


def _describe(err: dict) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "missing":
        return f"missing field {loc!r}; add it"
    if err["type"] == "extra_forbidden":
        return f"unknown field {loc!r}; remove it or fix its spelling"
    if err["type"] == "literal_error":
        return f"{loc}: {err['msg'].lower()}, got {err['input']!r}"
    return f"{loc}: {err['msg']}"


def read_qa(path: Path, known_docs: set[str] | None = None, label: str | None = None) -> tuple[list[QAItem], list[Problem]]:
    """Parse a QA JSONL file; every bad line becomes a Problem, good lines are kept."""
    label = label or str(path)
    items, problems, seen = [], [], {}
    from .storage import NotUTF8, read_utf8

    try:
        lines = read_utf8(path).splitlines()
    except FileNotFoundError:
        return [], [Problem(label, 1, "file not found; create it with one JSON question per line")]
    except IsADirectoryError:
        return [], [Problem(label, 1, "is a folder; it must be a file with one JSON question per line")]
    except NotUTF8 as e:
        return [], [Problem(label, e.line, str(e))]
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            problems.append(Problem(label, n, f"invalid JSON ({e.msg} at column {e.colno}); fix the line"))
            continue
        except RecursionError:
            problems.append(Problem(label, n, "JSON nested too deeply; a QA row is one flat object"))
            continue
        if not isinstance(obj, dict):
            problems.append(Problem(label, n, "expected a JSON object per line"))
            continue
        try:
            item = QAItem.model_validate(obj)
        except ValidationError as e:
            problems.extend(Problem(label, n, _describe(err)) for err in e.errors())
            continue
        if item.id in seen:
            problems.append(Problem(label, n, f"duplicate id {item.id!r} (first on line {seen[item.id]}); make ids unique"))
            continue
        seen[item.id] = n
        if item.kind == "answerable" and not item.answer and not item.key_facts:
            problems.append(Problem(label, n, "answerable question has neither 'answer' nor 'key_facts'; add one"))
        if known_docs is not None and item.source and item.source not in known_docs:
            problems.append(Problem(label, n, f"source {item.source!r} is not a document of this corpus; "
                                    "use a path like 'docs/<file>.md'"))
        items.append(item)
    return items, problems


def load_corpus(root: str | Path, strict: bool = True) -> Corpus:
    """Load a corpus folder; with `strict`, raise CorpusError listing every problem."""
    root = Path(root)
    problems: list[Problem] = []
    if not root.is_dir():
        raise CorpusError([Problem(str(root), 1, "corpus folder not found; pass a folder holding corpus.yaml, docs/ and qa.jsonl")])
    try:
        config = load_config(root / "corpus.yaml")
    except ConfigError as e:
        problems += [Problem(*_split_problem(line)) for line in str(e).splitlines()]
        config = CorpusConfig.model_construct(name=root.name)  # the folder's name may not be a valid one
    docs, doc_problems = load_documents(root, config.ingest)
    problems += doc_problems
    qa: list[QAItem] = []
    qa_path = root / config.qa_file
    if qa_path.exists() or qa_path.is_symlink():
        qa, qa_problems = read_qa(qa_path, {d.path for d in docs})
        problems += qa_problems
    corpus = Corpus(root, config, docs, qa)
    if config.runs_dir and corpus.runs_dir.exists() and not corpus.runs_dir.is_dir():
        problems.append(Problem(str(root / "corpus.yaml"), 1, f"runs_dir {config.runs_dir!r} is a file, not a "
                                "folder; point runs_dir at a folder (or remove it for the default)"))
    if strict and any(not p.warning for p in problems):
        raise CorpusError(problems)
    corpus.problems = problems  # type: ignore[attr-defined]
    return corpus


def _split_problem(line: str) -> tuple[str, int, str]:
    m = re.match(r"^(.*?):(\d+): (.*)$", line)
    return (m.group(1), int(m.group(2)), m.group(3)) if m else ("corpus.yaml", 1, line)
