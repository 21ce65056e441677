"""`assistant check`: validate a corpus, check that its QA set is honest, and report what it holds.

Structure comes first (`load_corpus` lists every malformed line). Then the consistency checks,
each a function from a `Corpus` to `Problem`s (a list, or a pair of lists: errors, warnings), so
the tests can call them one by one:

- errors: a key fact missing from its source document, a test question that (nearly) repeats a
  train wording of its fact, one fact_id used for different kinds of question;
- review warnings (errors with --strict): an unanswerable question whose key terms all occur in
  one document, an answerable question without a source, a key fact missing from the reference
  answer, the same question asked twice within one side of the train/test divide, a test question
  nearly identical to a train question about another fact.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from assistant.config import NEAR_DUPLICATE, setting_line
from assistant.errors import NotBuilt
from assistant.corpus.corpus import (Corpus, CorpusError, Problem, QAItem, load_corpus, no_test_questions, read_qa,
                                     resolve_suite)
from assistant.model.loading import ModelError, check_model_name, device_problem, embed, load_embedder
from assistant.model.remote import server_problems
from assistant.variants import variant_class
from assistant.text import common_terms, contains_fact, key_terms, normalize, tokens
@dataclass
class Findings:
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


class _Lines:
    """qa.jsonl line number of each question id, for `file:line:` messages."""

    def __init__(self, corpus: Corpus):
        self.path = corpus.qa_path
        self.label = str(self.path)
        self.by_id: dict[str, int] = {}
        if self.path.exists():
            for n, raw in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
                try:
                    self.by_id.setdefault(str(json.loads(raw)["id"]), n)
                except (ValueError, KeyError, TypeError):
                    continue

    def problem(self, q: QAItem, message: str) -> Problem:
        return Problem(self.label, self.by_id.get(q.id, 1), message)

    def line(self, q: QAItem) -> int:
        return self.by_id.get(q.id, 1)


def _docs_containing(corpus: Corpus, facts: list[str]) -> list[str]:
    return [d.path for d in corpus.documents if all(contains_fact(d.text, f) for f in facts)]


# -- key facts and sources ----------------------------------------------------------------------
def key_fact_problems(corpus: Corpus) -> list[Problem]:
    """Errors: a key fact of an answerable question that its source document does not contain."""
    lines, problems = _Lines(corpus), []
    for q in corpus.questions(kind="answerable"):
        doc = corpus.document(q.source) if q.source else None
        for fact in q.key_facts:
            if not normalize(fact):
                problems.append(lines.problem(q, f"key fact {fact!r} is empty once normalised; write the fact itself"))
            elif doc is not None and not contains_fact(doc.text, fact):
                elsewhere = _docs_containing(corpus, [fact])
                hint = (f"it is in {', '.join(elsewhere[:3])}: wrong source?" if elsewhere
                        else "it is in no document: fix the fact or the document")
                problems.append(lines.problem(q, f"key fact {fact!r} not found in its source {q.source}; {hint}"))
    return problems


def source_warnings(corpus: Corpus) -> list[Problem]:
    """Warnings: answerable questions without a source, and key facts missing from the reference answer."""
    lines, warnings = _Lines(corpus), []
    for q in corpus.questions(kind="answerable"):
        if not q.source:
            found = _docs_containing(corpus, q.key_facts) if q.key_facts else []
            hint = (f"{found[0]} contains its key facts" if len(found) == 1
                    else f"its key facts are in {', '.join(found[:3])}: set the right one" if found
                    else "no document contains its key facts" if q.key_facts
                    else "add the document that answers it")
            warnings.append(lines.problem(q, f"answerable question has no source; {hint}"))
        if q.answer:
            missing = [f for f in q.key_facts if normalize(f) and not contains_fact(q.answer, f)]
            if missing:
                warnings.append(lines.problem(q, f"reference answer does not state key fact(s) {missing}; "
                                              "a scorer would mark the reference itself wrong"))
    return warnings


# -- splits, facts and duplicates ---------------------------------------------------------------
def duplicate_problems(corpus: Corpus) -> tuple[list[Problem], list[Problem]]:
    """(errors, warnings) for identical questions (after normalisation) and mixed-kind fact_ids.

    A test wording identical to a train wording is an error: training would see the test question.
    Other repeats are warnings. A fact_id may (and should) span train and test with different
    wordings; one fact_id used for both answerable and unanswerable questions is an error.
    """
    lines, errors, warnings = _Lines(corpus), [], []
    same: dict[str, list[QAItem]] = defaultdict(list)
    for q in corpus.qa:
        same[normalize(q.question)].append(q)
    for group in same.values():
        train = [q for q in group if q.split == "train"]
        for q in group[1:]:
            if q.split == "test" and train:
                errors.append(lines.problem(q, f"test question {q.question!r} is identical to the train question on "
                                            f"line {lines.line(train[0])}; training would see a test question: reword it"))
            elif q.split == "train" and any(t.split == "test" for t in group[:group.index(q)]):
                t = next(t for t in group if t.split == "test")
                errors.append(lines.problem(q, f"train question {q.question!r} is identical to the test question on "
                                            f"line {lines.line(t)}; training would see a test question: reword it"))
            else:
                warnings.append(lines.problem(q, f"duplicate question {q.question!r} (also on line "
                                              f"{lines.line(group[0])}); reword or remove it"))
    kinds: dict[str, dict[str, QAItem]] = defaultdict(dict)
    for q in corpus.qa:
        kinds[q.fact_id].setdefault(q.kind, q)
    for fact_id, by_kind in kinds.items():
        if len(by_kind) > 1:
            q = list(by_kind.values())[1]
            errors.append(lines.problem(q, f"fact_id {fact_id!r} is used for kinds {sorted(by_kind)}; "
                                        "give each fact one kind"))
    return errors, warnings


def near_duplicates(corpus: Corpus, threshold: float = NEAR_DUPLICATE) -> tuple[list[Problem], list[Problem]]:
    """(errors, warnings): test questions whose embedding cosine similarity to a train question exceeds `threshold`.

    Against a train wording of the same fact it is an error (training sees the test question in all
    but name); against another fact's question it is a warning: two facts asked almost alike.
    """
    test, train = corpus.questions(split="test"), corpus.questions(split="train")
    if not test or not train:
        return [], []
    emb = embed(load_embedder(corpus.config.retrieval.embedder), [q.question for q in test + train])
    sims = emb[: len(test)] @ emb[len(test):].T
    same_fact = np.array([[q.fact_id == t.fact_id for t in train] for q in test])
    lines, errors, warnings = _Lines(corpus), [], []
    for i, q in enumerate(test):
        for mask, found in ((same_fact[i], errors), (~same_fact[i], warnings)):
            if not mask.any():
                continue
            j = int(np.where(mask, sims[i], -np.inf).argmax())
            if sims[i, j] > threshold:
                t = train[j]
                what = "the same fact" if found is errors else f"another fact ({t.fact_id})"
                found.append(lines.problem(q, f"test question {q.question!r} is a near-duplicate (cosine "
                                           f"{sims[i, j]:.3f} > {threshold}) of train question {t.question!r} "
                                           f"about {what} at {lines.label}:{lines.line(t)}; reword one of them"))
    return errors, warnings


# -- unanswerable questions ---------------------------------------------------------------------
def unanswerable_warnings(corpus: Corpus) -> list[Problem]:
    """Warnings: unanswerable questions whose key terms all occur together in one document.

    A cheap lexical screen, so a hit means "read that document", not "the corpus answers it".
    """
    unanswerable = corpus.questions(kind="unanswerable")
    if not unanswerable or not corpus.documents:
        return []
    doc_terms = {d.path: set(tokens(d.text)) for d in corpus.documents}
    common = common_terms(doc_terms.values())
    lines, warnings = _Lines(corpus), []
    for q in unanswerable:
        terms = key_terms(q.question, common)
        if not terms:
            continue
        hits = [path for path, words in doc_terms.items() if terms <= words]
        if hits:
            warnings.append(lines.problem(q, f"unanswerable question {q.question!r}: all its key terms "
                                          f"{sorted(terms)} occur in {', '.join(hits[:3])}; make sure that "
                                          "document does not answer it"))
    return warnings


# -- everything together ------------------------------------------------------------------------
def consistency(corpus: Corpus, near_duplicate: float | None = NEAR_DUPLICATE) -> Findings:
    """Run every consistency check; `near_duplicate=None` skips the (embedding) near-duplicate check."""
    found = Findings()
    found.errors += key_fact_problems(corpus)
    dup_errors, dup_warnings = duplicate_problems(corpus)
    found.errors += dup_errors
    found.warnings += dup_warnings
    if near_duplicate is not None:
        near_errors, near_warnings = near_duplicates(corpus, near_duplicate)
        found.errors += near_errors
        found.warnings += near_warnings
    found.warnings += source_warnings(corpus)
    found.warnings += unanswerable_warnings(corpus)
    order = lambda p: (p.file, p.line)  # noqa: E731
    return Findings(sorted(found.errors, key=order), sorted(found.warnings, key=order))


def fact_counts(corpus: Corpus) -> dict[str, int]:
    """Answerable facts: total, with a train wording (trained), and only in test (never trained)."""
    splits: dict[str, set[str]] = defaultdict(set)
    for q in corpus.questions(kind="answerable"):
        splits[q.fact_id].add(q.split)
    return {"facts": len(splits),
            "trained": sum("train" in s for s in splits.values()),
            "test_only": sum(s == {"test"} for s in splits.values())}


def shared_suites(corpus: Corpus) -> tuple[dict[str, list[QAItem]], list[Problem], list[str]]:
    """The general and safety probe suites the evaluation adds: (items by kind, problems, notes)."""
    items, problems, notes = {}, [], []
    cfg = corpus.config.evaluation
    for kind, setting in (("general", cfg.general_suite), ("safety", cfg.safety_suite)):
        path = resolve_suite(corpus, setting)
        if path is None:
            notes.append(f"no {kind} suite at {setting!r}: the evaluation will skip the {kind} slice")
            continue
        found, bad = read_qa(path)
        items[kind], problems = found, problems + bad
    return items, problems, notes


def print_counts(corpus: Corpus, console: Console, suites: dict[str, list[QAItem]] | None = None) -> None:
    words = sum(len(d.text.split()) for d in corpus.documents)
    facts = fact_counts(corpus)
    console.print(f"[bold]{corpus.name}[/]: {len(corpus.documents)} documents, {words:,} words, "
                  f"{len(corpus.qa)} questions, {facts['facts']} answerable facts "
                  f"({facts['trained']} trained, {facts['test_only']} test-only)", soft_wrap=True)
    counts = Counter((q.kind, q.split) for q in corpus.qa)
    table = Table("kind", "train", "val", "test", "total")
    for kind in ("answerable", "unanswerable", "general", "safety"):
        row = [counts[(kind, s)] for s in ("train", "val", "test")]
        if sum(row):
            table.add_row(kind, *map(str, row), str(sum(row)))
    for kind, items in (suites or {}).items():
        row = [sum(q.split == s for q in items) for s in ("train", "val", "test")]
        table.add_row(f"{kind} (shared suite)", *map(str, row), str(len(items)))
    console.print(table)
    trained = {q.fact_id for q in corpus.questions(split="train")}
    test = corpus.questions(split="test", kind="answerable")
    paraphrase = sum(q.fact_id in trained for q in test)
    console.print(f"test questions: {paraphrase} paraphrase (fact trained, wording held out), "
                  f"{len(test) - paraphrase} unseen (fact never trained)", soft_wrap=True)


def _say(console: Console, level: str, p: Problem) -> None:
    console.print(f"{level}: {p}", style="red" if level == "error" else "yellow",
                  markup=False, highlight=False, soft_wrap=True)


def model_problems(corpus: Corpus) -> list[Problem]:
    """The model and device settings, checked without loading anything: a missing model folder, a
    GPU this machine lacks, or an answering server that is down or lacks a model fails here, not
    as a traceback in the middle of `ask` or a build."""
    path, model = corpus.root / "corpus.yaml", corpus.config.model
    out = []
    try:
        check_model_name(model.name)
    except ModelError as e:
        out.append(Problem(str(path), setting_line(path, "model", "name"), str(e)))
    problem = device_problem(model.device)
    if problem:
        out.append(Problem(str(path), setting_line(path, "model", "device"), problem))
    if model.server is not None:  # the answering server: reachable, key accepted, models listed
        def built(name: str) -> bool:
            try:
                return variant_class(name).is_built(corpus)
            except NotBuilt:
                return False

        line = setting_line(path, "model", "server")
        out += [Problem(str(path), line, p) for p in server_problems(model.server, [n for n in ("sft", "rag_sft")
                                                                                    if built(n)])]
    return out


def skipped_documents(problems: list[Problem]) -> list[str]:
    """The documents left out of the corpus (a file-level warning: conversion failed or no text)."""
    return sorted({Path(p.file).name for p in problems if p.warning and p.line == 0})


def check_corpus(root: Path, strict: bool = False, near_duplicate: float | None = NEAR_DUPLICATE) -> int:
    """Print counts, errors and warnings; return the exit code: 0 valid, 2 errors (or warnings with `strict`)."""
    console = Console()
    if near_duplicate is not None and not 0 < near_duplicate <= 1:
        console.print(f"error: --near-duplicate is a cosine similarity in (0, 1], got {near_duplicate}; try 0.95",
                      style="red", markup=False, highlight=False, soft_wrap=True)
        return 2
    try:
        corpus = load_corpus(root)
    except CorpusError as e:
        for p in e.problems:
            _say(console, "warning" if p.warning else "error", p)
        console.print(f"{len(e.problems)} problem(s) in {root}; fix them and run `assistant check {root}` again",
                      markup=False, highlight=False, soft_wrap=True)
        return 2
    suites, suite_problems, notes = shared_suites(corpus)
    print_counts(corpus, console, suites)
    for note in notes:
        console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    try:
        found = consistency(corpus, near_duplicate)
    except OSError as e:  # the embedder cannot be loaded: say so, check the rest
        found = consistency(corpus, None)
        found.warnings.insert(0, Problem(str(root / "corpus.yaml"), 1, f"near-duplicate check skipped: cannot load "
                                         f"embedder {corpus.config.retrieval.embedder!r} ({e.__class__.__name__})"))
    found.errors = suite_problems + model_problems(corpus) + found.errors
    if not corpus.questions("test"):  # eval and compare would have nothing to measure
        found.errors.insert(0, no_test_questions(corpus))
    # Documents skipped at load (binary files without text, encrypted, corrupt, over the size cap).
    found.warnings = [p for p in getattr(corpus, "problems", []) if p.warning] + found.warnings
    for p in found.errors:
        _say(console, "error", p)
    for p in found.warnings:
        _say(console, "warning", p)
    failed = bool(found.errors) or (strict and bool(found.warnings))
    summary = f"{len(found.errors)} error(s), {len(found.warnings)} warning(s) to review"
    skipped = skipped_documents(getattr(corpus, "problems", []))
    if skipped:
        summary += f"; {len(skipped)} document(s) skipped: {', '.join(skipped)}"
    if failed:
        console.print(f"{summary}; fix them and run `assistant check {root}` again"
                      + (" (--strict counts warnings as errors)" if strict and found.warnings else ""),
                      style="red", markup=False, highlight=False, soft_wrap=True)
        return 2
    console.print(f"ok: {root} is a valid corpus ({summary})", style="green", markup=False, highlight=False,
                  soft_wrap=True)
    return 0
