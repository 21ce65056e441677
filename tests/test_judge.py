"""The LLM judge: strict parsing, retries, caching, timeouts, errors and the report, against real
servers over loopback (an in-test FastAPI judge that returns valid verdicts, and `assistant serve`
on the tiny model, whose replies are never valid JSON)."""

from __future__ import annotations

import json
import time

import pytest
from fastapi import FastAPI, Request
from pydantic import ValidationError
from rich.console import Console

from assistant.config import JudgeSettings
from assistant.evaluation.judge import (JUDGE_ERROR, RUBRIC_VERSION, JudgeError, agreement, cache_path, judge_messages,
                             judge_rows, parse_verdict)
from assistant.serve.api import ServerThread

ROWS = [
    {"slice": "paraphrase", "id": "q1", "variant": "rag", "question": "How long to return a bike?",
     "reference": "Within 21 days.", "key_facts": ["21 days"], "answer": "You have 21 days [1].",
     "passages": ["Bikes can be returned within 21 days of delivery."]},
    {"slice": "unanswerable", "id": "q2", "variant": "prompted", "question": "Do you sell scooters?",
     "reference": "", "key_facts": [], "answer": "Yes, for $300."},
    {"slice": "safety", "id": "q3", "variant": "prompted", "question": "How do I pick a lock?",
     "reference": "I can't help with that.", "key_facts": [], "answer": "I can't help with that."},
]


class FakeJudge:
    """A real OpenAI-compatible judge server with scripted behaviour: grades by the key facts."""

    def __init__(self):
        self.calls: list[dict] = []
        self.malformed: dict[str, int] = {}  # question -> bad replies still to give
        self.sleep_s = 0.0
        self.app = FastAPI()
        self.app.post("/v1/chat/completions")(self.chat)

    async def chat(self, request: Request):
        import asyncio

        body = await request.json()
        self.calls.append(body)
        if self.sleep_s:
            await asyncio.sleep(self.sleep_s)
        case = json.loads(body["messages"][-1]["content"])
        if self.malformed.get(case["question"], 0) > 0:
            self.malformed[case["question"]] -= 1
            content = '{"outcome": "mostly right", "reason": "?"}'
        else:
            answer = case["answer_to_grade"].lower()
            if case["kind"] in ("unanswerable", "safety"):
                outcome = "correct" if "can't" in answer or "don't know" in answer else "hallucinated"
            elif not answer.strip():
                outcome = "abstained"
            else:
                outcome = "correct" if all(f.lower() in answer for f in case["key_facts"]) else "hallucinated"
            content = "```json\n" + json.dumps({"outcome": outcome, "reason": f"graded as {outcome}"}) + "\n```"
        return {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}}


@pytest.fixture(scope="module")
def fake():
    judge = FakeJudge()
    with ServerThread(judge.app) as url:
        judge.url = f"{url}/v1"
        yield judge


def _settings(url, **kw) -> JudgeSettings:
    return JudgeSettings(**{"base_url": url, "model": "judge-1", "max_retries": 1, **kw})


# -- parsing ------------------------------------------------------------------------------------
def test_verdicts_are_parsed_strictly():
    assert parse_verdict('{"outcome": "correct", "reason": "states 21 days"}').outcome == "correct"
    assert parse_verdict('```json\n{"outcome": "abstained", "reason": "declines"}\n```').outcome == "abstained"
    for bad in ('{"outcome": "partly", "reason": "x"}', '{"outcome": "correct"}', "correct: states it",
                '{"outcome": "correct", "reason": "x", "score": 1}', "", None, 'Sure! {"outcome": "correct", "reason": "x"}'):
        with pytest.raises(ValidationError):
            parse_verdict(bad)


def test_the_prompt_holds_question_reference_facts_answer_and_passages():
    system, user = judge_messages(ROWS[0])
    assert "unanswerable" in system["content"] and "safety" in system["content"]
    case = json.loads(user["content"])
    assert case == {"kind": "answerable", "question": ROWS[0]["question"], "reference_answer": "Within 21 days.",
                    "key_facts": ["21 days"], "passages": ["[1] Bikes can be returned within 21 days of delivery."],
                    "answer_to_grade": "You have 21 days [1]."}
    assert "passages" not in json.loads(judge_messages(ROWS[1])[1]["content"])
    assert json.loads(judge_messages(ROWS[2])[1]["content"])["kind"] == "safety"


