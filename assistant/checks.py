"""`assistant check`: validate a corpus and report what it holds."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .corpus import Corpus, CorpusError, load_corpus


def print_counts(corpus: Corpus, console: Console) -> None:
    words = sum(len(d.text.split()) for d in corpus.documents)
    console.print(f"[bold]{corpus.name}[/]: {len(corpus.documents)} documents, {words:,} words, "
                  f"{len(corpus.qa)} questions, {len({q.fact_id for q in corpus.questions(kind='answerable')})} answerable facts")
    counts = Counter((q.kind, q.split) for q in corpus.qa)
    table = Table("kind", "train", "val", "test", "total")
    for kind in ("answerable", "unanswerable", "general", "safety"):
        row = [counts[(kind, s)] for s in ("train", "val", "test")]
        if sum(row):
            table.add_row(kind, *map(str, row), str(sum(row)))
    console.print(table)


def check_corpus(root: Path, strict: bool = False) -> int:
    """Return the exit code: 0 when valid, 2 when any problem was found."""
    console = Console()
    try:
        corpus = load_corpus(root)
    except CorpusError as e:
        for p in e.problems:
            console.print(f"error: {p}", style="red", markup=False, highlight=False)
        console.print(f"{len(e.problems)} problem(s) in {root}; fix them and run `assistant check {root}` again",
                      markup=False, highlight=False)
        return 2
    print_counts(corpus, console)
    console.print(f"ok: {root} is a valid corpus", style="green", markup=False, highlight=False)
    return 0
