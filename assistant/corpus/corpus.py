"""A corpus folder: `corpus.yaml`, `docs/` and `qa.jsonl`, loaded and validated.

Validation never stops at the first problem: every problem is collected as a `Problem` with its
file and line, so `assistant check` can list them all and the user fixes them in one pass.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from filelock import FileLock
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from assistant.config import ConfigError, CorpusConfig, IngestSettings, load_config, setting_line
from assistant.corpus import ingest
from assistant.corpus.runs import RunPaths
from assistant.errors import AssistantError
from assistant.runtime import PROJECT_ROOT
from assistant.storage import TooLarge, UnreadableText, hold_lock, lock_for, open_regular, read_utf8

# Binary formats (PDF, DOCX, PPTX, XLSX) are converted to Markdown by assistant/corpus/ingest.py.
DOC_SUFFIXES = (".md", ".markdown", ".txt", ".html", ".htm") + ingest.SUFFIXES
MAX_TITLE_CHARS = 160  # a document's title as shown (the heading trail caps its names alike)
MAX_QA_BYTES = 64 * 1024 * 1024  # a question set is kilobytes to a few megabytes; more is not one
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
                return line.lstrip("#").strip()[:MAX_TITLE_CHARS]
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

    @property
    def runs(self) -> RunPaths:
        """Where each artifact of this corpus lives (corpus/runs.py)."""
        return RunPaths(self.runs_dir)


_HTML_HEADINGS = {"h1": "#", "h2": "##", "h3": "###", "h4": "####"}
_HTML_BLOCKS = {"p", "div", "li", "tr", "br", "section", "article", "table", "ul", "ol"}


def html_to_text(html: str) -> str:
    """HTML to text that keeps headings as Markdown, so chunking sees the structure.

    Parsed by libxml2 (lxml), linear in the input: Python 3.11's html.parser took 30 s on 200 KB of
    unclosed `<!--`. The tree is walked without recursion (libxml2 caps nesting at 256 anyway);
    scripts, styles and comments give no text."""
    import lxml.etree
    import lxml.html

    parser = lxml.html.HTMLParser(encoding="utf-8", no_network=True, remove_comments=True, remove_pis=True)
    try:
        root = lxml.html.document_fromstring(html.encode("utf-8", "replace"), parser=parser)
    except lxml.etree.ParserError:  # "Document is empty": nothing but markup or whitespace
        return ""
    parts: list[str] = []
    skip = 0
    for event, el in lxml.etree.iterwalk(root, events=("start", "end")):
        tag = el.tag if isinstance(el.tag, str) else ""
        if event == "start":
            if tag in ("script", "style"):
                skip += 1
            elif tag in _HTML_HEADINGS:
                parts.append(f"\n\n{_HTML_HEADINGS[tag]} ")
            elif tag in _HTML_BLOCKS:
                parts.append("\n\n" if tag == "p" else "\n")
            if not skip and el.text:
                parts.append(el.text)
        else:
            if tag in ("script", "style"):
                skip = max(0, skip - 1)
            elif tag in _HTML_HEADINGS:
                parts.append("\n\n")
            if not skip and el.tail:
                parts.append(el.tail)
    text = re.sub(r"[ \t]+", " ", "".join(parts))
    return re.sub(r"\n\s*\n\s*\n+", "\n\n", text).strip()


class DocumentError(AssistantError):
    """A document that cannot be read as text (not UTF-8, binary); the message says the fix."""


class DocumentTooLarge(DocumentError):
    """A text document over ingest.max_file_mb: skipped, so one huge file cannot stall every load."""


def read_text_document(path: Path, max_bytes: int | None = None) -> str:
    """A .md/.txt/.html document's text, refused when it is binary or not UTF-8 (garbage indexed
    as text would be retrieved and quoted back to users), not a regular file, or over `max_bytes`."""
    try:
        with open_regular(path) as f:
            head = f.read(8192)
        if b"\0" in head:
            raise DocumentError(f"{path}:1: binary content (NUL bytes) in a {path.suffix} file; "
                                "convert it to text or remove it")
        return read_utf8(path, max_bytes)
    except TooLarge:
        raise DocumentTooLarge(f"{path}: file is over the size cap of {max_bytes / 1024 / 1024:g} MB; skipped (split "
                               "it, or raise ingest.max_file_mb in corpus.yaml)") from None
    except UnreadableText as e:
        raise DocumentError(f"{path}:{e.line}: {e}") from None


def read_document(path: Path, settings: IngestSettings | None = None) -> str:
    if path.suffix.lower() in ingest.SUFFIXES:
        return ingest.convert(path, settings).text
    text = read_text_document(path)
    if path.suffix.lower() in (".html", ".htm"):
        return html_to_text(text)
    return text


def _files_under(folder: Path) -> list[Path]:
    """Every entry below `folder` that is not a folder, in path order; hidden names (`.git`, `.DS_Store`)
    are left out, and links to folders are listed, never followed (no loops, nothing outside)."""
    found, todo = [], [folder]
    while todo:
        with os.scandir(todo.pop()) as entries:
            for e in entries:
                if e.name.startswith("."):
                    continue
                if e.is_dir(follow_symlinks=False):
                    todo.append(Path(e.path))
                else:
                    found.append(Path(e.path))
    return sorted(found)


def _unusable(path: Path, root: Path) -> str | None:
    """Why a docs/ entry cannot be read as a document of the corpus, or None. The corpus may come
    from an untrusted archive or repository: a link that leads out of the corpus folder
    (`docs/p.txt -> /etc/passwd`) is not read, and neither is a named pipe, socket or device, which
    could block the reader forever or never end."""
    if path.is_symlink():
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError):  # dangling, or a loop of links
            return "is a broken link; skipped (fix or remove it)"
        if not target.is_relative_to(root.resolve()):
            return (f"is a link to {target}, outside the corpus folder; skipped (files outside the corpus are "
                    "never read: copy the file into docs/ to include it)")
    try:
        mode = path.stat().st_mode
    except OSError as e:
        return f"cannot be read ({e.strerror or e}); skipped"
    if stat.S_ISDIR(mode):
        return "is a link to a folder; skipped (links to folders are not followed: move the folder into docs/)"
    if not stat.S_ISREG(mode):
        kind = "a named pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        return f"is {kind}, not a regular file; skipped (remove it)"
    return None


def load_documents(root: Path, settings: IngestSettings | None = None) -> tuple[list[Document], list[Problem]]:
    """Every usable document of `docs/`. Files that cannot be used (a link out of the corpus, a pipe,
    an image, a file too large or that fails to convert) are skipped, each named in a warning: the
    other documents still build. Text that is not UTF-8, binary content in a text file, or an empty
    document are errors, since the user meant them as documents."""
    settings = settings or IngestSettings()
    docs_dir = root / "docs"
    if not docs_dir.is_dir():
        return [], [Problem(str(docs_dir), 1, "docs/ folder not found; put the corpus documents (.md, .txt, .html) there")]
    if docs_dir.is_symlink() and not docs_dir.resolve().is_relative_to(root.resolve()):
        return [], [Problem(str(docs_dir), 1, "docs/ is a link out of the corpus folder; files outside the corpus "
                            "are never read: make docs/ a folder inside it")]
    max_bytes = int(settings.max_file_mb * 1024 * 1024)  # the cap of binary documents (ingest.convert)
    docs, problems = [], []
    try:
        paths = _files_under(docs_dir)
    except OSError as e:
        return [], [Problem(str(docs_dir), 1, f"cannot list it ({e.strerror or e}); fix its permissions")]
    for path in paths:
        why = _unusable(path, root)
        if why is None and path.suffix.lower() not in DOC_SUFFIXES:
            why = (f"unsupported document type {path.suffix or '(no extension)'!r}; skipped (convert it to one of "
                   f"{', '.join(DOC_SUFFIXES)} to include it)")
        if why:
            problems.append(Problem(str(path), 0, why, warning=True))
            continue
        pages = None
        try:
            if path.suffix.lower() in ingest.SUFFIXES:
                converted = ingest.convert(path, settings)
                text, pages = converted.text, converted.pages
            else:
                text = read_text_document(path, max_bytes)
                if path.suffix.lower() in (".html", ".htm"):
                    text = html_to_text(text)
        except ingest.IngestError as e:  # skipped, not fatal: the other documents still build
            problems.append(Problem(path.as_posix(), 0, str(e), warning=True))
            continue
        except DocumentTooLarge as e:  # like a binary document over the cap: skipped, named
            problems.append(Problem(str(path), 0, str(e).split(": ", 1)[1], warning=True))
            continue
        except DocumentError as e:
            problems.append(Problem(*_split_problem(str(e))))
            continue
        except OSError as e:  # permissions, a file removed meanwhile
            problems.append(Problem(str(path), 0, f"cannot be read ({e.strerror or e}); skipped", warning=True))
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
    try:
        lines = read_utf8(path, MAX_QA_BYTES).splitlines()
    except FileNotFoundError:
        return [], [Problem(label, 1, "file not found; create it with one JSON question per line")]
    except IsADirectoryError:
        return [], [Problem(label, 1, "is a folder; it must be a file with one JSON question per line")]
    except TooLarge:
        return [], [Problem(label, 1, f"over {MAX_QA_BYTES // 1024 // 1024} MB, more than any question set; "
                                      "split it or remove the rows that are not questions")]
    except UnreadableText as e:
        return [], [Problem(label, e.line, str(e))]
    except OSError as e:
        return [], [Problem(label, 1, f"cannot be read ({e.strerror or e}); fix its permissions")]
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
    if qa_path.is_symlink() and not _inside(qa_path, root):
        problems.append(Problem(str(qa_path), 1, "is a link out of the corpus folder; files outside the corpus are "
                                "never read: copy the question set into the corpus folder"))
    elif qa_path.exists() or qa_path.is_symlink():
        qa, qa_problems = read_qa(qa_path, {d.path for d in docs})
        problems += qa_problems
    corpus = Corpus(root, config, docs, qa)
    outside = runs_dir_outside(corpus) if config.runs_dir else None
    if outside:
        problems.append(Problem(str(root / "corpus.yaml"), setting_line(root / "corpus.yaml", "runs_dir"), outside))
    elif config.runs_dir and corpus.runs_dir.exists() and not corpus.runs_dir.is_dir():
        problems.append(Problem(str(root / "corpus.yaml"), 1, f"runs_dir {config.runs_dir!r} is a file, not a "
                                "folder; point runs_dir at a folder (or remove it for the default)"))
    if strict and any(not p.warning for p in problems):
        raise CorpusError(problems)
    corpus.problems = problems  # type: ignore[attr-defined]
    return corpus


RUNS_ROOTS_ENV = "ASSISTANT_RUNS_ROOTS"


def runs_roots(corpus_root: Path) -> list[Path]:
    """Folders a corpus.yaml's `runs_dir` may point into. A build replaces its `rag/`, `sft/` and `eval/`
    folders there, so a corpus from an untrusted archive must not aim it at the user's own folders
    (`runs_dir: /home/me/project` would swap out project/rag): only the corpus folder, the project's
    runs/, the temporary folder (scratch space, where tests and throw-away builds go) and what the user
    lists in ASSISTANT_RUNS_ROOTS (os.pathsep-separated) are allowed."""
    import tempfile

    extra = [Path(p).expanduser() for p in os.environ.get(RUNS_ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    return [corpus_root.resolve(), PROJECT_ROOT / "runs", Path(tempfile.gettempdir()).resolve(),
            *(p.resolve() for p in extra)]


def runs_dir_outside(corpus: Corpus) -> str | None:
    """Why the corpus's `runs_dir` is not allowed (see runs_roots), or None."""
    try:
        target = corpus.runs_dir
    except (OSError, RuntimeError) as e:  # a loop of links
        return f"runs_dir {corpus.config.runs_dir!r} cannot be resolved ({e}); point it at a folder"
    if any(target.is_relative_to(r) for r in runs_roots(corpus.root)):
        return None
    return (f"runs_dir {corpus.config.runs_dir!r} resolves to {target}, outside the corpus folder and the project's "
            f"runs/; point it inside the corpus folder, or allow that folder by listing it (or a folder above it) "
            f"in the environment variable {RUNS_ROOTS_ENV}")


