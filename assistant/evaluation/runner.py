"""`assistant eval` and `assistant compare`: every built variant answers the same questions.

Answers are cached per (variant fingerprint, question) in `runs/<corpus>/eval/cache/`, appended as
they arrive, so an interrupted evaluation resumes where it stopped and a rerun after a change
only answers what the change touched.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, wait
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

from rich.console import Console
from tqdm.auto import tqdm

from assistant.config import VARIANTS
from assistant.corpus.corpus import (Corpus, CorpusError, QAItem, corpus_lock, load_corpus, no_test_questions, read_qa,
                                     resolve_suite)
from assistant.errors import NotBuilt, UsageError
from assistant.evaluation import report, scoring
from assistant.evaluation.judge import judge_evaluation
from assistant.evaluation.outcomes import OWN, SLICES
from assistant.model.loading import cpu_kernels, numerics
from assistant.runtime import map_large_buffers, peak_memory_mb, report_card, torch_threads
from assistant.storage import append_jsonl, read_json, read_jsonl
from assistant.variants import load_variant, open_engine, variant_class
from assistant.variants.build import build_variants
from assistant.variants.rag import RagVariant

# Answered by the model itself with any retrieval gate open: forgetting and refusals must be the
# model's, not the gate's canned "I don't know." (which would also hide an adapter's forgetting).
OWN_ANSWER_SLICES = OWN
OWN_ANSWER_VERSION = "gate-open-1"  # in the cache key of those slices: bump when how they are answered changes
MIN_ANSWERS_PER_WORKER = 64
MAX_AUTO_WORKERS = 8


@dataclass
class EvalItem:
    slice: str
    qa: QAItem

    @property
    def key(self) -> str:
        """Cache key: the question's id and wording (a reworded question is a new question), and for
        the slices answered with the gate open, how they are answered."""
        mode = f"\0{OWN_ANSWER_VERSION}" if self.slice in OWN_ANSWER_SLICES else ""
        return hashlib.sha1(f"{self.qa.id}\0{self.qa.question}{mode}".encode()).hexdigest()[:16]


def eval_items(corpus: Corpus, limit: int | None = None, console: Console | None = None) -> list[EvalItem]:
    """The questions of every slice, in a stable order; `limit` keeps the first N of each slice.

    paraphrase: a test question whose fact has a train wording; unseen: a test fact with no train
    wording (facts worded only in val count as unseen: val is held out of training).
    """
    cfg = corpus.config.evaluation
    trained = {q.fact_id for q in corpus.questions("train")}
    slices: dict[str, list[QAItem]] = defaultdict(list)
    for q in corpus.questions("test"):
        if q.kind == "answerable":
            slices["paraphrase" if q.fact_id in trained else "unseen"].append(q)
        else:
            slices[q.kind].append(q)
    for name, setting in (("general", cfg.general_suite), ("safety", cfg.safety_suite)):
        path = resolve_suite(corpus, setting)
        if path is None:
            if console:
                console.print(f"[yellow]no {name} suite at {setting!r}: the {name} slice is skipped[/]")
            continue
        items, problems = read_qa(path)
        if problems:
            raise CorpusError(problems)
        slices[name] += items
    train = corpus.questions("train", "answerable")
    slices["seen"] = random.Random(cfg.seed).sample(train, min(cfg.seen_sample, len(train)))
    out = []
    for name in SLICES:
        unique = list({q.id: q for q in slices.get(name, [])}.values())
        out += [EvalItem(name, q) for q in unique[:limit]]
    return out


class AnswerCache:
    """One JSONL file per variant fingerprint; each line holds one answer, appended and flushed."""

    def __init__(self, path: Path):
        self.path = path
        # A line cut short by an interruption is skipped by read_jsonl: that question is answered again.
        self.answers: dict[str, dict] = {r["key"]: r["answer"] for r in read_jsonl(path)
                                         if isinstance(r.get("key"), str) and isinstance(r.get("answer"), dict)}

    def add(self, pairs: list[tuple[EvalItem, dict]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        append_jsonl(self.path, [{"key": item.key, "id": item.qa.id, "question": item.qa.question, "answer": answer}
                                 for item, answer in pairs])
        self.answers.update((item.key, answer) for item, answer in pairs)


def decoding(corpus: Corpus) -> dict:
    """The numerics an evaluation answer is produced under, resolved on this machine.

    Part of every answer's cache key: answers from another device, dtype, CPU kernel family or
    decoding setting are never pooled into one report.
    """
    import torch

    gen = corpus.config.generation
    server = corpus.config.model.server
    if server is not None:  # the server's numerics are its own: its address and model id key the answers
        return {"server": server.base_url, "model": server.model, "max_new_tokens": gen.max_new_tokens,
                "greedy": True}
    device, dtype = numerics(corpus.config.model, evaluation=True)
    kernels = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        cpu_kernels() if device.type == "cpu" else device.type
    out = {"device": device.type, "kernels": kernels, "dtype": str(dtype).removeprefix("torch."),
           "max_new_tokens": gen.max_new_tokens, "batch_invariant": gen.batch_invariant, "greedy": True}
    if device.type == "cpu":
        out["threads"] = 1  # one_thread(): answers do not depend on the machine's core count
    return out


@contextmanager
def one_thread(corpus: Corpus):
    """On CPU the evaluation decodes with one torch thread per process. Two threads on two cores
    decode only about 1.2x faster than one (a 135M model's small matrices), so the cores are better
    spent on one worker process each (`evaluation.workers`), and answers stay the same on any core
    count. Restores the thread count on exit."""

    with torch_threads(1) if numerics(corpus.config.model, evaluation=True)[0].type == "cpu" else nullcontext():
        yield


def eval_workers(corpus: Corpus, total: int) -> int:
    """Worker processes for `total` answers: `evaluation.workers`, or (0, auto) one per core on CPU, at
    most `MAX_AUTO_WORKERS`, each given at least `MIN_ANSWERS_PER_WORKER` answers (a worker loads the
    model: ~10 s)."""
    import os

    if corpus.config.model.server or numerics(corpus.config.model, evaluation=True)[0].type != "cpu":
        return 1  # a server's concurrency is model.server.max_concurrency
    setting = corpus.config.evaluation.workers
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if setting:
        return max(1, min(setting, total))
    # each worker holds its own copy of the model (about 1 GB in fp32 with adapters)
    return max(1, min(cores, MAX_AUTO_WORKERS, total // MIN_ANSWERS_PER_WORKER))


def ready_variants(corpus: Corpus, names: list[str] | None, console: Console) -> list[tuple[str, str]]:
    """(name, answer key) of each requested variant that is implemented and built; others skipped aloud.

    The answer key joins the variant's fingerprint (data, settings, artifacts) and `decoding`.
    """
    numerics_key = json.dumps(decoding(corpus), sort_keys=True)
    ready = []
    for name in names or list(VARIANTS):
        try:
            cls = variant_class(name)
        except NotBuilt as e:
            console.print(f"[yellow]skip {name}: {e}[/]")
            continue
        if cls.needs_build and not cls.is_built(corpus):
            console.print(f"[yellow]skip {name}: not built; run: assistant build {corpus.root} --variant {name}[/]")
            continue
        key = hashlib.sha256(f"{cls.fingerprint(corpus)}\0{numerics_key}".encode()).hexdigest()[:16]
        ready.append((name, key))
    return ready


def collect_answers(corpus: Corpus, items: list[EvalItem], ready: list[tuple[str, str]],
                    console: Console) -> tuple[dict[str, dict[str, dict]], dict]:
    """(variant -> question key -> Answer dict, the work done for them); only questions missing from
    the cache are generated. The work (answers cached and decoded, the engine's decoding plan, worker
    processes, seconds) goes to the report card."""
    caches = {name: AnswerCache(corpus.runs.answer_cache(name, fp)) for name, fp in ready}
    todo = {name: list({it.key: it for it in items if it.key not in caches[name].answers}.values())
            for name, _ in ready}
    total = sum(len(t) for t in todo.values())
    cached = len(items) * len(ready) - total
    console.print(f"{len(items)} questions x {len(ready)} variants: {cached} answers cached, {total} to generate")
    work: dict = {"cached": cached, "generated": total}
    if total:
        evaluation = corpus.config.evaluation
        # A unit is one cache append: up to chunk_questions questions of one variant, own-answer slices apart.
        units = []
        for name, _ in ready:
            for own in (False, True):
                group = [it for it in todo[name] if (it.slice in OWN_ANSWER_SLICES) == own]
                units += [(name, own, group[i:i + evaluation.chunk_questions])
                          for i in range(0, len(group), evaluation.chunk_questions)]
        paths = {name: str(caches[name].path) for name, _ in ready}
        workers = eval_workers(corpus, total)
        t0 = time.perf_counter()
        with one_thread(corpus), tqdm(total=total, unit="answer", desc="answering", dynamic_ncols=True) as bar:
            if workers == 1:
                stats = answer_units(corpus, units, paths, bar.update, bar.set_postfix_str)
            else:
                stats = _answer_in_workers(corpus, units, paths, workers, bar)
        work |= {**stats, "workers": workers, "seconds": round(time.perf_counter() - t0, 1)}
        for name, _ in ready:
            caches[name] = AnswerCache(caches[name].path)
        console.print(f"generation: {stats['answers']} answers decoded, {stats['reused']} reused, {stats['tokens']} "
                      f"tokens, {stats['row_steps']} row-steps, prompts: {stats['prefilled']} tokens computed and "
                      f"{stats['prefix_cached']} from the prefix cache, {time.perf_counter() - t0:.0f} s"
                      + (f", {workers} worker processes" if workers > 1 else ""))
        if stats["alone"]:
            console.print(f"[yellow]{stats['alone']} answers were decoded one question at a time: no row count "
                          "makes this device's matrix kernels batch-invariant in this dtype (invariance.min_rows), "
                          "so batches could change answers. Exact, but slower; generation.batch_invariant: false "
                          "batches anyway, and then an answer can depend on its batch[/]")
    return {name: caches[name].answers for name, _ in ready}, work


def answer_units(corpus: Corpus, units: list[tuple[str, bool, list[EvalItem]]], paths: dict[str, str],
                 progress=lambda n: None, status=lambda s: None) -> dict[str, int]:
    """Answer each unit (variant, own-answer slices?, items) and append it to the variant's cache file;
    returns the engine's counts of decoded and reused answers, tokens and row-steps, of answers
    decoded one question at a time for want of a batch-invariant row count (`alone`), its
    decoding plan (`Engine.plan`, as text) and the process's memory high-water mark (MB)."""
    engine = open_engine(corpus)
    evaluation = corpus.config.evaluation
    before = replace(engine.stats)
    loaded: dict[str, object] = {}
    # Variants that send the same prompt through the same weights (e.g. `rag` declining with its
    # gate open sends `prompted`'s prompt) share one decoding.
    with engine.reuse_answers(), engine.batched(evaluation.batch_size, evaluation.batch_tokens):
        for name, own, batch in units:
            if name not in loaded:
                loaded[name] = load_variant(name, corpus, engine)
                status(name)
            variant = loaded[name]
            with variant.gate_open() if own else nullcontext():
                answers = variant.answer_many([it.qa.question for it in batch], progress=False)
            AnswerCache(Path(paths[name])).add([(it, a.to_dict()) for it, a in zip(batch, answers)])
            progress(len(batch))
    done = engine.stats
    return {"answers": done.answers - before.answers, "reused": done.reused - before.reused,
            "tokens": done.tokens - before.tokens, "row_steps": done.row_steps - before.row_steps,
            "alone": done.alone - before.alone, "prefilled": done.prefilled - before.prefilled,
            "prefix_cached": done.cached - before.cached, "plan": str(engine.plan()),
            "peak_memory_mb": peak_memory_mb()}


def _worker(root: str, config, units: list, paths: dict[str, str], queue) -> dict[str, int]:
    """One evaluation worker process: one torch thread, its share of the units, the parent's settings."""
    import torch

    torch.set_num_threads(1)
    map_large_buffers()  # the process only answers: its freed KV buffers go back to the system
    corpus = load_corpus(root)
    corpus.config = config
    return answer_units(corpus, units, paths, queue.put)


def _cost(unit: tuple[str, bool, list]) -> int:
    """A unit's share of the decoding work: RAG prompts hold passages, about 3x a closed-book one."""

    return len(unit[2]) * (3 if issubclass(variant_class(unit[0]), RagVariant) else 1)


def _answer_in_workers(corpus: Corpus, units: list, paths: dict[str, str], workers: int, bar) -> dict[str, int]:
    """Spread the units over worker processes, longest first (RAG prompts count 3x), so they end
    together; a variant's units stay on as few workers as that allows (each loads its adapter)."""
    import multiprocessing as mp

    shares: list[list] = [[] for _ in range(workers)]
    load = [0] * workers
    for unit in sorted(units, key=_cost, reverse=True):
        w = min(range(workers), key=lambda i: (load[i], unit[0] not in {u[0] for u in shares[i]}))
        shares[w].append(unit)
        load[w] += _cost(unit)
    ctx = mp.get_context("spawn")  # fork would copy torch's thread pools and locks
    with ctx.Manager() as manager, ProcessPoolExecutor(len(shares), mp_context=ctx) as pool:
        queue = manager.Queue()
        futures = [pool.submit(_worker, str(corpus.root), corpus.config, sorted(share, key=lambda u: u[0]),
                               paths, queue) for share in shares if share]
        while True:
            finished, _ = wait(futures, timeout=0.5)
            while not queue.empty():
                bar.update(queue.get())
            if len(finished) == len(futures):
                break
        totals = [f.result() for f in futures]  # re-raises a worker's error here
    # The workers share settings and machine, so their plans agree; several would be listed.
    plans = sorted({t.pop("plan") for t in totals})
    peak = max(t.pop("peak_memory_mb") for t in totals)  # each worker's own: they run side by side
    return {**{k: sum(t[k] for t in totals) for k in totals[0]}, "plan": "; ".join(plans), "peak_memory_mb": peak}


def evaluate(corpus: Corpus, variants: list[str] | None = None, limit: int | None = None,
             console: Console | None = None, judge: bool = False, pending: list[str] | None = None) -> Path:
    """Evaluate the built variants, write the report folder and return its path; with `judge`, the
    LLM judge of corpus.yaml's `judge:` section grades every answer too (assistant/evaluation/judge.py).
    `pending`: variants still to be built (`compare`'s first verdict), named in the report."""
    console = console or Console(stderr=True)
    if limit is not None and limit < 1:
        raise UsageError("--limit must be at least 1")
    if not corpus.questions("test"):  # general/safety suites alone say nothing about the corpus
        raise CorpusError([no_test_questions(corpus)])
    items = eval_items(corpus, limit, console)
    if not items:
        raise CorpusError([no_test_questions(corpus)])

    with corpus_lock(corpus):  # no build may replace an adapter while it answers
        ready = ready_variants(corpus, variants, console)
        if not ready:
            raise NotBuilt(f"no requested variant is built for {corpus.name!r}; run: assistant build {corpus.root}")
        answers, work = collect_answers(corpus, items, ready, console)
    rows = scoring.score_rows(corpus, items, answers, [n for n, _ in ready])
    scoring.apply_gate(rows, items, answers)
    judged = _judge(corpus, items, answers, rows, console) if judge else None
    metrics = scoring.summarise(corpus, rows, [n for n, _ in ready], fingerprints=dict(ready), limit=limit)
    metrics["environment"] = environment(corpus, [n for n, _ in ready]) | {"answering": work}
    if judged is not None:
        metrics["judge"] = judged
    sections = report.Report()
    if pending:  # compare's first verdict, given before training `pending`
        metrics["pending"] = pending
        sections.log("first_verdict", report.first_verdict_section(pending), {"pending": pending})
    out = report.write_report(corpus, rows, metrics, sections)
    report.print_summary(metrics, out, Console())
    return out


def environment(corpus: Corpus, variants: list[str]) -> dict:
    """The report card of this evaluation: where the answers were generated, where each adapter trained."""

    trained = {}
    for name in variants:
        try:
            log = read_json(corpus.runs.training_log(name))
            trained[name] = (log["device"], log["dtype"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not an adapter, or a log from before these fields
    gen = corpus.config.generation
    # Answered by a server: this machine's device and dtype did not produce them (decoding names the server).
    local = None if corpus.config.model.server else numerics(corpus.config.model, evaluation=True)
    return report_card(generation=local, training=trained,
                       batch_invariant=gen.batch_invariant, decoding=decoding(corpus))


def _judge(corpus: Corpus, items: list[EvalItem], answers: dict, rows: list[dict], console: Console) -> dict:
    passages = {(v, it.slice, it.qa.id): [s.get("text", "") for s in answers[v][it.key].get("sources", [])]
                for v in answers for it in items}
    cfg = corpus.config.judge
    console.print(f"judging {len(rows)} answers with {cfg.model!r} at {cfg.base_url}")
    out = judge_evaluation(corpus, rows, passages)
    console.print(f"judge: {out['calls']} calls, {out['cached']} cached, {out['errors']} judge errors")
    return out


def compare(corpus: Corpus, variants: list[str] | None = None, limit: int | None = None,
            judge: bool = False, first_verdict: bool = True) -> Path:
    """Build what is missing or stale, evaluate every variant, write the report, print the verdict.

    With `first_verdict`, when a fine-tune has still to be trained (the long part: most of the
    demo's build time), the other variants are built and evaluated first, and their report and
    verdict are out before training starts; their answers are cached, so the final evaluation only
    answers for the fine-tunes just trained.
    """

    classes = {}
    for name in variants or VARIANTS:
        try:
            classes[name] = variant_class(name)
        except NotBuilt:
            continue  # not implemented: build_variants and evaluate say so
    untrained = [n for n, cls in classes.items() if cls.adapter and not cls.is_built(corpus)]
    ready_first = [n for n in classes if n not in untrained]
    if first_verdict and untrained and ready_first:
        build_variants(corpus, ready_first)
        Console(stderr=True).print(f"[bold]First verdict, before training {', '.join(untrained)}:[/]")
        evaluate(corpus, ready_first, limit, judge=judge, pending=untrained)
        build_variants(corpus, untrained)  # the others were built just above
    else:
        build_variants(corpus, variants)
    return evaluate(corpus, variants, limit, judge=judge)