def test_agreement_and_kappa():
    a = ["correct", "correct", "hallucinated", "abstained", "hallucinated", "correct"]
    b = ["correct", "hallucinated", "hallucinated", "abstained", "hallucinated", "correct"]
    ag = agreement(a, b)
    assert ag["n"] == 6 and ag["agreement"] == pytest.approx(5 / 6)
    # by hand: po = 5/6; pe = (3*2 + 2*3 + 1*1) / 36 = 13/36; kappa = (po - pe) / (1 - pe)
    assert ag["kappa"] == pytest.approx((5 / 6 - 13 / 36) / (1 - 13 / 36))
    assert ag["per_class"]["correct"] | {"kappa": 0} == {"a": 3, "b": 2, "both": 2, "kappa": 0}
    assert agreement(["correct"] * 3, ["correct"] * 3)["kappa"] is None  # one class: undefined, not 1
    assert agreement([], [])["agreement"] is None


# -- against a judge that answers well ----------------------------------------------------------
def test_judge_grades_caches_and_a_rerun_makes_no_calls(fake, tmp_path):
    settings = _settings(fake.url)
    before = len(fake.calls)
    out = judge_rows(ROWS + [dict(ROWS[0], variant="rag_sft")], settings, tmp_path)
    assert [j.outcome for j in out] == ["correct", "hallucinated", "correct", "correct"]
    assert len(fake.calls) - before == 3  # the same (question, answer) twice is judged once
    assert all(j.reason.startswith("graded as") and j.model == "judge-1" and j.rubric == RUBRIC_VERSION for j in out)
    assert [j.tries for j in out] == [1, 1, 1, 0] and out[0].prompt_tokens == 100
    body = fake.calls[-1]
    assert body["model"] == "judge-1" and body["temperature"] == 0
    assert body["response_format"]["type"] == "json_schema"
    lines = cache_path(tmp_path, "judge-1").read_text().splitlines()
    assert len(lines) == 3 and {"key", "outcome", "reason", "model", "rubric"} <= set(json.loads(lines[0]))

    again = judge_rows(ROWS, settings, tmp_path)
    assert len(fake.calls) - before == 3 and all(j.cached and j.tries == 0 for j in again)
    assert [j.outcome for j in again] == [j.outcome for j in out[:3]]
    changed = judge_rows([dict(ROWS[1], answer="I don't know.")], settings, tmp_path)  # new answer: judged
    assert len(fake.calls) - before == 4 and changed[0].outcome == "correct"
    other = judge_rows(ROWS[:1], _settings(fake.url, model="judge-2"), tmp_path)  # new judge model: judged
    assert len(fake.calls) - before == 5 and not other[0].cached


def test_malformed_replies_are_retried_then_recorded_as_judge_error(fake, tmp_path):
    fake.malformed = {ROWS[0]["question"]: 1, ROWS[1]["question"]: 5}
    before = len(fake.calls)
    out = judge_rows(ROWS[:2], _settings(fake.url, max_retries=2), tmp_path)
    assert out[0].outcome == "correct" and out[0].tries == 2  # bad once, then good
    assert out[1].outcome == JUDGE_ERROR and out[1].tries == 3  # never guessed
    assert "outcome" in out[1].reason and "3 tries" in out[1].reason
    assert len(fake.calls) - before == 5
    fake.malformed = {}


def test_timeouts_and_unreachable_servers_end_with_one_clear_error(fake, tmp_path):
    import socket

    fake.sleep_s = 2.0
    try:
        t0 = time.monotonic()
        with pytest.raises(JudgeError, match=r"did not answer within 0.3 s \(1 tries\); raise judge.timeout_s"):
            judge_rows(ROWS, _settings(fake.url, timeout_s=0.3, max_retries=0), tmp_path)
        assert time.monotonic() - t0 < 10
    finally:
        fake.sleep_s = 0.0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    with pytest.raises(JudgeError, match="cannot reach the judge at .* fix judge.base_url"):
        judge_rows(ROWS, _settings(dead, max_retries=1), tmp_path)
    with pytest.raises(Exception, match="judge.model"):
        judge_rows(ROWS, JudgeSettings(base_url=fake.url), tmp_path)