def _inside(path: Path, root: Path) -> bool:
    """Whether `path`, links followed, lies inside the folder `root`."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # a loop of links
        return False


def _split_problem(line: str) -> tuple[str, int, str]:
    m = re.match(r"^(.*?):(\d+): (.*)$", line)
    return (m.group(1), int(m.group(2)), m.group(3)) if m else ("corpus.yaml", 1, line)


def resolve_suite(corpus: Corpus, path: str) -> Path | None:
    """A shared suite path: relative to the corpus first, then the project, then the working folder."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p if p.exists() else None
    for base in (corpus.root, PROJECT_ROOT, Path.cwd()):
        if (base / p).exists():
            return base / p
    return None


def no_test_questions(corpus: Corpus) -> Problem:
    """The problem `check`, `eval` and `compare` report for a corpus with nothing to evaluate."""
    qa = corpus.qa_path
    return Problem(str(qa), 1, ("no test questions to evaluate" if qa.exists() else "file not found: no test "
                   "questions to evaluate") + "; add rows with \"split\": \"test\" (`assistant import` can make them)")


_held: dict[str, FileLock] = {}  # one lock object per corpus in a process, so `compare` can re-enter it


@contextmanager
def corpus_lock(corpus: Corpus) -> Iterator[None]:
    """Held while a corpus's variants are built or evaluated: one process at a time per corpus, so
    two builds never share (or delete) a checkpoint folder and an evaluation never reads an adapter
    being replaced. A second process fails at once with LockedError (exit 2) instead of waiting."""
    path = corpus.runs.lock
    lock = _held.setdefault(str(path), lock_for(path, timeout=0))
    with hold_lock(lock, f"another process is building or evaluating corpus {corpus.name!r}"):
        yield
