import pytest

from assistant.config import ModelSettings
from assistant.generation import Engine
from assistant.models import TINY_ALIAS, load_model


@pytest.fixture(scope="module")
def engine():
    model, tok = load_model(ModelSettings(name=TINY_ALIAS))
    return Engine(model, tok, max_new_tokens=6, batch_size=4)


def convs(*questions):
    return [[{"role": "user", "content": q}] for q in questions]


QUESTIONS = ["hi", "What is the return window for bikes in your shop?", "Why?", "Tell me about tune-ups and prices.",
             "ok", "How much does return shipping cost for a damaged bike?"]


def test_batched_equals_one_by_one_and_keeps_order(engine):
    batched = engine.generate(convs(*QUESTIONS), batch_size=4)
    single = engine.generate(convs(*QUESTIONS), batch_size=1)
    assert [g.text for g in batched] == [g.text for g in single]
    assert [g.prompt_tokens for g in batched] == [g.prompt_tokens for g in single]
    assert batched[0].prompt_tokens < batched[1].prompt_tokens  # input order, not length order


def test_deterministic_and_bounded(engine):
    a = engine.generate(convs(*QUESTIONS))
    b = engine.generate(convs(*QUESTIONS))
    assert [g.text for g in a] == [g.text for g in b]
    assert all(0 <= g.completion_tokens <= 6 for g in a)
    assert all(g.latency_s > 0 for g in a)
    assert len(engine.generate(convs("x"), max_new_tokens=2)) == 1


def test_stream_grows_to_the_greedy_answer(engine):
    q = convs("What is the return window for bikes in your shop?")[0]
    parts = list(engine.stream(q))
    assert parts, "stream yielded nothing"
    assert all(parts[i + 1].startswith(parts[i]) for i in range(len(parts) - 1))
    assert parts[-1].strip() == engine.generate([q])[0].text
