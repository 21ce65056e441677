"""The API's scheduler: continuous batching on the engine's one decoding loop."""

import time

import pytest

from assistant.config import ModelSettings
from assistant.model.batching import Job, Scheduler
from assistant.model.engine import Engine
from assistant.model.loading import load_model
from assistant.model.sampling import Sampling
from tiny_model import TINY

SYSTEM = "You are the bike shop's assistant. Answer in one short sentence, from the shop's own policies only."
QUESTIONS = ["hi", "What is the return window for bikes in your shop?", "Why?", "Tell me about tune-ups and prices.",
             "ok", "How much does return shipping cost for a damaged bike?"]


@pytest.fixture(scope="module")
def engine():
    """The tiny model with weights that say varied tokens (its own say "\\n" forever)."""
    import torch
    from transformers import AutoConfig, LlamaForCausalLM

    _, tok = load_model(ModelSettings(name=TINY))
    config = AutoConfig.from_pretrained(TINY)
    config.initializer_range = 1.0
    torch.manual_seed(0)
    return Engine(LlamaForCausalLM(config).eval(), tok, max_new_tokens=12, batch_size=4)


def messages(q):
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]


def wait(jobs, seconds=120):
    deadline = time.monotonic() + seconds
    while any(j.result is None for j in jobs) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert all(j.result is not None for j in jobs), "jobs did not finish"


def test_jobs_join_free_rows_and_answer_as_alone(engine):
    """More jobs than rows, with other token limits: each takes a row as soon as one frees up
    (never more than max_batch at once), and each answer is the one it gets alone."""
    limits = [12, 2, 7, 12, 4, 9]
    alone = []
    for q, n in zip(QUESTIONS, limits):
        row = engine.row(messages(q), max_new_tokens=n)
        list(engine.run([row], slots=1))
        alone.append(engine.tokenizer.decode(row.tokens, skip_special_tokens=True))
    sched = Scheduler(engine, max_batch=3)
    try:
        jobs = [sched.submit(Job(messages(q), None, n)) for q, n in zip(QUESTIONS, limits)]
        wait(jobs)
        assert [j.result.text for j in jobs] == alone
        assert all(j.result.finish_reason in ("stop", "length") for j in jobs)
        steps = list(sched.batches)
        assert max(steps) == 3 and len(set(steps)) > 1  # full while jobs waited, smaller at the end
        # continuous: fewer steps than batch by batch (two batches of three, each as long as its longest)
        assert len(steps) < 12 + 12
    finally:
        sched.close()


def test_a_job_samples_with_its_own_seed_amid_others(engine):
    seeded = Sampling(temperature=0.9, seed=3)
    row = engine.row(messages(QUESTIONS[1]), sampling=seeded)
    list(engine.run([row], slots=1))
    alone = engine.tokenizer.decode(row.tokens, skip_special_tokens=True)
    sched = Scheduler(engine, max_batch=4)
    try:
        others = [sched.submit(Job(messages(q), None, 5, sampling=Sampling(0.9, seed=i) if i % 2 else Sampling()))
                  for i, q in enumerate(QUESTIONS[2:])]
        mine = sched.submit(Job(messages(QUESTIONS[1]), None, 12, sampling=seeded))
        again = sched.submit(Job(messages(QUESTIONS[1]), None, 12, sampling=seeded))
        wait(others + [mine, again])
        assert mine.result.text == again.result.text == alone
        other_seed = sched.submit(Job(messages(QUESTIONS[1]), None, 12, sampling=Sampling(0.9, seed=4)))
        wait([other_seed])
        assert other_seed.result.text != alone
    finally:
        sched.close()


