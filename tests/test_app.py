"""The app's logic without a browser: variants served, answers streamed together, votes, report files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from assistant.evaluation import votes
from assistant.serve.app import build_app, evaluation_status, history_of, render_answer, start_evaluation
from assistant.serve.lineup import (Column, blind_pair, check_question, example_questions, load_lineup, load_report,
                               stream_columns)
from assistant.corpus.corpus import load_corpus
from assistant.variants import ABSTAIN_TEXT, Answer, Prompt, Source, load_variant, open_engine
from assistant.variants.prompted import PromptedVariant
from tiny_model import TINY

ROOT = Path(__file__).parent.parent


# -- votes ------------------------------------------------------------------------------------
def test_vote_rows_follow_the_contract(tmp_path):
    path = tmp_path / "runs" / "votes.jsonl"
    votes.append_vote(path, "How long?", "rag", "prompted", "A")
    votes.append_vote(path, "Why?", "sft", "rag", "both_bad")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [set(r) for r in rows] == [{"time", "question", "a", "b", "vote"}] * 2
    assert rows[0] | {"time": None} == {"time": None, "question": "How long?", "a": "rag", "b": "prompted", "vote": "A"}
    assert datetime.fromisoformat(rows[1]["time"]).tzinfo is not None
    with pytest.raises(ValueError):
        votes.append_vote(path, "q", "rag", "sft", "C")
    assert len(path.read_text().splitlines()) == 2


def test_concurrent_votes_never_interleave(tmp_path):
    path = tmp_path / "votes.jsonl"
    long_q = "x" * 5000  # long lines would tear first if appends were not atomic

    def cast(i):
        for _ in range(20):
            votes.append_vote(path, f"{i}{long_q}", "rag", "prompted", "tie")

    threads = [threading.Thread(target=cast, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(votes.read_votes(path)) == 160 == len(path.read_text().splitlines())


def test_read_votes_skips_torn_lines_and_win_rates_count_each_side(tmp_path):
    path = tmp_path / "votes.jsonl"
    cast = [("rag", "prompted", "A"), ("prompted", "rag", "A"), ("rag", "sft", "tie"), ("sft", "rag", "both_bad")]
    for a, b, v in cast:
        votes.append_vote(path, "q", a, b, v)
    with open(path, "a") as f:
        f.write('{"time": "2025-01-01", "question": "q", "a": "rag"')  # torn last line
    rows = votes.read_votes(path)
    assert len(rows) == 4
    rates = {r["variant"]: r for r in votes.win_rates(rows)}
    assert (rates["rag"]["votes"], rates["rag"]["wins"], rates["rag"]["losses"], rates["rag"]["ties"],
            rates["rag"]["both_bad"]) == (4, 1, 1, 1, 1)
    assert (rates["prompted"]["wins"], rates["prompted"]["losses"]) == (1, 1)
    assert rates["sft"]["wins"] == 0 and rates["sft"]["low"] == 0.0 < rates["sft"]["high"] < 1
    lo, hi = votes.wilson(7, 10)
    assert 0.39 < lo < 0.40 and 0.89 < hi < 0.90  # the textbook Wilson interval of 7/10
    assert votes.win_rates([]) == [] and votes.read_votes(tmp_path / "none.jsonl") == []


# -- questions and pairs ----------------------------------------------------------------------
def test_question_checks_name_the_limit():
    assert check_question("", 100) == "Type a question first."
    assert check_question("x" * 100, 100) is None
    msg = check_question("x" * 101, 100)
    assert "101 characters" in msg and "limit is 100" in msg and "max_question_chars" in msg


def test_blind_pairs_are_drawn_afresh_each_showing_and_both_orders_occur():
    import random

    names = ["prompted", "rag", "sft", "rag_sft"]
    rng = random.Random(0)
    pairs = [blind_pair("How long?", names, rng) for i in range(60)]  # one question, asked 60 times
    assert all(a != b and {a, b} <= set(names) for a, b in pairs)
    assert len(set(pairs)) == 12  # every ordered pair of four variants shows up, for the same question
    assert blind_pair("q", ["prompted", "rag"]) in {("prompted", "rag"), ("rag", "prompted")}


def test_examples_come_from_the_test_split_with_one_unanswerable(tiny_corpus):
    ex = example_questions(tiny_corpus, n=3)
    test = {q.question: q for q in tiny_corpus.questions("test")}
    assert len(ex) == 4 and all(q in test for q in ex)
    assert [test[q].kind for q in ex] == ["answerable"] * 3 + ["unanswerable"]
    assert len({test[q].fact_id for q in ex[:3]}) == 3  # distinct facts, not three paraphrases


# -- variants and streaming -------------------------------------------------------------------
def test_lineup_serves_prompted_and_names_the_build_command_for_the_rest(tiny_corpus):
    lineup = load_lineup(tiny_corpus)
    assert "prompted" in lineup.variants
    assert set(lineup.variants) | set(lineup.missing) == {"prompted", "rag", "sft", "rag_sft"}
    for name, msg in lineup.missing.items():
        assert name in msg
        if "not built" in msg:
            assert f"assistant build {tiny_corpus.root} --variant {name}" in msg


class Abstaining(PromptedVariant):
    name = "abstaining"

    def prompt(self, question, history=()):
        return Prompt(None, [])


class Broken(PromptedVariant):
    name = "broken"

    def prompt(self, question, history=()):
        raise RuntimeError("index corrupted")


class Recording(PromptedVariant):
    """Remembers the history it was given; has its own stream, so it is served on its own."""

    name = "recording"

    def prompt(self, question, history=()):
        self.history = list(history)
        return super().prompt(question, history)

    def stream(self, question, history=()):
        yield from super().stream(question, history)


def test_columns_stream_together_and_match_plain_answers(tiny_corpus):
    engine = open_engine(tiny_corpus)
    prompted = load_variant("prompted", tiny_corpus, engine)
    variants = {"prompted": prompted, "abstaining": Abstaining(tiny_corpus, engine),
                "broken": Broken(tiny_corpus, engine), "recording": Recording(tiny_corpus, engine)}
    q = "Can I visit the workshop on a Monday?"
    history = {"recording": [("Hi", "Hello!")]}
    snapshots = [{n: Column(c.answer, c.done, c.error) for n, c in cols.items()}
                 for cols in stream_columns(variants, q, history)]
    first, last = snapshots[0], snapshots[-1]
    # Before any token: abstention and failure are already known, the generating columns are not done.
    assert first["abstaining"].done and first["abstaining"].answer.text == ABSTAIN_TEXT
    assert first["abstaining"].answer.abstained_before_generation
    assert first["broken"].done and "index corrupted" in first["broken"].error
    assert not first["prompted"].done and not first["recording"].done
    assert all(c.done for c in last.values())
    assert len(snapshots) > 3  # it streamed, not one final answer
    plain = prompted.answer(q)
    got = last["prompted"].answer
    assert got.text == plain.text  # batched streaming decodes exactly like the evaluation does
    assert (got.prompt_tokens, got.completion_tokens) == (plain.prompt_tokens, plain.completion_tokens)
    assert got.latency_s > 0 and got.prompt_tokens > 0
    assert variants["recording"].history == [("Hi", "Hello!")]
    # Served by its own stream, after the batch.
    assert last["recording"].answer.completion_tokens > 0
    assert all(s["prompted"].done for s in snapshots if s["recording"].answer is not None)


def supported_dtypes():
    """fp32 everywhere, bf16 where the CPU has it natively: each path the machine can take, never `auto`."""
    from assistant.model import loading as models

    return ["float32"] + (["bfloat16"] if models.cpu_supports_bf16() else [])


@pytest.mark.smoke
@pytest.mark.slow
@pytest.mark.parametrize("dtype", supported_dtypes())
def test_padded_batch_decodes_like_single_answers_on_the_real_model(tiny_corpus_dir, dtype):
    import torch
    from peft import LoraConfig, get_peft_model

    from assistant.model.loading import load_model

    cfg = tiny_corpus_dir / "corpus.yaml"
    cfg.write_text(cfg.read_text().replace(f"name: {TINY}", f"name: smollm2-135m-instruct\n  dtype: {dtype}\n"
                                           f"  eval_dtype: {dtype}").replace("batch_size: 4", "batch_size: 16"))
    corpus = load_corpus(tiny_corpus_dir)
    prompted = load_variant("prompted", corpus)
    assert str(prompted.engine.dtype) == f"torch.{dtype}"
    q, history = "What is the capital of France?", [("Hello!", "Hello! How can I help you today?")]
    # Two columns of different prompt lengths: the shorter one is left-padded in the batch.
    last = list(stream_columns({"short": prompted, "long": prompted}, q, {"long": history}))[-1]
    assert last["short"].answer.text == prompted.answer(q).text
    assert last["long"].answer.text == list(prompted.stream(q, history))[-1].text
    # Alone versus inside a batch of 16 of very different lengths, for the base model and a LoRA.
    others = ["Hi", "Why?", "Name a colour.", "Tell me, in detail and with every date you know, the whole history "
              "of the bicycle from the draisine of 1817 to today's carbon frames, and why it matters. " * 2]
    # Distinct prompts: the engine decodes a repeated prompt once, in a smaller batch.
    batch = [q] + [others[i % len(others)] + " Thanks." * (i % 4) + f" ({i})" for i in range(15)]
    model, _ = load_model(corpus.config.model)
    torch.manual_seed(0)  # the same random adapter whatever ran before: its near-ties decide tokens
    with tempfile.TemporaryDirectory() as d:
        get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)).save_pretrained(d)
        prompted.engine.add_adapter("random-lora", d)
    convs = [[{"role": "user", "content": x}] for x in batch]
    # Where no row count is batch-invariant (an AMX CPU in bf16: README) each question is decoded alone.
    rows = 1 if prompted.engine.plan().alone else 16
    for adapter in (None, "random-lora"):
        together = prompted.engine.generate(convs, adapter=adapter)
        assert (together[0].batch_size > 1) == (rows > 1)  # rows on average: others leave before it
        for i in (0, 1, 3):  # the question, a short one and the longest one
            assert prompted.engine.generate(convs[i:i + 1], adapter=adapter)[0].text == together[i].text


@pytest.mark.parametrize("dtype", supported_dtypes())
def test_stream_many_routes_each_row_through_its_adapter(tiny_corpus, dtype):
    import torch
    from peft import LoraConfig, get_peft_model

    from assistant.model.engine import Engine
    from assistant.model.loading import load_model

    settings = tiny_corpus.config.model.model_copy(update={"dtype": dtype})
    model, tok = load_model(settings)
    engine = Engine(model, tok, max_new_tokens=6, batch_size=4)
    base_model, _ = load_model(settings)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as d:
        lora = LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)  # random, not a no-op
        get_peft_model(base_model, lora).save_pretrained(d)
        engine.add_adapter("lora", d)
        convs = [[{"role": "user", "content": q}] for q in ("How long is the return window?", "hi", "Prices?")]
        final = [row.text.strip() for row in list(engine.stream_many(convs, ["lora", None, "lora"]))[-1]]
        with_lora = [g.text for g in engine.generate(convs, adapter="lora")]
        bare = [g.text for g in engine.generate(convs, adapter=None)]
    assert with_lora != bare, (with_lora, bare)  # the adapter changes the answers, so the check below means something
    assert final == [with_lora[0], bare[1], with_lora[2]], (final, with_lora, bare)


def test_history_keeps_the_last_finished_turns_only():
    def turn(q, text, done=True, error=None):
        return (q, Column(Answer(text, "prompted"), done, error))

    turns = [turn(f"q{i}", f"a{i}") for i in range(6)] + [turn("bad", "", error="boom"), turn("live", "par", False)]
    assert history_of(turns) == [("q2", "a2"), ("q3", "a3"), ("q4", "a4"), ("q5", "a5")]


def test_answer_rendering_shows_stats_only_when_done():
    a = Answer("Paris.", "prompted", latency_s=1.234, prompt_tokens=40, completion_tokens=3)
    assert render_answer(Column(a, done=False)) == "Paris. ▌"
    done = render_answer(Column(a, done=True))
    assert done.startswith("Paris.") and "1.23 s · 40 prompt + 3 answer tokens" in done
    assert render_answer(Column(a, done=True), stats=False) == "Paris."
    assert "abstained" in render_answer(Column(Answer(ABSTAIN_TEXT, "rag", abstained_before_generation=True), True))
    assert render_answer(Column(done=True, error="ValueError: x")) == "**Error:** ValueError: x"


def test_answers_and_questions_render_as_text_with_honest_citations():
    from assistant.serve.app import render_chat, shown_citations

    src = [Source("docs/a.md", "", "x", 0.9, 1), Source("docs/b.md", "", "y", 0.8, 2)]
    a = Answer("<img src=x onerror=alert(1)> Yes [1] [2] [4].", "rag", src, 1.0, 10, 64)
    msgs = render_chat([("<b>hi</b>", Column(a, done=True))], max_new_tokens=64)
    assert msgs[0]["content"] == "&lt;b&gt;hi&lt;/b&gt;"
    body = msgs[1]["content"]
    assert "<img" not in body and "&lt;img" in body
    assert "[1] [2]" in body and "[4]" not in body  # three markers, two passages shown
    assert "cut off at the 64-token limit" in body  # 64 of max_new_tokens=64
    blind = render_chat([("q", Column(a, done=True))], stats=False, blind=True)[1]["content"]
    assert "[1]" not in blind and "[2]" not in blind
    assert "cut off" not in render_chat([("q", Column(Answer("ok", "rag", [], 1, 5, 3), done=True))],
                                        max_new_tokens=64)[1]["content"]
    assert shown_citations("see [1] and [3]", 2) == "see [1] and"


def test_app_address_follows_gradio_conventions_and_refuses_remote_by_default(monkeypatch):
    from assistant.serve.app import parse_auth, serve_address
    from assistant.errors import UsageError

    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    assert serve_address(None, None) == ("127.0.0.1", 7860)
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7999")
    assert serve_address(None, None) == ("127.0.0.1", 7999)
    assert serve_address(None, 8001) == ("127.0.0.1", 8001)  # the flag beats the environment
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    with pytest.raises(UsageError, match="--allow-remote"):
        serve_address(None, None)
    assert serve_address(None, None, allow_remote=True) == ("0.0.0.0", 7999)
    monkeypatch.setenv("GRADIO_SERVER_PORT", "abc")
    with pytest.raises(UsageError, match="GRADIO_SERVER_PORT"):
        serve_address("127.0.0.1", None)
    assert parse_auth("ann:pw:x") == ("ann", "pw:x") and parse_auth(None) is None
    with pytest.raises(UsageError, match="USER:PASSWORD"):
        parse_auth("ann")


def test_build_app_has_a_column_per_served_variant(tiny_corpus):
    lineup = load_lineup(tiny_corpus)
    ids = {getattr(b, "elem_id", None) for b in build_app(tiny_corpus, lineup).blocks.values()}
    assert "report-rerun" not in ids  # visitors cannot start an evaluation unless the operator allows it
    assert "report-rerun" in {getattr(b, "elem_id", None)
                              for b in build_app(tiny_corpus, lineup, allow_eval=True).blocks.values()}
    assert {"chat-prompted", "question", "ask", "clear", "verdict", "report-refresh"} <= ids
    # the Labels tab: the four keys of `assistant label` and undo
    assert {"label-card", "label-correct", "label-abstained", "label-hallucinated", "label-skip", "label-undo"} <= ids
    assert {i for i in ids if i and i.startswith("chat-")} == {f"chat-{n}" for n in lineup.variants}
    assert ("blind-explain" in ids) == (len(lineup.variants) < 2)


# -- the report tab ---------------------------------------------------------------------------
def write_eval(runs, name="20250101-120000", link=True, metrics=None):
    folder = runs / "eval" / name
    (folder / "plots").mkdir(parents=True)
    metrics = metrics or {"verdict": {"text": "Use rag: 80% accurate [70%, 88%]."}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "report.md").write_text("# Report\n\nrag wins.")
    (folder / "plots" / "accuracy.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    def row(qid, question, slice_, variant, outcome):
        return {"id": qid, "question": question, "slice": slice_, "variant": variant, "outcome": outcome}

    rows = [row("q1", "How long?", "paraphrase", "prompted", "hallucinated"),
            row("q1", "How long?", "paraphrase", "rag", "correct"),
            row("q2", "Price?", "unseen", "prompted", "correct"), row("q2", "Price?", "unseen", "rag", "correct")]
    (folder / "results.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n{torn")
    if link:
        os.symlink(name, runs / "eval" / "latest")
    return folder


def test_report_says_how_to_evaluate_when_nothing_ran(tiny_corpus):
    r = load_report(tiny_corpus)
    assert not r.found and r.verdict == f"No evaluation yet: run `assistant compare {tiny_corpus.root}`"


def test_report_reads_verdict_plots_and_disagreements(tiny_corpus):
    folder = write_eval(tiny_corpus.runs_dir)
    r = load_report(tiny_corpus)
    assert r.found and r.verdict == "Use rag: 80% accurate [70%, 88%]."
    assert [os.path.basename(p) for p in r.plots] == ["accuracy.png"]
    assert r.headers == ["question", "slice", "prompted", "rag"]
    assert r.rows == [["How long?", "paraphrase", "hallucinated", "correct"]]  # q2: both correct, no disagreement
    assert r.report_md.startswith("# Report")
    (tiny_corpus.runs_dir / "eval" / "latest").unlink()
    (tiny_corpus.runs_dir / "eval" / "latest").write_text(folder.name)  # a pointer file works too
    assert load_report(tiny_corpus).verdict.startswith("Use rag")
    (tiny_corpus.runs_dir / "eval" / "latest").unlink()  # compare's first verdict, fine-tunes still training
    write_eval(tiny_corpus.runs_dir, metrics={"verdict": "Use rag.", "pending": ["sft", "rag_sft"]}, name="later")
    assert load_report(tiny_corpus).verdict.startswith("**First verdict**, before training sft, rag_sft")


def test_report_prefers_listed_disagreements_and_survives_bad_files(tiny_corpus):
    runs = tiny_corpus.runs_dir
    write_eval(runs, metrics={"verdict": "Use prompted.",
                              "disagreements": [{"question": "Q", "prompted": "correct", "rag": "abstained"}]})
    r = load_report(tiny_corpus)
    assert r.verdict == "Use prompted." and r.headers == ["question", "prompted", "rag"]
    assert r.rows == [["Q", "correct", "abstained"]]
    (runs / "eval" / "latest" / "metrics.json").write_text("{not json")
    r = load_report(tiny_corpus)
    assert not r.rows and "incomplete or unreadable" in r.verdict and "assistant compare" in r.verdict


def test_latest_falls_back_to_the_newest_finished_folder(tiny_corpus):
    write_eval(tiny_corpus.runs_dir, "20250101-000000", link=False)
    newest = write_eval(tiny_corpus.runs_dir, "20250202-000000", link=False,
                        metrics={"verdict": {"text": "newest"}})
    (tiny_corpus.runs_dir / "eval" / "20250303-000000").mkdir()  # still running: no metrics yet
    assert load_report(tiny_corpus).verdict == "newest" and load_report(tiny_corpus).folder == newest


def test_background_evaluation_runs_once_at_a_time(tiny_corpus):
    cmd = [sys.executable, "-c", "import time; print('evaluating'); time.sleep(1.5)"]
    assert evaluation_status(tiny_corpus) == ""
    assert "started" in start_evaluation(tiny_corpus, cmd)
    assert "already running" in start_evaluation(tiny_corpus, cmd)
    assert "running" in evaluation_status(tiny_corpus)
    deadline = time.time() + 20
    while "running" in evaluation_status(tiny_corpus) and time.time() < deadline:
        time.sleep(0.2)
    assert "finished" in evaluation_status(tiny_corpus)
    assert "evaluating" in (tiny_corpus.runs_dir / "eval" / "app-evaluation.log").read_text()


@pytest.mark.parametrize("kernels", ["invariant", "never invariant"])
def test_chat_users_share_batches_and_a_closed_stream_frees_its_rows(tiny_corpus, kernels, monkeypatch):
    """Concurrent chat users are decoded together through the engine's scheduler, each getting the
    answer it gets alone; a user who leaves (the stream is closed) frees the row at the next step.
    Where no row count is batch-invariant (an AMX CPU in bf16) the scheduler decodes one row at a
    time, one user after another, with the same answers."""
    import threading
    import time

    from assistant.model import invariance
    from assistant.model.engine import Engine
    from assistant.serve.lineup import scheduler_for

    if kernels == "never invariant":
        monkeypatch.setattr(invariance, "min_rows", lambda *a, **k: None)

    base = open_engine(tiny_corpus)
    prompted = load_variant("prompted", tiny_corpus, base)
    sched = scheduler_for(base)
    start = len(sched.batches)
    questions = [f"Question {i}: can I return shoes after {i + 2} weeks?" for i in range(3)]
    barrier, got = threading.Barrier(len(questions)), {}

    def user(i: int) -> None:
        barrier.wait()
        got[i] = list(stream_columns({"prompted": prompted}, questions[i]))[-1]["prompted"].answer.text

    threads = [threading.Thread(target=user, args=(i,)) for i in range(len(questions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert got == {i: prompted.answer(q).text for i, q in enumerate(questions)}
    steps = list(sched.batches)[start:]  # rows of each decoding step
    assert (max(steps) >= 2) == (kernels != "never invariant")  # users asking at once shared steps, or took turns

    long = Engine(base.model, base.tokenizer, max_new_tokens=400, batch_size=4)
    talker = load_variant("prompted", tiny_corpus, long)
    stream = stream_columns({"prompted": talker}, "Tell me everything about bicycles.")
    next(stream)  # prompts built
    next(stream)  # the first token arrived
    stream.close()  # the user went away
    long_sched = scheduler_for(long)
    deadline = time.monotonic() + 60
    while not long_sched.finished and time.monotonic() < deadline:
        time.sleep(0.05)
    reason, tokens = long_sched.finished[-1]
    assert reason == "cancelled" and tokens < 400


# -- untrusted text, logins and uploads (issue #28) -------------------------------------------
def test_markdown_images_from_documents_or_models_stay_text():
    from markdown_it import MarkdownIt

    from assistant.serve.app import as_text, render_sources

    pixel = "See ![logo](https://tracker.example/p.png?u=1) and ![ref][1]\n\n[1]: https://tracker.example/q.png"
    assert "<img" not in MarkdownIt().render(as_text(pixel)) and "<img" in MarkdownIt().render(pixel)
    src = Source(path="docs/a.md", heading="![h](https://tracker.example/h.png)", text=pixel, score=0.9, rank=1)
    assert "<img" not in MarkdownIt().render(render_sources([src]))


def test_each_wrong_login_makes_the_next_attempt_wait_longer():
    from assistant.serve.app import LoginThrottle

    waits: list[float] = []
    check = LoginThrottle("ann", "pw", cap=5.0, sleep=waits.append)
    assert [check("ann", p) for p in ("a", "b", "c", "d", "e")] == [False] * 5
    assert check("ann", "pw") and waits == [1.0, 2.0, 4.0, 5.0, 5.0]  # capped
    assert check("ann", "pw") and len(waits) == 5  # a right password resets the wait
    assert not check("bob", "pw") and not check("ann", "PW")


def test_a_bad_gradio_port_variable_is_one_line():
    env = {**os.environ, "GRADIO_SERVER_PORT": "abc"}
    r = subprocess.run([sys.executable, "app.py", "tests/fixtures/tiny"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == "error: GRADIO_SERVER_PORT='abc' is not a port number; set it to e.g. 7860, or unset it"


def test_the_served_app_throttles_logins_and_takes_no_uploads(tiny_corpus_dir, tmp_path):
    import http.cookiejar
    import urllib.error
    import urllib.parse
    import urllib.request

    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "app.log"
    proc = subprocess.Popen([sys.executable, "app.py", str(tiny_corpus_dir), "--port", str(port), "--auth", "ann:pw"],
                            cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def post(path: str, data: bytes, headers: dict | None = None) -> int:
        try:
            return opener.open(urllib.request.Request(url + path, data=data, headers=headers or {}), timeout=30).status
        except urllib.error.HTTPError as e:
            return e.code

    try:
        deadline = time.time() + 90
        while True:
            assert proc.poll() is None and time.time() < deadline, log.read_text()
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.3)
        start = time.time()
        wrong = [post("/login", urllib.parse.urlencode({"username": "ann", "password": p}).encode())
                 for p in ("x", "y", "z")]
        assert wrong == [400, 400, 400] and time.time() - start >= 2.5  # waited 1 s, then 2 s
        assert post("/login", urllib.parse.urlencode({"username": "ann", "password": "pw"}).encode()) == 200
        body = b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"x.bin\"\r\n\r\n" + b"x" * 2000 + \
            b"\r\n--b--\r\n"
        assert post("/gradio_api/upload", body, {"Content-Type": "multipart/form-data; boundary=b"}) == 413
    finally:
        proc.kill()
        proc.wait()