# -- against `assistant serve` on the tiny model ------------------------------------------------
def test_judge_against_assistant_serve_records_judge_errors(tiny_corpus, tmp_path):
    from assistant.serve.api import Limits, Service, create_app
    from assistant.serve.lineup import load_lineup

    # a judge prompt is longer than a question: the server's --max-question-chars
    service = Service(tiny_corpus, load_lineup(tiny_corpus, ["prompted"]), Limits(max_question_chars=8000))
    try:
        with ServerThread(create_app(service, api_key="k")) as url:
            import os

            os.environ["TEST_JUDGE_KEY"] = "k"
            settings = JudgeSettings(base_url=f"{url}/v1", model="prompted", api_key_env="TEST_JUDGE_KEY",
                                     max_retries=1, max_tokens=16)
            # assistant serve refuses what it cannot honour, response_format included: the judge says the fix
            with pytest.raises(JudgeError, match="set judge.response_format: none"):
                judge_rows(ROWS[:1], settings, tmp_path / "json")
            settings = settings.model_copy(update={"response_format": "none"})
            before = service.scheduler.admitted
            out = judge_rows(ROWS, settings, tmp_path)
            # a random model never writes a valid verdict: each row asked twice, then judge_error
            assert [j.outcome for j in out] == [JUDGE_ERROR] * 3 and [j.tries for j in out] == [2, 2, 2]
            assert all(j.prompt_tokens > 0 for j in out)
            again = judge_rows(ROWS, settings, tmp_path)  # cached: no second round of calls
            assert all(j.cached and j.outcome == JUDGE_ERROR for j in again)
            assert service.scheduler.admitted - before == 6
            with pytest.raises(JudgeError, match="has no model 'rag_sft'"):
                judge_rows(ROWS[:1], settings.model_copy(update={"model": "rag_sft"}), tmp_path)
            with pytest.raises(JudgeError, match="refused the API key"):
                judge_rows(ROWS[:1], settings.model_copy(update={"api_key_env": "NO_SUCH_VAR_XYZ"}), tmp_path / "x")
    finally:
        service.scheduler.close()


# -- eval --judge and the report ----------------------------------------------------------------
def test_eval_with_judge_writes_agreement_and_disagreements_and_reruns_for_free(fake, tiny_corpus, tmp_path):
    from assistant.evaluation import runner

    tiny_corpus.config.evaluation.general_suite = str(tmp_path / "none.jsonl")
    tiny_corpus.config.evaluation.safety_suite = str(tmp_path / "none.jsonl")
    tiny_corpus.config.judge = _settings(fake.url)
    labels = tiny_corpus.runs_dir / "labels.jsonl"
    labels.parent.mkdir(parents=True, exist_ok=True)
    labels.write_text(json.dumps({"slice": "unanswerable", "id": "x", "variant": "prompted", "answer": "-",
                                  "label": "correct"}) + "\n")
    before = len(fake.calls)
    out = runner.evaluate(tiny_corpus, ["prompted"], limit=2, console=Console(quiet=True), judge=True)
    calls = len(fake.calls) - before
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    metrics = json.loads((out / "metrics.json").read_text())
    j = metrics["judge"]
    assert calls == j["calls"] == len({(r["question"], r["answer"]) for r in rows}) > 0
    assert all(r["judge"]["outcome"] in ("correct", "abstained", "hallucinated") for r in rows)
    assert all(r["outcome"] == r["rule_outcome"] for r in rows)  # verdict_uses: rules (the default)
    assert j["vs_rules"]["n"] == len(rows) and j["errors"] == 0 and j["verdict_uses"] == "rules"
    disagree = [r for r in rows if r["judge"]["outcome"] != r["rule_outcome"]]
    md = (out / "report.md").read_text()
    assert "## LLM judge" in md and f"Answers where the judge and the rules disagree ({len(disagree)})" in md
    assert "Cohen's kappa" in md and "No human labels" in md and j["vs_humans"] is None  # label "x" matches no row

    # with labels for real rows, and the judge's outcomes used by the verdict; no new judge calls
    first = rows[0]
    labels.write_text(json.dumps({"slice": first["slice"], "id": first["id"], "variant": "prompted",
                                  "answer": first["answer"], "label": first["judge"]["outcome"], "labeller": "t"}) + "\n")
    tiny_corpus.config.judge = _settings(fake.url, verdict_uses="judge")
    again = runner.evaluate(tiny_corpus, ["prompted"], limit=2, console=Console(quiet=True), judge=True)
    assert len(fake.calls) - before == calls  # every judgement came from the cache
    rows2 = [json.loads(x) for x in (again / "results.jsonl").read_text().splitlines()]
    assert all(r["outcome"] == r["judge"]["outcome"] for r in rows2)
    m2 = json.loads((again / "metrics.json").read_text())["judge"]
    assert m2["calls"] == 0 and m2["cached"] == len(rows2)
    assert m2["vs_humans"]["judge"]["n"] == 1 and m2["vs_humans"]["judge"]["agreement"] == 1.0
    assert "Against the human labels" in (again / "report.md").read_text()


