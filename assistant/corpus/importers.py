"""`assistant import`: turn what a team already has into a corpus folder that `assistant check` accepts.

Two sources:
- a QA file (JSONL or CSV: question, answer; optional id, source, key_facts ("|"-separated in
  CSV), fact_id, split, kind) plus `--docs DIR`, a folder of documents copied into docs/;
- SQuAD v1/v2 JSON: each article becomes docs/<title>.md, each question a QA row whose key fact
  is its first answer; `is_impossible` questions become `unanswerable`.

Splits missing from the input are assigned deterministically: rows sharing a fact_id (or the same
question text) form one group, groups are ordered by a seeded hash and cut into test/val/train by
the requested fractions, per kind. The folder is written to a temporary sibling and renamed into
place, so a failed import never leaves a half-written corpus behind.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import yaml
from rich.console import Console

from assistant.config import CorpusConfig
from assistant.corpus.corpus import DOC_SUFFIXES, CorpusError, Problem, load_corpus, read_document
from assistant.storage import UnreadableText, atomic_dir, hold_lock, lock_for, read_utf8
from assistant.text import contains_fact, normalize, question_stopwords, tokens

FIELDS = ("id", "question", "answer", "key_facts", "source", "fact_id", "split", "kind", "origin", "generator")
ORIGINS = ("synthetic", "augmented")  # questions.py marks generated rows; a reviewed sheet keeps the mark
# Columns of `assistant questions`' review sheet that are there to read, not to import.
REVIEW_ONLY = ("source_text",)
SPLITS = ("train", "val", "test")
KINDS = ("answerable", "unanswerable", "general", "safety")
SEED = "assistant-import-v1"
UNANSWERED = "I don't know."  # the reference for unanswerable rows (variants.base.ABSTAIN_TEXT)


class _Rows:
    """QA rows read from a file, with the line each came from and every problem found."""

    def __init__(self, label: str):
        self.label = label
        self.rows: list[dict] = []
        self.lines: list[int] = []
        self.problems: list[Problem] = []
        self.notes: list[str] = []

    def error(self, line: int, message: str) -> None:
        self.problems.append(Problem(self.label, line, message))

    def add(self, raw: dict, line: int) -> None:
        """Validate one raw row (CSV strings or JSON values) and keep it in the QA schema."""
        row = {k: raw.get(k) for k in FIELDS}
        for k in ("id", "question", "answer", "source", "fact_id", "split", "kind", "origin", "generator"):
            v = row[k]
            if v is not None and not isinstance(v, (str, int, float)):
                self.error(line, f"field {k!r} must be text, got {type(v).__name__}")
                return
            row[k] = "" if v is None else str(v).strip()
        facts = row["key_facts"]
        if isinstance(facts, str) or facts is None:
            facts = (facts or "").split("|")
        if not isinstance(facts, list):
            self.error(line, f"key_facts must be a list or '|'-separated text, got {type(facts).__name__}")
            return
        row["key_facts"] = [str(f).strip() for f in facts if str(f).strip()]
        row["kind"] = row["kind"].lower() or "answerable"
        row["split"] = row["split"].lower()
        if not row["question"]:
            self.error(line, "question is empty; fill it or remove the row")
        elif row["kind"] not in KINDS:
            self.error(line, f"kind {row['kind']!r} is not one of {', '.join(KINDS)}")
        elif row["origin"] and row["origin"] not in ORIGINS:
            self.error(line, f"origin {row['origin']!r} is not one of {', '.join(ORIGINS)} (or leave it empty: hand-written)")
        elif row["split"] and row["split"] not in SPLITS:
            self.error(line, f"split {row['split']!r} is not one of {', '.join(SPLITS)} (or leave it empty)")
        elif row["kind"] == "answerable" and not row["answer"]:
            self.error(line, "answer is empty; fill it, or set kind to 'unanswerable'")
        else:
            if row["kind"] == "unanswerable" and not row["answer"]:
                row["answer"] = UNANSWERED
            self.rows.append(row)
            self.lines.append(line)


# -- readers --------------------------------------------------------------------------------------
def _read_text(path: Path) -> str:
    try:
        return read_utf8(path).removeprefix("\ufeff")  # a BOM, as Excel writes CSV
    except UnreadableText as e:  # not UTF-8, a pipe or device, too large
        raise CorpusError([Problem(str(path), e.line, str(e))]) from None


def read_jsonl(path: Path) -> _Rows:
    out = _Rows(str(path))
    unknown: set[str] = set()
    for n, raw in enumerate(_read_text(path).splitlines(), 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            out.error(n, f"invalid JSON ({e.msg} at column {e.colno}); fix the line")
            continue
        if not isinstance(obj, dict):
            out.error(n, "expected a JSON object per line, like {\"question\": ..., \"answer\": ...}")
            continue
        unknown |= set(obj) - set(FIELDS) - set(REVIEW_ONLY)
        out.add(obj, n)
    if unknown:
        out.notes.append(f"ignored unknown fields: {', '.join(sorted(unknown))}")
    return out


def read_csv(path: Path) -> _Rows:
    out = _Rows(str(path))
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with io.StringIO(_read_text(path), newline="") as f:
        reader = csv.reader(f, delimiter=delimiter, strict=True)
        try:
            start = 1
            header = [h.strip().lower() for h in next(reader, [])]
            missing = [c for c in ("question", "answer") if c not in header]
            if missing:
                out.error(1, f"missing column(s) {', '.join(missing)}; the header is {header or 'empty'}; "
                          f"required: question, answer; optional: {', '.join(f for f in FIELDS if f not in ('question', 'answer'))}")
                return out
            unknown = [h for h in header if h not in FIELDS + REVIEW_ONLY]
            if unknown:
                out.notes.append(f"ignored unknown columns: {', '.join(unknown)}")
            start = reader.line_num + 1
            for values in reader:
                if any(v.strip() for v in values):
                    if len(values) > len(header):
                        out.error(start, f"row has {len(values)} fields but the header has {len(header)}; "
                                  "quote fields that contain the delimiter")
                    else:
                        out.add(dict(zip(header, values)), start)
                start = reader.line_num + 1
        except csv.Error as e:
            out.error(start, f"malformed CSV ({e}) in the row starting here; check its quotes")
    return out


def _title_slug(title: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:80] or "article"
    slug, i = base, 2
    while slug in taken:
        slug, i = f"{base}-{i}", i + 1
    taken.add(slug)
    return slug


def read_squad(path: Path, data: dict) -> tuple[dict[str, str], _Rows]:
    """SQuAD v1/v2 -> ({docs/<slug>.md: text}, rows). Problems name the JSON path of the bad entry."""
    out, docs, taken, dropped = _Rows(str(path)), {}, set(), 0
    if not isinstance(data.get("data"), list):
        out.error(1, "not a SQuAD file: expected {\"data\": [{\"title\": ..., \"paragraphs\": [...]}]}")
        return docs, out
    for a, article in enumerate(data["data"]):
        where = f"data[{a}]"
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            out.error(1, f"{where}: missing 'paragraphs' list")
            continue
        title = str(article.get("title") or f"Article {a + 1}").replace("_", " ").strip()
        doc = f"docs/{_title_slug(title, taken)}.md"
        contexts = []
        for p, para in enumerate(paragraphs):
            context = para.get("context") if isinstance(para, dict) else None
            if not isinstance(context, str) or not context.strip():
                out.error(1, f"{where}.paragraphs[{p}]: missing 'context' text")
                continue
            contexts.append(context.strip())
            for i, qa in enumerate(para.get("qas") or []):
                loc = f"{where}.paragraphs[{p}].qas[{i}]"
                if not isinstance(qa, dict) or not str(qa.get("question") or "").strip():
                    out.error(1, f"{loc}: missing 'question'")
                    continue
                given = qa.get("answers") or []
                if not isinstance(given, list) or not all(isinstance(x, dict) for x in given):
                    # a bare string would otherwise read as "no answers": unanswerable, silently
                    out.error(1, f"{loc}: 'answers' must be a list of {{\"text\": ..., \"answer_start\": ...}} "
                                 f"objects, got {type(given).__name__}")
                    continue
                answers = [str(x.get("text", "")).strip() for x in given]
                answers = [x for x in answers if x]
                impossible = bool(qa.get("is_impossible")) or not answers
                row = {"id": str(qa.get("id") or ""), "question": qa["question"],
                       "kind": "unanswerable" if impossible else "answerable"}
                if not impossible:
                    # A span cut inside a word ("ter" of "matter") cannot be checked as a key fact.
                    keep = contains_fact(context, answers[0])
                    dropped += not keep
                    row.update(answer=answers[0], key_facts=[answers[0]] if keep else [], source=doc)
                out.add(row, 1)
        if contexts:
            docs[doc] = f"# {title}\n\n" + "\n\n".join(contexts) + "\n"
    if dropped:
        out.notes.append(f"{dropped} answer span(s) are not whole words of their context; kept as answers "
                         "without key facts")
    return docs, out


# -- documents and sources ------------------------------------------------------------------------
def collect_docs(folder: Path, notes: list[str]) -> dict[str, Path]:
    """Supported, non-empty documents under `folder` -> {docs/<relative path>: file}."""
    docs, skipped = {}, []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        rel = path.relative_to(folder).as_posix()
        if path.suffix.lower() not in DOC_SUFFIXES or not read_document(path).strip():
            skipped.append(rel)
            continue
        docs[f"docs/{rel}"] = path
    if skipped:
        notes.append(f"skipped {len(skipped)} empty or unsupported file(s) in {folder}: {', '.join(skipped[:5])}")
    return docs


def _resolve_source(source: str, docs: dict[str, Path]) -> str | None:
    source = re.sub(r"^(\./)+", "", source.replace("\\", "/"))
    candidates = [source, f"docs/{source}"]
    by_name = [d for d in docs if d.rsplit("/", 1)[-1] == source.rsplit("/", 1)[-1]]
    if len(by_name) == 1:
        candidates.append(by_name[0])
    return next((c for c in candidates if c in docs), None)


def best_source(answer: str, key_facts: list[str], texts: dict[str, str]) -> str:
    """The one document that holds the answer: all key facts, else most of the answer's content words."""
    candidates = [d for d, t in texts.items() if all(contains_fact(t, f) for f in key_facts)] if key_facts else list(texts)
    words = {t for t in tokens(answer) if t not in question_stopwords() and len(t) > 1}
    if not candidates or not words:
        return candidates[0] if len(candidates) == 1 else ""
    cover = sorted(((len(words & set(tokens(texts[d]))) / len(words), d) for d in candidates), reverse=True)
    top, second = cover[0], cover[1] if len(cover) > 1 else (0.0, "")
    if key_facts and top[0] > second[0]:
        return top[1]
    return top[1] if top[0] >= 0.75 and top[0] > second[0] else ""