def test_stop_strings_and_cancel_free_the_row_for_the_next_job(engine):
    row = engine.row(messages(QUESTIONS[3]), max_new_tokens=12)
    list(engine.run([row], slots=1))
    text = engine.tokenizer.decode(row.tokens, skip_special_tokens=True)
    stop = text[len(text) // 2:len(text) // 2 + 2]
    sched = Scheduler(engine, max_batch=1)
    try:
        long = sched.submit(Job(messages(QUESTIONS[1]), None, 10_000))
        cut = sched.submit(Job(messages(QUESTIONS[3]), None, 12, stop=[stop]))
        time.sleep(0.5)
        assert cut.result is None  # waiting: the one row is taken
        long.cancel()
        wait([long, cut])
        assert long.result.finish_reason == "cancelled" and long.result.tokens < 10_000
        assert cut.result.finish_reason == "stop" and cut.result.text == text[:text.find(stop)]
    finally:
        sched.close()


PASSAGES = [f"[{i}] " + text * 4 for i, text in enumerate([
    "Returns are free within 30 days of delivery when the bike is unused and in its original box. ",
    "A tune-up costs 49 euros and takes two working days; book it online or in the workshop. ",
    "Damaged bikes are collected by courier at no cost within five days of the claim being filed. "], 1)]


def test_a_burst_joins_at_once_when_its_passages_are_cached(engine):
    """The scheduler admits at most PREFILL_TOKENS prompt tokens to compute between two steps, and
    counts only those: RAG prompts whose passages another request computed (copied from the prefix
    cache) join in one step, where the same burst with a cold cache joins over several."""
    from assistant.model.decoding import PREFILL_TOKENS

    prompts = [messages("Passages:\n" + "\n\n".join(PASSAGES) + f"\n\nQuestion: {q}") for q in QUESTIONS[:4]]
    rows = [engine.row(m) for m in prompts]
    assert all(len(r.ends) == len(PASSAGES) + 1 for r in rows)  # a chunk per passage, then the question
    alone = []
    for m in prompts:
        engine.prefixes.clear()
        alone.append(engine.generate([m], batch_size=1)[0].text)
    assert engine.to_prefill(rows[0]) == len(rows[0].ids) - rows[0].ends[-2]  # warm: the question's chunk only

    def first_step(cold: bool) -> int:
        if cold:
            engine.prefixes.clear()
            assert 2 * engine.to_prefill(rows[0]) > PREFILL_TOKENS  # two cold prompts exceed the budget
        sched = Scheduler(engine, max_batch=4)
        try:
            with engine._lock:  # the scheduler waits on it (to_prefill) until every job is queued
                jobs = [sched.submit(Job(m, None, 12)) for m in prompts]
            wait(jobs)
            assert [j.result.text.strip() for j in jobs] == alone
            return sched.batches[0]
        finally:
            sched.close()

    assert first_step(cold=True) < len(prompts)
    assert first_step(cold=False) == len(prompts)


def test_jobs_sent_together_to_an_idle_scheduler_share_its_first_step_and_a_lone_one_waits_briefly(engine):
    """An idle scheduler waits GATHER_MS for the company of its first job (each next one renews the
    wait, up to GATHER_MOST times it): jobs a client sends a few milliseconds apart share the
    burst's first prefill and step, where without the wait the first one is prefilled and stepped
    alone; a lone job waits about GATHER_MS once, and answers as it does without the wait."""
    from assistant.model.batching import GATHER_MOST

    def burst(gather_ms: float) -> tuple[int, list[str]]:
        sched = Scheduler(engine, max_batch=4, gather_ms=gather_ms)
        try:
            jobs = []
            for q in QUESTIONS[:4]:  # 30 ms apart: clients sending at about the same moment
                jobs.append(sched.submit(Job(messages(q), None, 6)))
                time.sleep(0.03)
            wait(jobs)
            return sched.batches[0], [j.result.text for j in jobs]
        finally:
            sched.close()

    together, texts = burst(100.0)
    apart, same = burst(0.0)
    assert together == 4 and apart < 4 and texts == same

    sched = Scheduler(engine, max_batch=4, gather_ms=200.0)
    try:
        start = time.monotonic()
        job = sched.submit(Job(messages(QUESTIONS[1]), None, 1))
        wait([job])
        took = time.monotonic() - start
        assert 0.2 <= took < 0.2 * GATHER_MOST and job.result.text == same[1][:len(job.result.text)]
    finally:
        sched.close()