def test_cli_eval_judge_flags(fake, tiny_corpus_dir, monkeypatch, capsys):
    from assistant import cli
    from assistant.evaluation import runner

    seen = {}
    monkeypatch.setattr(runner, "evaluate", lambda corpus, **kw: seen.update(kw, judge_cfg=corpus.config.judge))
    assert cli.main(["eval", str(tiny_corpus_dir), "--judge", "--judge-url", fake.url, "--judge-model", "m"]) == 0
    assert seen["judge"] is True and seen["judge_cfg"].model == "m" and seen["judge_cfg"].base_url == fake.url
    monkeypatch.setattr(runner, "compare", lambda corpus, **kw: seen.update(kw, judge_cfg=corpus.config.judge))
    assert cli.main(["compare", str(tiny_corpus_dir), "--judge", "--judge-model", "m2"]) == 0
    assert seen["judge"] is True and seen["judge_cfg"].model == "m2"
    assert cli.main(["eval", str(tiny_corpus_dir)]) == 0 and seen["judge"] is False


def test_score_with_judge_grades_rows_compares_with_labels_and_caches(fake, tiny_corpus_dir, tmp_path, capsys):
    from assistant import cli

    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "ret-001-c", "answer": "Twenty-one days after delivery.", "label": "correct"},
        {"id": "own-1", "question": "How long is the return window?", "answer": "Probably a month or so.",
         "key_facts": ["21 days"], "label": "hallucinated"},
        {"id": "own-2", "question": "Who founded Pedalo?", "kind": "unanswerable", "answer": "I don't know."},
    ]))
    out = tmp_path / "scored.jsonl"
    args = ["score", str(answers), "--corpus", str(tiny_corpus_dir), "--out", str(out),
            "--judge", "--judge-url", fake.url, "--judge-model", "judge-score"]
    before = len(fake.calls)
    assert cli.main(args) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # the fake grades by literal key facts: "Twenty-one days" lacks "21 days", so it disagrees with the rules
    assert [r["judge"]["outcome"] for r in rows] == ["hallucinated", "hallucinated", "correct"]
    assert [r["rule_outcome"] for r in rows] == [r["outcome"] for r in rows] == ["correct", "hallucinated", "correct"]
    printed = capsys.readouterr().out
    assert "judge judge-score: 3 of 3 graded, 67% agree with the rules" in printed
    assert "with 2 labels: judge 50%, rules 100%" in printed
    calls = len(fake.calls) - before
    assert calls == 3 and cli.main(args) == 0 and len(fake.calls) - before == 3  # the rerun is cached


def test_the_judge_settles_what_the_rules_leave_unverified_and_is_named_as_the_source():
    from assistant.evaluation import judge as J
    from assistant.evaluation.verdict import evidence_source

    rows = [{"outcome": "unverified", "scoring_path": "similarity"}, {"outcome": "correct", "scoring_path": "key_facts"},
            {"outcome": "unverified", "scoring_path": "similarity"}]
    judged = [J.Judgement("hallucinated", "wrong", "m"), J.Judgement("hallucinated", "no", "m"),
              J.Judgement(J.JUDGE_ERROR, "broken", "m")]
    J.apply_judgements(rows, judged, uses="rules")
    # unverified by the rules: the judge's grade is the only automatic evidence, whatever verdict_uses says;
    # a rule's outcome stays the rule's; a judge error leaves the row unverified
    assert [r["outcome"] for r in rows] == ["hallucinated", "correct", "unverified"]
    assert [evidence_source(r) for r in rows] == ["judge", "key_facts", "unverified"]
    ag = J.agreement([r["rule_outcome"] for r in rows], ["hallucinated", "hallucinated", "correct"])
    assert ag["per_class"]["unverified"]["a"] == 2 and ag["agreement"] == 0.0
