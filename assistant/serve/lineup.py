"""What the app serves, without the UI: the variants it can load, their answers streamed together,
question checks, blind pairs, and the latest evaluation's files read for the report tab."""

from __future__ import annotations

import json
import logging
import queue
import random
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from assistant.model.batching import Job, QueueFull, Scheduler
from assistant.config import VARIANTS
from assistant.model.engine import Engine
from assistant.corpus.corpus import Corpus
from assistant.storage import read_jsonl
from assistant.evaluation.report import disagreements as differing  # the one definition, as in report.md
from assistant.model.loading import ModelError
from assistant.variants import ABSTAIN_TEXT, Answer, NotBuilt, Prompt, Variant, load_variant, open_engine, variant_class

log = logging.getLogger(__name__)
MAX_TABLE_ROWS = 200


# -- variants ---------------------------------------------------------------------------------
@dataclass
class Lineup:
    """The variants the app serves, and one line for each one it cannot serve (with the fix)."""

    variants: dict[str, Variant]
    missing: dict[str, str] = field(default_factory=dict)


def load_lineup(corpus: Corpus, names: Sequence[str] = VARIANTS) -> Lineup:
    variants, missing = {}, {}
    for name in names:
        build = f"`assistant build {corpus.root} --variant {name}`"
        try:
            cls = variant_class(name)
            if cls.needs_build and not cls.is_built(corpus):
                missing[name] = f"**{name}** is not built yet: run {build}"
                continue
            variants[name] = load_variant(name, corpus, open_engine(corpus, evaluation=False))  # chat: model.dtype
        except NotBuilt as e:
            missing[name] = f"**{name}** is not available: {e}"
        except ModelError:  # no base model: nothing can answer, the CLI says how to fix it
            raise
        except Exception as e:  # a broken artifact must not take the other columns down
            log.exception("loading variant %s failed", name)
            missing[name] = f"**{name}** failed to load ({type(e).__name__}: {e}); rebuild it with {build} --force"
    return Lineup(variants, missing)


def example_questions(corpus: Corpus, n: int = 5) -> list[str]:
    """A handful of short test questions on distinct facts, from different documents where the
    corpus has several, then one the corpus cannot answer."""
    candidates = corpus.questions("test", "answerable")
    random.Random(0).shuffle(candidates)  # a fixed sample across topics, not the first file's questions
    candidates.sort(key=lambda q: len(q.question) > 80)
    picked, facts, docs = [], set(), set()
    for spread in (True, False):  # first one question per document, then any new fact
        for q in candidates:
            if len(picked) < n and q.fact_id not in facts and not (spread and q.source in docs):
                picked.append(q)
                facts.add(q.fact_id)
                docs.add(q.source)
    unanswerable = sorted(corpus.questions("test", "unanswerable"), key=lambda q: len(q.question) > 80)
    return [q.question for q in picked] + [q.question for q in unanswerable[:1]]


def check_question(question: str, limit: int) -> str | None:
    """Why a question cannot be asked, or None."""
    if not question:
        return "Type a question first."
    if len(question) > limit:
        return (f"Your question is {len(question)} characters long; the limit is {limit} "
                "(generation.max_question_chars in corpus.yaml). Please shorten it.")
    return None


def blind_pair(question: str, names: Sequence[str], rng: random.Random | None = None) -> tuple[str, str]:
    """Two variants in A/B order, drawn afresh for every showing: asking the same question again
    must not reveal which side is which (`rng` only makes tests repeatable)."""
    a, b = (rng or random.SystemRandom()).sample(sorted(names), 2)
    return a, b


# -- answering --------------------------------------------------------------------------------
@dataclass
class Column:
    """One variant's answer as it grows."""

    answer: Answer | None = None
    done: bool = False
    error: str | None = None


def _failed(e: Exception) -> Column:
    log.error("answering failed", exc_info=e)  # the full traceback goes to the console only
    return Column(done=True, error=f"{type(e).__name__}: {e}")


