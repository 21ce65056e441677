"""Variants answered by an OpenAI-compatible server: a second `assistant serve` (tiny model) is the server."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest

from assistant.config import ConfigError, load_config
from assistant.corpus.corpus import load_corpus
from assistant.model.remote import RemoteEngine, ServerError, server_problems
from assistant.serve.api import Limits, ServerThread, Service, create_app
from assistant.serve.lineup import load_lineup
from assistant.variants import open_engine
from tiny_model import TINY, copy_tiny_corpus

KEY = "sk-remote-test"


def _corpus_dir(tmp: Path, name: str, model_extra: str = "") -> Path:
    root = tmp / name
    copy_tiny_corpus(root)
    text = (root / "corpus.yaml").read_text().replace(f"name: {TINY}", f"name: {TINY}\n  dtype: float32\n" + model_extra)
    (root / "corpus.yaml").write_text(text + f"runs_dir: {tmp / name / 'runs'}\n")
    return root


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    """The answering server: `assistant serve` of the tiny corpus (prompted), with an API key."""
    corpus = load_corpus(_corpus_dir(tmp_path_factory.mktemp("server"), "tiny"))
    # As in test_server: the random model's greedy answer is newlines only; banning them gives text.
    config = open_engine(corpus).model.generation_config
    config.suppress_tokens, config.no_repeat_ngram_size = [198], 1
    # The client sends whole prompts (passages included) as its question: room for them.
    service = Service(corpus, load_lineup(corpus, ["prompted"]),
                      Limits(max_question_chars=20_000, max_input_chars=50_000, max_batch=8))
    with ServerThread(create_app(service, api_key=KEY)) as url:
        yield f"{url}/v1", service


@pytest.fixture
def remote_corpus(stand_in, tmp_path, monkeypatch):
    url, _ = stand_in
    monkeypatch.setenv("STAND_IN_KEY", KEY)
    root = _corpus_dir(tmp_path, "client", f"  server:\n    base_url: {url}\n    model: prompted\n"
                                           "    api_key_env: STAND_IN_KEY\n    max_concurrency: 2\n")
    return load_corpus(root)


def test_config_names_a_bad_server_setting(tmp_path):
    (tmp_path / "corpus.yaml").write_text("name: x\nmodel:\n  server:\n    base_url: localhost:8000\n"
                                          "    model: m\n    api_key_env: sk-123\n")
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "corpus.yaml")
    lines = str(e.value).splitlines()
    assert any(":4: model.server.base_url" in x and "http://127.0.0.1:8000/v1" in x for x in lines), lines
    assert any(":6: model.server.api_key_env" in x and "never the key itself" in x for x in lines), lines


def test_the_engine_is_remote_and_concurrency_is_bounded(remote_corpus, stand_in):
    _, service = stand_in
    engine = open_engine(remote_corpus)
    assert isinstance(engine, RemoteEngine) and engine.model_for(None) == "prompted"
    sched = service.scheduler
    before, steps_before = sched.admitted, len(sched.batches)
    questions = [[{"role": "user", "content": f"Question number {i}?"}] for i in range(6)]
    gens = engine.generate(questions)
    steps = list(sched.batches)[steps_before:]  # live rows of each decoding step on the server
    assert sched.admitted - before == 6 and max(steps) <= 2, steps  # max_concurrency: 2
    assert all(g.text and g.completion_tokens > 0 for g in gens)
    assert engine.generate(questions[:1])[0].text == gens[0].text  # greedy: the same answer again
    # streaming (the chat and the API) gives the whole answer's text
    assert list(engine.stream(questions[0]))[-1].strip() == gens[0].text


def test_eval_runs_through_the_server_and_keys_answers_by_it(remote_corpus, stand_in, capsys):
    from assistant import cli
    from assistant.evaluation import runner
    from assistant.variants.rag import RagVariant

    RagVariant.build(remote_corpus)  # retrieval stays ours: the index is local
    _, service = stand_in
    before = service.scheduler.admitted
    assert cli.main(["eval", str(remote_corpus.root), "--variants", "prompted", "rag", "--limit", "2"]) == 0
    assert service.scheduler.admitted > before  # the server answered
    run = max((remote_corpus.runs_dir / "eval").glob("2*"))
    rows = [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines()]
    assert {r["variant"] for r in rows} == {"prompted", "rag"}
    card = json.loads((run / "metrics.json").read_text())["environment"]
    assert card["decoding"]["server"] == remote_corpus.config.model.server.base_url
    assert card["decoding"]["model"] == "prompted" and card["generation"] is None
    assert f"the server {card['decoding']['server']}, model prompted" in (run / "report.md").read_text()
    # `assistant ask` goes through the server too.
    capsys.readouterr()
    assert cli.main(["ask", str(remote_corpus.root), "--variant", "prompted", "--json", rows[0]["question"]]) == 0
    asked = json.loads(capsys.readouterr().out)
    prompted = next(r for r in rows if r["variant"] == "prompted" and r["question"] == rows[0]["question"])
    assert asked["text"] == prompted["answer"]
    # Another server model is another cache key.
    key = runner.ready_variants(remote_corpus, ["prompted"], runner.Console(quiet=True))[0][1]
    remote_corpus.config.model.server.model = "other"
    assert runner.ready_variants(remote_corpus, ["prompted"], runner.Console(quiet=True))[0][1] != key


def test_the_api_serves_through_the_server(remote_corpus):
    service = Service(remote_corpus, load_lineup(remote_corpus, ["prompted"]))
    variant = service.lineup.variants["prompted"]
    question = "How long is the return window?"
    expected = variant.engine.generate([variant.prompt(question).messages])[0].text
    with ServerThread(create_app(service)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=60)
        msgs = [{"role": "user", "content": question}]
        r = client.chat.completions.create(model="prompted", messages=msgs)
        assert r.choices[0].message.content == expected
        streamed = client.chat.completions.create(model="prompted", messages=msgs, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in streamed) == expected


def test_server_problems_name_what_is_wrong(remote_corpus, monkeypatch):
    server = remote_corpus.config.model.server
    assert server_problems(server) == []
    missing = server_problems(server, ["sft"])
    assert len(missing) == 1 and "'sft'" in missing[0] and "--lora-modules" in missing[0]
    assert "fix model.server.model" in server_problems(server.model_copy(update={"model": "nope"}))[0]
    monkeypatch.setenv("STAND_IN_KEY", "wrong")
    assert "refused the API key" in server_problems(server)[0]
    gone = server.model_copy(update={"base_url": "http://127.0.0.1:9/v1"})
    assert "cannot reach" in server_problems(gone)[0]
    engine = RemoteEngine(gone, open_engine(remote_corpus).tokenizer)
    with pytest.raises(ServerError, match="cannot reach"):
        engine.generate([[{"role": "user", "content": "hi"}]])


def test_check_validates_the_server_before_any_long_work(remote_corpus, capsys):
    from assistant import checks

    root = remote_corpus.root
    assert checks.check_corpus(root, near_duplicate=None) == 0
    yaml = (root / "corpus.yaml").read_text()
    (root / "corpus.yaml").write_text(yaml.replace("model: prompted", "model: nope"))
    capsys.readouterr()
    assert checks.check_corpus(root, near_duplicate=None) == 2
    out = capsys.readouterr().out
    line = yaml.splitlines().index("  server:") + 1
    assert f"corpus.yaml:{line}" in out and "does not list model 'nope'" in out and "fix model.server.model" in out