# -- ids and splits -------------------------------------------------------------------------------
def assign_ids(rows: _Rows) -> None:
    seen: dict[str, int] = {}
    for n, (row, line) in enumerate(zip(rows.rows, rows.lines), 1):
        if not row["id"]:
            row["id"] = f"q{n:05d}"
        if row["id"] in seen:
            rows.error(line, f"duplicate id {row['id']!r} (first on line {seen[row['id']]}); make ids unique")
        seen.setdefault(row["id"], line)
        row["fact_id"] = row["fact_id"] or row["id"]


def _groups(rows: list[dict]) -> list[list[dict]]:
    """Rows linked by a shared fact_id or an identical (normalised) question: they share a split."""
    parent = list(range(len(rows)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[tuple, int] = {}
    for i, row in enumerate(rows):
        for key in (("fact", row["fact_id"]), ("q", normalize(row["question"]))):
            parent[find(i)] = find(first.setdefault(key, i))
    groups: dict[int, list[dict]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[find(i)].append(row)
    return list(groups.values())


def assign_splits(rows: list[dict], test_fraction: float, val_fraction: float) -> None:
    """Fill empty splits, one split per group, exact fractions per kind, stable for a given input."""
    pending: dict[str, list[list[dict]]] = defaultdict(list)
    for group in _groups(rows):
        given = Counter(r["split"] for r in group if r["split"])
        if given:  # rows without a split follow their group's given wordings
            for r in group:
                r["split"] = r["split"] or given.most_common(1)[0][0]
        else:
            pending[group[0]["kind"]].append(group)
    for groups in pending.values():
        groups.sort(key=lambda g: hashlib.sha256(f"{SEED}:{min(r['fact_id'] for r in g)}".encode()).hexdigest())
        n = len(groups)
        n_test = max(1, round(test_fraction * n)) if n > 1 and test_fraction > 0 else 0
        n_val = min(round(val_fraction * n), max(0, n - n_test - 1))
        for i, group in enumerate(groups):
            split = "test" if i < n_test else "val" if i < n_test + n_val else "train"
            for r in group:
                r["split"] = split


# -- writing --------------------------------------------------------------------------------------
def _check_target(out: Path, inputs: list[Path], force: bool) -> None:
    if not out.exists():
        return
    if not force:
        raise CorpusError([Problem(str(out), 1, "already exists; pass --force to replace it, or choose another folder")])
    if not out.is_dir() or (any(out.iterdir()) and not (out / "corpus.yaml").exists()):
        raise CorpusError([Problem(str(out), 1, "exists and is not a corpus folder (no corpus.yaml); "
                                   "--force only replaces corpus folders: choose another folder")])
    for p in inputs:
        if p.resolve().is_relative_to(out.resolve()):
            raise CorpusError([Problem(str(out), 1, f"holds the input {p}; replacing it would delete the input: "
                                       "write the corpus to another folder")])


def write_corpus(out: Path, config: dict, docs: dict[str, str | Path], rows: list[dict]) -> None:
    """Write corpus.yaml, docs/ and qa.jsonl into a temporary sibling, validate, then swap it into place."""
    def build(tmp: Path) -> None:
        (tmp / "corpus.yaml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=100),
                                         encoding="utf-8")
        for rel, content in docs.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Path):
                shutil.copyfile(content, tmp / rel)
            else:
                (tmp / rel).write_text(content, encoding="utf-8")
        with open(tmp / "qa.jsonl", "w", encoding="utf-8") as f:
            for row in rows:
                # origin/generator only where set: a hand-written row has neither (corpus.QAItem)
                f.write(json.dumps({k: row[k] for k in FIELDS if row[k] or k not in ("origin", "generator")},
                                   ensure_ascii=False) + "\n")
        load_corpus(tmp)  # the result must load; a failure here is a bug, and nothing is replaced

    # One import into a folder at a time; the previous corpus is swapped out only once the new one
    # is complete, so a killed import leaves either the old corpus or the new one, never half of one.
    with hold_lock(lock_for(out, timeout=0), f"another import is writing {out}"):
        atomic_dir(out, build, replace=True)


def run_import(args) -> Path:
    """`assistant import SOURCE OUT [--docs DIR] [--name N] [--test-fraction F] [--val-fraction F] [--force]`."""
    console = Console()
    src, out = Path(args.source), Path(args.out)
    if not src.is_file():
        raise CorpusError([Problem(str(src), 1, "file not found; pass a .jsonl, .csv or SQuAD .json file")])
    for flag, value in (("--test-fraction", args.test_fraction), ("--val-fraction", getattr(args, "val_fraction", 0.1))):
        if not 0 <= value < 1:
            raise CorpusError([Problem(str(src), 1, f"{flag} must be in [0, 1), got {value}")])
    name = args.name or re.sub(r"[^A-Za-z0-9_.-]+", "-", out.resolve().name).strip("-.") or "corpus"
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise CorpusError([Problem(str(src), 1, f"--name {name!r} may only hold letters, digits, '_', '.' and '-'")])
    docs_dir = Path(args.docs) if args.docs else None
    _check_target(out, [src] + ([docs_dir] if docs_dir else []), args.force)

    squad = None
    if src.suffix.lower() == ".json":
        try:
            squad = json.loads(_read_text(src))
        except json.JSONDecodeError as e:
            raise CorpusError([Problem(str(src), e.lineno, f"invalid JSON ({e.msg} at column {e.colno})")]) from None
    if isinstance(squad, dict):
        docs, rows = read_squad(src, squad)
        if docs_dir:
            rows.notes.append("--docs is ignored for SQuAD imports: the contexts are the documents")
    elif squad is not None:
        raise CorpusError([Problem(str(src), 1, "a .json file must be SQuAD format, {\"data\": [...]}; "
                                   "write plain QA rows as .jsonl, one object a line")])
    elif src.suffix.lower() in (".jsonl", ".csv", ".tsv"):
        if docs_dir is None or not docs_dir.is_dir():
            raise CorpusError([Problem(str(src), 1, "JSONL/CSV imports need --docs DIR, the folder of documents "
                                       "the questions are about" + (f" ({docs_dir} is not a folder)" if docs_dir else ""))])
        rows = read_jsonl(src) if src.suffix.lower() == ".jsonl" else read_csv(src)
        docs = collect_docs(docs_dir, rows.notes)
        if not docs:
            rows.error(1, f"no documents ({', '.join(DOC_SUFFIXES)}) found in {docs_dir}")
    else:
        raise CorpusError([Problem(str(src), 1, "unsupported QA file; use .jsonl, .csv, .tsv or SQuAD .json")])
    if not rows.rows and not rows.problems:
        rows.error(1, "no questions found")
    assign_ids(rows)

    texts = {rel: c if isinstance(c, str) else read_document(c) for rel, c in docs.items()}
    unsourced = 0
    for row, line in zip(rows.rows, rows.lines):
        if row["source"]:
            resolved = _resolve_source(row["source"], docs)
            if resolved is None:
                rows.error(line, f"source {row['source']!r} is not a document in {docs_dir or 'the import'}")
            row["source"] = resolved or ""
        elif row["kind"] == "answerable":
            row["source"] = best_source(row["answer"], row["key_facts"], texts)
            unsourced += not row["source"]
    if rows.problems:
        raise CorpusError(rows.problems)
    assign_splits(rows.rows, args.test_fraction, getattr(args, "val_fraction", 0.1))

    config = {"name": name, "description": f"Imported from {src.name} by `assistant import`.",
              "system_prompt": CorpusConfig.model_fields["system_prompt"].default}
    try:
        write_corpus(out, config, docs, rows.rows)
    except OSError as e:
        raise CorpusError([Problem(str(out), 1, f"cannot write the corpus: {e.strerror or e}; choose a writable folder")]) from None

    for note in rows.notes:
        console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    if unsourced:
        console.print(f"note: {unsourced} answerable question(s) have no source: no single document clearly "
                      "holds their answer; add a 'source' column to set them", markup=False, highlight=False, soft_wrap=True)
    splits = Counter(r["split"] for r in rows.rows)
    console.print(f"wrote {out}: {len(docs)} documents, {len(rows.rows)} questions "
                  f"({splits['train']} train, {splits['val']} val, {splits['test']} test); "
                  f"next: assistant check {out}", markup=False, highlight=False, soft_wrap=True)
    return out