def stream_columns(variants: dict[str, Variant], question: str,
                   histories: dict[str, list[tuple[str, str]]] | None = None) -> Iterator[dict[str, Column]]:
    """Every variant's growing answer to one question, yielded as a whole after each step.

    The variants share one engine, fed by one batching scheduler per engine (assistant/model/batching.py,
    as `assistant serve` uses): the columns of one question are decoded in one batch (each row
    through its own adapter), and so are the questions of users asking at the same time, instead of
    one user after another. Closing the iterator (a user who cancels or leaves) frees the rows at
    the next step. A variant with its own `stream`, or a batch that fails, falls back to streaming
    one variant after another.
    """
    histories = histories or {}
    t0 = time.perf_counter()
    cols = {n: Column() for n in variants}
    batch: dict[str, Prompt] = {}
    engine = next(iter(variants.values())).engine if variants else None
    for n, v in variants.items():
        if type(v).stream is not Variant.stream or v.engine is not engine:
            continue
        try:
            p = v.prompt(question, histories.get(n, ()))
        except Exception as e:
            cols[n] = _failed(e)
            continue
        if p.messages is None:  # e.g. retrieval found nothing relevant
            cols[n] = Column(Answer(ABSTAIN_TEXT, n, p.sources, time.perf_counter() - t0,
                                    abstained_before_generation=True), done=True)
        else:
            batch[n] = p
    yield cols
    if batch:
        yield from _stream_batch(variants, batch, cols, t0)
    for n, v in variants.items():  # whatever the batch did not answer, one after another
        if cols[n].done:
            continue
        try:
            for a in v.stream(question, histories.get(n, ())):
                cols[n] = Column(a)
                yield cols
            cols[n].done = True
        except Exception as e:
            cols[n] = _failed(e)
        yield cols


_SCHEDULERS: dict[int, Scheduler] = {}
_SCHEDULERS_LOCK = threading.Lock()


def scheduler_for(engine: Engine, thread: bool = True) -> Scheduler:
    """The one scheduler feeding `engine` (created on first use, shared by every chat user).
    `thread=False`: the caller runs its loop (`Scheduler.run`, on the main thread: `app.launch`)."""
    with _SCHEDULERS_LOCK:
        s = _SCHEDULERS.get(id(engine))
        if s is None or s.engine is not engine:
            s = _SCHEDULERS[id(engine)] = Scheduler(engine, max_batch=max(engine.batch_size, 16), thread=thread)
        return s


def _stream_batch(variants: dict[str, Variant], batch: dict[str, Prompt], cols: dict[str, Column],
                  t0: float) -> Iterator[dict[str, Column]]:
    names = list(batch)
    engine = variants[names[0]].engine
    prompt_tokens = {n: engine.count_tokens(engine.render(batch[n].messages)) for n in names}
    updates: queue.Queue = queue.Queue()

    def column(n: str, text: str, tokens: int, done: bool) -> Column:
        return Column(Answer(text.strip() if done else text, n, batch[n].sources, time.perf_counter() - t0,
                             prompt_tokens[n], tokens), done)

    jobs: list[Job] = []
    try:
        sched = scheduler_for(engine)
        for n in names:
            jobs.append(sched.submit(Job(batch[n].messages, variants[n].adapter, engine.max_new_tokens,
                                         on_update=lambda u, n=n: updates.put((n, u)))))
        pending = set(names)
        while pending:
            n, u = updates.get()
            if u.error:
                raise RuntimeError(u.error)
            cols[n] = column(n, u.text, u.tokens, u.done)
            if u.done:
                pending.discard(n)
            yield cols
    except QueueFull as e:
        for n in names:
            if not cols[n].done:
                cols[n] = Column(done=True, error=f"busy: {e}")
        yield cols
    except Exception:
        log.exception("batched answering failed; answering one variant after another")
        for n in names:
            if not cols[n].done:
                cols[n] = Column()
    finally:
        for job in jobs:  # a no-op for finished rows; frees the others when the user went away
            job.cancel()


# -- the latest evaluation --------------------------------------------------------------------
def latest_eval_dir(corpus: Corpus) -> Path | None:
    """`eval/latest` (a link, or a file naming the folder), else the newest folder with metrics."""
    root = corpus.runs.evals
    latest = corpus.runs.latest_eval
    if latest.is_dir():
        return latest
    if latest.is_file():
        target = root / latest.read_text(encoding="utf-8").strip()
        if target.is_dir():
            return target
    if root.is_dir():
        done = sorted(d for d in root.iterdir() if d.is_dir() and (d / "metrics.json").exists())
        if done:
            return done[-1]
    return None


def _cell(v):
    if isinstance(v, float):
        return round(v, 3)
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False)
    return "" if v is None else v


def disagreements(metrics: dict, results: list[dict]) -> tuple[list[str], list[list]]:
    """Questions the variants answered differently: from metrics.json if it lists them, else results."""
    given = metrics.get("disagreements")
    if isinstance(given, list) and given and all(isinstance(r, dict) for r in given):
        headers = list(dict.fromkeys(k for r in given for k in r))
        return headers, [[_cell(r.get(h)) for h in headers] for r in given[:MAX_TABLE_ROWS]]

    clean = []
    for r in results:  # read defensively: results.jsonl of older versions may lack fields
        qid = r.get("id") or r.get("question_id") or r.get("question")
        if r.get("variant") and r.get("outcome") is not None and qid is not None:
            clean.append({"slice": r.get("slice") or r.get("kind") or "", "id": qid, "variant": r["variant"],
                          "question": r.get("question", qid), "outcome": r["outcome"], "answer": r.get("answer", "")})
    found = differing(clean)
    names = sorted({v for d in found for v in d["answers"]},
                   key=lambda v: (VARIANTS.index(v) if v in VARIANTS else len(VARIANTS), v))
    headers = ["question", "slice", *names]
    return headers, [[_cell(d["question"]), _cell(d["slice"])] + [_cell(d["answers"].get(v, (None,))[0]) for v in names]
                     for d in found[:MAX_TABLE_ROWS]]


@dataclass
class ReportView:
    verdict: str
    folder: Path | None = None
    plots: list[str] = field(default_factory=list)
    headers: list[str] = field(default_factory=list)
    rows: list[list] = field(default_factory=list)
    report_md: str = ""

    @property
    def found(self) -> bool:
        return self.folder is not None


def load_report(corpus: Corpus) -> ReportView:
    """What the report tab shows, read defensively from the latest evaluation's files."""
    folder = latest_eval_dir(corpus)
    if folder is None:
        return ReportView(f"No evaluation yet: run `assistant compare {corpus.root}`")
    try:
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        if not isinstance(metrics, dict):
            raise ValueError("metrics.json is not an object")
    except (OSError, ValueError) as e:
        return ReportView(f"The evaluation in `{folder}` is incomplete or unreadable ({e}); "
                          f"rerun `assistant compare {corpus.root}`")
    verdict = metrics.get("verdict")
    text = verdict.get("text") if isinstance(verdict, dict) else verdict
    pending = metrics.get("pending")
    if text and isinstance(pending, list) and pending:  # compare's first verdict: training goes on
        text = (f"**First verdict**, before training {', '.join(map(str, pending))} (Refresh when `assistant "
                f"compare` ends for the final one): {text}")
    headers, rows = disagreements(metrics, read_jsonl(folder / "results.jsonl"))  # storage.read_jsonl
    report = folder / "report.md"
    return ReportView(str(text) if text else "The report has no verdict.", folder,
                      [str(p) for p in sorted((folder / "plots").glob("*.png"))], headers, rows,
                      report.read_text(encoding="utf-8") if report.exists() else "*report.md is missing.*")
