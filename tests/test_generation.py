import contextlib
import tempfile

import pytest
import torch

from assistant.config import ModelSettings
from assistant.model import invariance
from assistant.model.engine import DecodePlan, Engine
from assistant.model.loading import load_model
from assistant.runtime import torch_threads
from tiny_model import TINY


@pytest.fixture(scope="module")
def engine():
    model, tok = load_model(ModelSettings(name=TINY))
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


# -- batch invariance: the same bytes alone, in any batch, at any padding ---------------------------
def supported_dtypes():
    """fp32 everywhere, bf16 only where the CPU computes it natively (else it is emulated and not used)."""
    from assistant.model import loading as models

    return ["float32"] + (["bfloat16"] if models.cpu_supports_bf16() or torch.cuda.is_available() else [])


FILLERS = ["hi", "Why?", "Tell me everything about returns, refunds, exchanges, store credit, shipping labels, "
           "damaged goods, warranty claims, opening hours, tune-up prices and the repair workshop, in detail, "
           "with every number you know, and then summarise it all again in one long paragraph please. " * 3,
           "Prices?", "How do I book a tune-up for my daughter's bike before the summer holidays start?"]


def padded_batch(question: str, size: int = 16) -> list[str]:
    """`question` first, then fillers far shorter and far longer, so it is padded and pads others."""
    return [question] + [FILLERS[i % len(FILLERS)] + f" ({i})" * (i % 3) for i in range(size - 1)]


def scores_alone_and_in_batch(engine, question, adapter=None):
    """Every decoding step's logits for `question` alone and as row 0 of a left-padded batch of 16."""
    out = []
    for batch in ([question], padded_batch(question)):
        ids = [engine.tokenizer(engine.render([{"role": "user", "content": q}]), add_special_tokens=False)["input_ids"]
               for q in batch]
        ids = ids + [ids[-1]] * (engine.plan().rows - len(ids))  # as Engine.generate fills a short batch
        width = max(map(len, ids))
        pad = engine.tokenizer.pad_token_id
        x = torch.tensor([[pad] * (width - len(r)) + r for r in ids], device=engine.device)
        m = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in ids], device=engine.device)
        with engine.using(adapter), torch.inference_mode():
            gen = engine.model.generate(input_ids=x, attention_mask=m, max_new_tokens=6, do_sample=False,
                                        pad_token_id=pad, output_scores=True, return_dict_in_generate=True)
        out.append(torch.stack([s[0] for s in gen.scores]))
    return out


@pytest.fixture(scope="module", params=supported_dtypes())
def dtype_engine(request):
    model, tok = load_model(ModelSettings(name=TINY, dtype=request.param))
    assert str(model.dtype) == f"torch.{request.param}"
    engine = Engine(model, tok, max_new_tokens=12, batch_size=16)
    lora_model, _ = load_model(ModelSettings(name=TINY, dtype=request.param))
    with tempfile.TemporaryDirectory() as d:
        from peft import LoraConfig, get_peft_model

        get_peft_model(lora_model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)).save_pretrained(d)
        engine.add_adapter("lora", d)
    return engine


@pytest.mark.parametrize("adapter", [None, "lora"])
def test_padding_and_batch_neighbours_do_not_change_a_single_bit(dtype_engine, adapter):
    plan = dtype_engine.plan()
    if plan.alone:  # e.g. a GPU or an AMX CPU whose matrix kernels change with the row count
        pytest.skip("no batch-invariant row count on this device: the engine decodes each question alone")
    question = "What is the return window for bikes in your shop?"
    with dtype_engine.decoding_threads(plan):
        alone, batched = scores_alone_and_in_batch(dtype_engine, question, adapter)
    assert torch.equal(alone, batched)  # the logits themselves, not only their argmax


@pytest.mark.parametrize("adapter", [None, "lora"])
def test_engine_answers_are_byte_identical_alone_and_in_a_padded_batch_of_16(dtype_engine, adapter):
    for question in ("hi", "What is the return window for bikes in your shop?", FILLERS[2]):
        alone = dtype_engine.generate([[{"role": "user", "content": question}]], adapter=adapter)[0]
        batch = dtype_engine.generate([[{"role": "user", "content": q}] for q in padded_batch(question)],
                                      adapter=adapter, batch_size=16)
        assert batch[0].text == alone.text and batch[0].completion_tokens == alone.completion_tokens
        assert batch[0].batch_size == len(set(padded_batch(question)))  # identical prompts are decoded once


def test_plain_sdpa_pads_with_the_right_mask_and_positions_up_to_rounding():
    """Without assistant/attention.py padding moves the logits by rounding only (4e-5 in fp32 on the
    real model): the mask and position ids of the padded path are right, the sums' order is not."""
    model, tok = load_model(ModelSettings(name=TINY, dtype="float32"))
    plain = Engine(model, tok, max_new_tokens=6, batch_invariant=False)
    assert model.config._attn_implementation == "sdpa"
    alone, batched = scores_alone_and_in_batch(plain, "What is the return window for bikes in your shop?")
    assert torch.allclose(alone, batched, atol=1e-3)  # right positions and mask: differences are rounding only


# -- the decoding loop: continuous batching, generate()'s numbers ---------------------------------
def varied_engine(**kw) -> Engine:
    """The tiny model with weights that say varied tokens (its own say "\n" forever)."""
    from transformers import AutoConfig, LlamaForCausalLM

    _, tok = load_model(ModelSettings(name=TINY))
    config = AutoConfig.from_pretrained(TINY)
    config.initializer_range = 1.0
    torch.manual_seed(0)
    return Engine(LlamaForCausalLM(config).eval(), tok, **kw)


SYSTEM = "You are the bike shop's assistant. Answer in one short sentence, from the shop's own policies only."


def with_system(*questions):
    return [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}] for q in questions]


@pytest.mark.parametrize("one_call", [True, False])
def test_rows_joining_and_leaving_decode_exactly_like_generate(one_call, monkeypatch):
    """Twelve prompts through four rows: each joins when a row frees up and leaves at its own
    end-of-sequence, and still gets the tokens `model.generate` gives the prompt alone; with a
    step's attention in one call per run of rows where this CPU allows it, and a call per row."""
    if not one_call:
        monkeypatch.setattr(invariance, "batched_decoding", lambda *args: None)
    engine = varied_engine(max_new_tokens=12, batch_size=4)
    if bool(engine.plan().attention) != one_call:
        pytest.skip("this CPU's attention kernel gives rows other bits in one call (invariance.batched_decoding)")
    prompts = convs(*QUESTIONS[:4], *padded_batch("What is the return window for bikes in your shop?", 8))
    monkeypatch.setattr(engine, "_stop_ids", lambda: set())
    free = [engine.row(m) for m in prompts]
    list(engine.run(free))
    stop = {r.tokens[(3 * i) % 13] for i, r in enumerate(free) if (3 * i) % 13 < 12}  # rows end at many steps
    monkeypatch.setattr(engine, "_stop_ids", lambda: stop)
    steps = engine.stats.row_steps
    mine = engine.generate(prompts)
    assert len({g.completion_tokens for g in mine}) > 3
    assert engine.stats.row_steps - steps < len(prompts) * 12  # finished rows did not stay aboard
    for prompt, gen in zip(prompts, mine):
        ids = torch.tensor([engine.tokenizer(engine.render(prompt), add_special_tokens=False)["input_ids"]])
        with torch.inference_mode():
            out = engine.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                                        do_sample=False, pad_token_id=engine.tokenizer.pad_token_id,
                                        eos_token_id=sorted(stop))[0, ids.size(1):].tolist()
        expected = out[:next((k for k, t in enumerate(out) if t in stop), len(out))]
        assert gen.completion_tokens == len(expected)
        assert gen.text == engine.tokenizer.decode(expected, skip_special_tokens=True).strip()


@pytest.mark.parametrize("one_call", [True, False])
def test_an_answer_is_the_same_alone_and_amid_rows_joining_and_leaving_at_any_step(one_call, monkeypatch):
    """Batch invariance under continuous batching: every prompt, decoded alone, equals the same
    prompt decoded in a batch where others join (longer and shorter, other token limits) and leave
    at other steps, for two slot counts; with a step's attention in one call per run of rows where
    this CPU allows it (invariance.batched_decoding), and with a call per row."""
    if not one_call:
        monkeypatch.setattr(invariance, "batched_decoding", lambda *args: None)
    engine = varied_engine(max_new_tokens=10, batch_size=4)
    if bool(engine.plan().attention) != one_call:
        pytest.skip("this CPU's attention kernel gives rows other bits in one call (invariance.batched_decoding)")
    prompts = with_system(*QUESTIONS) + convs(FILLERS[2], "Prices?")
    limits = [10, 3, 7, 10, 1, 5, 10, 8]
    alone = []
    for m, n in zip(prompts, limits):
        row = engine.row(m, max_new_tokens=n)
        list(engine.run([row], slots=1))
        alone.append(row.tokens)
    for slots in (3, 8):
        rows = [engine.row(m, max_new_tokens=n) for m, n in zip(prompts, limits)]
        sizes = [len(d.live) for d in engine.run(rows[::-1], slots=slots)]
        assert [r.tokens for r in rows] == alone
        # the row limited to one token ends at its prefill and never takes a slot
        assert max(sizes) == min(slots, len(rows) - 1) and len(set(sizes)) > 1


@pytest.mark.parametrize("threads", [1, 2])
def test_prompts_prefilled_together_get_the_bits_they_get_alone(threads):
    """Newcomers that share a system turn are prefilled in one forward pass (right-padded, each row's
    attention over its own tokens, its first token from an LM head pass of plan.rows rows, alone
    too), where the plan found large batches exact; every answer is the prompt's own, alone. A
    prompt with fewer new tokens than plan.rows is prefilled on its own."""
    from assistant.runtime import torch_threads

    with torch_threads(threads):
        engine = varied_engine(max_new_tokens=8, batch_size=8)
        plan = engine.plan()
        if not plan.together:
            pytest.skip(f"this CPU's kernels are not exact in large batches at {threads} threads")
        prompts = with_system(*QUESTIONS, FILLERS[2], FILLERS[4])
        alone = [engine.generate([m], batch_size=1)[0].text for m in prompts]
        shapes = []
        hook = engine.model.register_forward_pre_hook(
            lambda mod, args, kw: shapes.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
        together = engine.generate(prompts, batch_size=8)
        hook.remove()
    assert [g.text for g in together] == alone
    rows = [engine.row(m) for m in prompts]
    short = sum(len(r.ids) - r.prefix < plan.rows for r in rows)
    prefills = [n for n, width in shapes if width > 1]
    assert max(prefills) > 1 and len(prefills) < len(prompts)  # several prompts in one pass
    assert prefills.count(1) >= short
    assert not engine.model.get_output_embeddings()._forward_pre_hooks  # the LM head is the model's own again


def test_the_system_turn_is_computed_once_and_shared_by_every_row():
    engine = varied_engine(max_new_tokens=4, batch_size=4)
    prompts = with_system(*QUESTIONS)
    rows = [engine.row(m) for m in prompts]
    system_turn = engine.tokenizer(engine.tokenizer.apply_chat_template(prompts[0][:1], tokenize=False),
                                   add_special_tokens=False)["input_ids"]
    assert {r.prefix for r in rows} == {len(system_turn)} and rows[0].ids[:rows[0].prefix] == system_turn
    calls = []
    engine.model.register_forward_pre_hook(lambda mod, args, kw: calls.append(kw["input_ids"].shape), with_kwargs=True)
    list(engine.run(rows))
    prefills = [tuple(s) for s in calls if s[1] > 1]  # (rows, tokens) of prompt passes, not decoding steps
    assert prefills.count((1, len(system_turn))) == 1  # once, not once per row
    rest = [s for s in prefills if s != (1, len(system_turn))]  # each row's own tokens, alone or together
    assert sum(n for n, _ in rest) == len(rows)
    assert all(width <= max(len(r.ids) - r.prefix for r in rows) for _, width in rest)  # never the system turn again
    assert engine.row(convs("hi")[0]).prefix == 0  # no system turn: nothing shared


PASSAGES = [f"[{i}] " + text * 4 for i, text in enumerate([
    "Returns are free within 30 days of delivery when the bike is unused and in its original box. ",
    "A tune-up costs 49 euros and takes two working days; book it online or in the workshop. ",
    "Damaged bikes are collected by courier at no cost within five days of the claim being filed. ",
    "Store credit never expires and can be used online or in any of the shop's three branches. "], 1)]


def rag(question, *passages):
    return "Passages:\n" + "\n\n".join(PASSAGES[i] for i in passages) + f"\n\nQuestion: {question}"


def chunks_of(rows):
    """Each row's chunks as (tokens up to the chunk's end, tokens in it), its prefix first."""
    return [[(tuple(r.ids[:end]), end - start) for start, end in zip((0, r.prefix, *r.ends), (r.prefix, *r.ends))
             if end > start] for r in rows]


@pytest.mark.parametrize("threads", [1, 2])
def test_prompts_that_share_passages_compute_them_once_and_answer_as_alone(threads, monkeypatch):
    """A prompt is prefilled chunk by chunk, cut at a blank line after MIN_CHUNK tokens (from its own
    tokens); a chunk another prompt has computed is copied from the prefix cache. Every answer is
    the prompt's own alone with an empty cache, whether its chunks were computed in company, copied
    from the cache, or computed alone."""
    from assistant.model import decoding

    with torch_threads(threads):
        engine = varied_engine(max_new_tokens=8, batch_size=8)
        prompts = with_system(rag("Returns?", 0, 1), rag("Tune-ups?", 0, 1), rag("Couriers?", 0, 2),
                              rag("Credit?", 3, 0), "Prices?")
        rows = [engine.row(m) for m in prompts]
        text = engine.tokenizer.decode
        for r in rows[:4]:
            assert len(r.ends) == 3 and r.ends[-1] == len(r.ids)  # a chunk per passage, then the question
            assert all(text(r.ids[:end]).endswith("\n\n") for end in r.ends[:-1])
            assert all(end - start >= decoding.MIN_CHUNK for start, end in zip((r.prefix, *r.ends), r.ends[:-1]))
        assert rows[4].ends == (len(rows[4].ids),)  # no blank line: one chunk
        cold = []
        for m in prompts:
            engine.prefixes.clear()
            cold.append(engine.generate([m], batch_size=1)[0].text)
        engine.prefixes.clear()
        before = engine.stats.prefilled
        together = [g.text for g in engine.generate(prompts, batch_size=8)]
        distinct = {chunk: n for row in chunks_of(rows) for chunk, n in row}
        assert together == cold
        assert engine.stats.prefilled - before == sum(distinct.values())  # each distinct chunk once
        # shared: the system turn (by five prompts) and three passages' chunks
        assert sum(distinct.values()) <= sum(len(r.ids) for r in rows) - 4 * rows[0].prefix - 3 * decoding.MIN_CHUNK
        before, copied = engine.stats.prefilled, engine.stats.cached
        warm = [engine.generate([m], batch_size=1)[0].text for m in prompts]
        assert warm == cold
        assert engine.stats.prefilled - before == sum(row[-1][1] for row in chunks_of(rows))  # the last chunks only
        assert engine.stats.cached - copied == sum(n for row in chunks_of(rows) for _, n in row[:-1])


def test_a_prompt_without_a_past_shares_a_pass_with_prompts_that_have_one():
    """A prompt at its first chunk (no system turn: nothing cached before it), the longest chunk of
    the pass so it leads it, and prompts after their system turn go through one prefill pass, the
    first left-padded to the others' past; each answer is its own alone."""
    engine = varied_engine(max_new_tokens=6, batch_size=8)
    if not engine.plan().together:
        pytest.skip("this CPU's kernels are not exact in large batches")
    question = "How do I book a tune-up for my daughter's bike before the summer holidays start?"
    prompts = convs("What are your prices, please?") + with_system(question, question + " Thanks a lot, really.")
    rows = [engine.row(m) for m in prompts]
    assert rows[0].prefix == 0 < rows[1].prefix
    chunks = [len(r.ids) - r.prefix for r in rows]
    assert 4 * min(chunks) >= 3 * max(chunks)  # chunks alike: one pass
    alone = [engine.generate([m], batch_size=1)[0].text for m in prompts]
    engine.prefixes.clear()
    passes = []
    hook = engine.model.register_forward_pre_hook(
        lambda mod, args, kw: passes.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
    together = [g.text for g in engine.generate(prompts, batch_size=8)]
    hook.remove()
    assert together == alone
    assert (3, max(chunks)) in passes  # the three prompts in one pass


def test_the_prefix_cache_keeps_the_most_recently_used_tokens():
    from assistant.model.decoding import PrefixCache

    def kv(tokens):
        return [(torch.zeros(1, 1, tokens, 2), torch.zeros(1, 1, tokens, 2))]

    cache = PrefixCache(tokens=10)
    cache.put(("a",), kv(4))
    cache.put(("b",), kv(4))
    assert cache.find(("a",)) is not None  # a is now the most recent
    cache.put(("c",), kv(4))
    assert cache.find(("b",)) is None and cache.find(("a",)) is not None and cache.find(("c",)) is not None
    cache.put(("d",), kv(30))  # larger than the whole budget: kept alone, as the last entry
    assert [cache.find((k,)) is not None for k in "acd"] == [False, False, True]
    assert cache.get(("e",), lambda: kv(2)) is cache.find(("e",))


def test_a_seeded_answer_depends_on_its_seed_only():
    """Sampling at temperature 0.9: the same seed gives the same text alone and amid other rows
    (greedy and sampled ones joining and leaving), another seed another text."""
    from assistant.model.sampling import Sampling

    engine = varied_engine(max_new_tokens=12, batch_size=4)
    question = with_system("What is the return window for bikes in your shop?")[0]
    seeded = Sampling(temperature=0.9, seed=7)

    def sampled(sampling, company=()):
        row = engine.row(question, sampling=sampling)
        others = [engine.row(m, max_new_tokens=n, sampling=s) for m, n, s in company]
        list(engine.run(others[:2] + [row] + others[2:], slots=3))
        return engine.tokenizer.decode(row.tokens)

    alone = sampled(seeded)
    assert sampled(seeded) == alone
    company = [(with_system(q)[0], n, Sampling(0.9, seed=n) if n % 2 else Sampling())
               for q, n in zip(QUESTIONS, (3, 12, 5, 2, 9))]
    assert sampled(seeded, company) == alone
    assert sampled(Sampling(temperature=0.9, seed=8)) != alone
    greedy = engine.row(question)
    list(engine.run([greedy]))
    assert engine.generate([question])[0].text == engine.tokenizer.decode(greedy.tokens, skip_special_tokens=True).strip()


def test_a_generation_configs_logits_processors_apply_row_by_row():
    """A model whose generation config suppresses tokens: the loop applies the same processors as
    `model.generate`, per row, and gets its tokens."""
    engine = varied_engine(max_new_tokens=8, batch_size=3)
    prompts = with_system(*QUESTIONS[:4])
    plain = [engine.row(m) for m in prompts]
    list(engine.run(plain))
    engine.model.generation_config.suppress_tokens = sorted({r.tokens[0] for r in plain} | {plain[0].tokens[2]})
    rows = [engine.row(m) for m in prompts]
    list(engine.run(rows))
    assert not {t for r in rows for t in r.tokens} & set(engine.model.generation_config.suppress_tokens)
    for prompt, row in zip(prompts, rows):
        ids = torch.tensor([row.ids])
        with torch.inference_mode():
            out = engine.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8,
                                        do_sample=False, pad_token_id=engine.tokenizer.pad_token_id)
        expected = out[0, ids.size(1):].tolist()
        assert row.tokens == expected[:len(row.tokens)] and len(row.tokens) == len(expected) - (row.reason == "stop")


def test_identical_prompts_are_decoded_once_and_reused_only_when_asked(engine):
    q = convs("What is the return window for bikes in your shop?", "hi")
    alone = [g.text for g in engine.generate(q)]
    s = engine.stats.answers
    twice = engine.generate([q[0], q[1], q[0], q[0]])
    assert [g.text for g in twice] == [alone[0], alone[1], alone[0], alone[0]]
    assert engine.stats.answers - s == 2  # the repeats were not decoded again
    engine.generate(q)
    assert engine.stats.answers - s == 4  # outside reuse_answers, a later call decodes again
    with engine.reuse_answers():
        first = engine.generate(q)
        reused = engine.stats.reused
        again = engine.generate(q + convs("Why?"))
        assert engine.stats.answers - s == 7 and engine.stats.reused - reused == 2
        assert [g.text for g in again[:2]] == [g.text for g in first] == alone
        engine.generate(q, max_new_tokens=3)  # another length limit is another answer
        assert engine.stats.answers - s == 9
    engine.generate(q)
    assert engine.stats.answers - s == 11  # the memory ends with the block


def test_reuse_never_crosses_adapters(dtype_engine):
    q = convs("What is the return window for bikes in your shop?")
    with dtype_engine.reuse_answers():
        s = dtype_engine.stats.answers
        base, lora = dtype_engine.generate(q)[0], dtype_engine.generate(q, adapter="lora")[0]
        assert dtype_engine.stats.answers - s == 2 and base.text != lora.text
        assert dtype_engine.generate(q, adapter="lora")[0].text == lora.text
        assert dtype_engine.stats.answers - s == 2


@pytest.mark.parametrize("dtype", supported_dtypes())
@pytest.mark.parametrize("threads", [1, 2])
def test_rows_get_the_bits_of_their_lone_attention_call(dtype, threads):
    """invariance.batch_invariant_attention: single-threaded it shares a call among consecutive rows
    with the same real keys, with more threads it calls SDPA per row; either way each row gets the
    bits of its own lone SDPA call, for left padding (a decoding step's right-aligned rows) and
    right padding (prompts prefilled together), prompts and decoding steps (which always run on one
    thread, and in fp32 where the model is bf16 on a CPU without AMX: the lone call is that one too)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from assistant.model.invariance import batch_invariant_attention, upcasts_decoding

    model, _ = load_model(ModelSettings(name=TINY, dtype=dtype))
    module = model.model.layers[0].self_attn
    length = 11
    left = [(0, 11), (3, 11), (3, 11), (0, 11), (5, 11), (3, 11), (3, 11)]  # (first, end) real keys
    right = [(0, 11), (0, 8), (0, 8), (0, 11), (0, 5), (0, 8)]
    gen = torch.Generator().manual_seed(0)
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    upcast = upcasts_decoding(getattr(torch, dtype), "cpu")
    try:
        for n_q, rows in ((1, left), (length, left), (length, right)):  # a decoding step, prompts
            q = torch.randn(len(rows), 4, n_q, 16, generator=gen).to(getattr(torch, dtype))
            k, v = (torch.randn(len(rows), 2, length, 16, generator=gen).to(getattr(torch, dtype)) for _ in range(2))
            causal = torch.ones(n_q, length, dtype=torch.bool).tril(length - n_q)
            real = torch.tensor([[first <= j < end for j in range(length)] for first, end in rows])
            mask = (causal[None] & real[:, None, :])[:, None]
            mask[:, :, -1] = real[:, None]  # the last query sees every real key (a padding query after them)
            grouped, _ = batch_invariant_attention(module, q, k, v, mask, scaling=0.25, dropout=0.0)
            for b, (first, end) in enumerate(rows):
                q_start, q_end = max(0, first - (length - n_q)), end - (length - n_q)
                qb, kb, vb = q[b:b + 1, :, q_start:q_end].contiguous(), k[b:b + 1, :, first:end], v[b:b + 1, :, first:end]
                if n_q == 1 and upcast:
                    qb, kb, vb = qb.float(), kb.float(), vb.float()
                with torch_threads(1) if n_q == 1 else contextlib.nullcontext():  # decoding steps: one thread
                    alone, _ = sdpa_attention_forward(module, qb, kb, vb, attention_mask=None, scaling=0.25,
                                                      dropout=0.0)
                assert torch.equal(grouped[b:b + 1, q_start:q_end], alone.to(grouped.dtype))
                assert not grouped[b, :q_start].any() and not grouped[b, q_end:].any()  # padded queries: zeros
    finally:
        torch.set_num_threads(saved)


@pytest.mark.parametrize("dtype", supported_dtypes())
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("how", ["folded", "grouped"])
def test_one_attention_call_gives_each_row_the_bits_of_its_lone_step_where_the_probe_says_so(dtype, threads, how):
    """invariance.decoding_attention over a step's rows, each from column 0 and masked past its own
    keys, in runs of slots (slots.SlotCache.groups): where invariance.batched_decoding finds a way
    that holds (folded query heads first), every row gets the bits it gets alone at its own width
    (rounded up to a block), fillers included; and either way computes attention, up to rounding."""
    from assistant.model.invariance import _batched_decoding, decoding_attention
    from assistant.model.slots import _groups, width

    torch_dtype = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(0)
    lengths = [300, 290, 200, 130, 70, 1, 1]  # longest first, as in the slot cache; two fillers
    columns = width(max(lengths))
    q = torch.randn(len(lengths), 4, 1, 16, generator=gen).to(torch_dtype)
    k, v = (torch.randn(len(lengths), 2, columns, 16, generator=gen).to(torch_dtype) for _ in range(2))
    mask = (torch.arange(columns)[None, :] < torch.tensor(lengths)[:, None])[:, None, None, :]
    runs = _groups([width(n) for n in lengths])
    assert len(runs) > 1
    with torch_threads(threads):
        got = decoding_attention(q, k, v, mask, 0.25, runs, how)
        for b, n in enumerate(lengths):  # what plain attention over the row's own keys computes, in fp32
            plain = torch.nn.functional.scaled_dot_product_attention(
                q[b:b + 1].float(), k[b:b + 1, :, :n].float(), v[b:b + 1, :, :n].float(), scale=0.25, enable_gqa=True)
            tolerance = {"atol": 2e-2, "rtol": 2e-2} if torch_dtype == torch.bfloat16 else {}
            torch.testing.assert_close(got[b:b + 1].float(), plain.transpose(1, 2), **tolerance)
        if not _batched_decoding(torch_dtype, "cpu", 4, 2, 16, how, threads):
            pytest.skip(f"this CPU's attention kernel gives rows other bits in one call ({how})")
        for groups in (None, runs):
            together = decoding_attention(q, k, v, mask, 0.25, groups, how)
            for b, n in enumerate(lengths):
                own = width(n)
                alone = decoding_attention(q[b:b + 1], k[b:b + 1, :, :own], v[b:b + 1, :, :own],
                                           mask[b:b + 1, ..., :own], 0.25, how=how)
                assert torch.equal(together[b:b + 1], alone)


def test_a_token_budget_gives_long_prompts_smaller_batches_and_the_same_answers(engine):
    prompts = convs(*QUESTIONS, FILLERS[2], FILLERS[2] + " (2)")
    lengths = [len(engine.tokenizer(engine.render(m), add_special_tokens=False)["input_ids"]) for m in prompts]
    plain = engine.generate(prompts, batch_size=8)
    with engine.batched(8, batch_tokens=2 * (max(lengths) + engine.max_new_tokens)):  # prompt and answer
        budgeted = engine.generate(prompts)
    assert [g.text for g in budgeted] == [g.text for g in plain]
    assert {g.batch_size for g, n in zip(budgeted, lengths) if n == max(lengths)} == {2}  # the two long ones
    assert max(g.batch_size for g in budgeted) > 2  # short prompts still share larger batches
    assert engine.batch_size == 4 and engine.batch_tokens is None  # restored after the block


# -- where the kernels are not batch-invariant (measured on an Intel AMX CPU: README) ----------------
def fresh_engine(**kw):
    model, tok = load_model(ModelSettings(name=TINY))
    return Engine(model, tok, **kw)


def test_where_no_row_count_is_invariant_each_question_is_decoded_alone(monkeypatch):
    """On kernels that change with the row count at any row count and thread count (an AMX CPU in
    bf16), batches cannot be made exact: `generate` then decodes each question on its own and
    `stream_many` streams the rows in turn, so each answer is still the lone question's."""
    from assistant.model import invariance

    reference = fresh_engine(max_new_tokens=8, batch_size=16)
    expected = [g.text for g in reference.generate(convs(*QUESTIONS))]
    engine = fresh_engine(max_new_tokens=8, batch_size=16)
    with tempfile.TemporaryDirectory() as d:
        from peft import LoraConfig, get_peft_model

        lora, _ = load_model(ModelSettings(name=TINY))
        get_peft_model(lora, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)).save_pretrained(d)
        engine.add_adapter("lora", d)
        reference.add_adapter("lora", d)
    monkeypatch.setattr(invariance, "min_rows", lambda *a, **k: None)
    plan = engine.plan()
    assert plan.alone and plan.rows == 1 and engine.batch_invariant
    got = engine.generate(convs(*QUESTIONS))
    assert [g.text for g in got] == expected
    assert {g.batch_size for g in got} == {1} and engine.stats.alone == len(QUESTIONS)
    # The chat's columns: one row per adapter, filled one after another, each the lone answer.
    chats, adapters = convs(QUESTIONS[1], QUESTIONS[3], QUESTIONS[5]), [None, "lora", None]
    snapshots = list(engine.stream_many(chats, adapters))
    final = snapshots[-1]
    assert [r.text.strip() for r in final] == [reference.generate([c], adapter=a)[0].text
                                               for c, a in zip(chats, adapters)]
    assert any(s[0].text and not s[1].text and not s[2].text for s in snapshots)  # row 0 first, alone
    # A row whose client left before its turn is never decoded.
    left = list(engine.stream_many(chats, adapters, stop_rows=lambda: [False, True, False]))[-1]
    assert left[1] == ("", 0, True) and left[2].text == final[2].text


def test_where_rows_agree_only_up_to_a_row_count_steps_are_capped_there(monkeypatch):
    """An Intel AMX Xeon in bf16 computes 1 to 32 rows with one kernel and 33 or more with others:
    no row count agrees with large batches, but small batches agree with each other. The engine
    then caps every decoding step (fillers included) at the most rows probed to agree: 32 where
    those do, else its batch size. From one row on, prompts share prefill passes whose packed
    layers compute blocks of at most that many rows; else each prompt is prefilled alone. Every
    answer is still the lone question's."""
    from assistant.model import invariance, kernels

    expected = [g.text for g in fresh_engine(max_new_tokens=6, batch_size=4).generate(convs(*QUESTIONS))]
    engine = fresh_engine(max_new_tokens=6, batch_size=4)
    shapes = []
    engine.model.register_forward_pre_hook(lambda mod, args, kw: shapes.append(kw["input_ids"].shape), with_kwargs=True)

    # From 2 rows, up to 8 rows only (not 32): capped at the batch size, prompts alone.
    monkeypatch.setattr(invariance, "min_rows", lambda *a, most=None: 2 if most and most <= 8 else None)
    plan = engine.plan()
    assert (plan.rows, plan.most, plan.together, plan.alone) == (2, 4, False, False)
    assert str(plan).startswith("batches of 2 to 4 rows") and "each prompt prefilled alone" in str(plan)
    assert plan.slots(16, groups=1) == 3 and plan.slots(16, groups=2) == 2 and plan.slots(2, groups=1) == 2
    assert engine.plan(8).most == 8  # probed for the decoder's own size
    assert [g.text for g in engine.generate(convs(*QUESTIONS))] == expected
    decoding = [n for n, width in shapes if width == 1]
    assert max(decoding) <= plan.most and min(decoding) >= plan.rows and max(decoding) > plan.rows
    assert {n for n, width in shapes if width > 1} == {1}  # each prompt alone

    # From 1 row up to 32: prompts share passes, every packed layer in blocks of at most 32 rows.
    monkeypatch.setattr(invariance, "min_rows", lambda *a, most=None: 1 if most else None)
    plan = engine.plan()
    assert (plan.rows, plan.most, plan.together) == (1, 32, True) and "blocks of 32 rows" in str(plan)
    calls, matmul = [], kernels._matmul
    monkeypatch.setattr(kernels, "_matmul", lambda x, *a: calls.append(len(x)) or matmul(x, *a))
    shapes.clear()
    assert [g.text for g in engine.generate(convs(*QUESTIONS), batch_size=8)] == expected
    assert max(n * width for n, width in shapes if width > 1) > 32 and max(calls) <= 32

    # A cap that leaves room for one live row beside the fillers is no better than decoding each
    # question alone, which the engine then does.
    monkeypatch.setattr(invariance, "min_rows", lambda *a, most=None: most)
    assert engine.plan().alone


def test_where_only_one_thread_is_invariant_the_engine_decodes_with_one(monkeypatch):
    """An AMX CPU in fp32 has a safe row count with one thread but none with two: the engine then
    decodes with one thread (and restores the caller's), instead of giving up batching."""
    from assistant.model import invariance

    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        expected = [g.text for g in fresh_engine(max_new_tokens=6, batch_size=4).generate(convs(*QUESTIONS))]
        engine = fresh_engine(max_new_tokens=6, batch_size=4)
        monkeypatch.setattr(invariance, "min_rows", lambda *a, **k: 4 if torch.get_num_threads() == 1 else None)
        plan = engine.plan()
        assert (plan.rows, plan.threads, plan.alone) == (4, 1, False)
        seen = []
        engine.model.register_forward_pre_hook(lambda *a: seen.append(torch.get_num_threads()))
        got = engine.generate(convs(*QUESTIONS))
        assert [g.text for g in got] == expected and {g.batch_size for g in got} == {4, 2}
        assert set(seen) == {1} and torch.get_num_threads() == 2
        streamed = list(engine.stream_many(convs(QUESTIONS[1])))[-1][0].text
        assert streamed.strip() == expected[1] and set(seen) == {1} and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(saved)


@pytest.mark.smoke
def test_the_default_model_answers_the_same_alone_and_amid_rows_joining_and_leaving():
    """The real default model, the evaluation's dtype, a shared system turn: a few prompts decoded
    alone and through two and four rows (rows joining as others end) give the same tokens."""
    model, tok = load_model(ModelSettings(), evaluation=True)
    engine = Engine(model, tok, max_new_tokens=24, batch_size=4)
    if engine.plan().alone:
        pytest.skip("no batch-invariant row count on this machine: every question is decoded alone")
    prompts = with_system("What is the capital of France?", "hi", QUESTIONS[1], FILLERS[2], "Name three colours.")
    alone = [engine.generate([m])[0].text for m in prompts]
    for rows in (2, 4):
        assert [g.text for g in engine.generate(prompts, batch_size=rows)] == alone
    assert "Paris" in alone[0]



def test_the_slot_cache_keeps_every_rows_keys_through_joins_leaves_and_growth():
    """SlotCache: rows of other lengths join (each in the next free slot), decoding steps append a
    column to each row at its own length, a row leaves (the last moves into its slot) and the
    buffers grow; every live row keeps exactly its own keys from column 0, a step attends to the
    longest row's columns rounded up to a block, its mask covers each row's own, and its runs of
    slots (one attention call each) cover every row once, each at least as wide as its rows."""
    from transformers import AutoConfig

    from assistant.model.slots import WIDTH_BLOCK, SlotCache

    config = AutoConfig.from_pretrained(TINY)
    cache, gen = SlotCache(config, max_slots=5), torch.Generator().manual_seed(0)
    layers = len(cache.layers)
    expected: list[list[torch.Tensor]] = []  # per live slot: its keys, one [heads, tokens, dim] per layer

    def kv(tokens):  # values equal to keys, here and in steps: one expectation checks both
        return [(k, k.clone()) for k in (torch.randn(1, 2, tokens, 4, generator=gen) for _ in range(layers))]

    def join(*tokens):  # a row in chunks, as the decoder inserts a prompt's pieces
        pieces = [kv(n) for n in tokens]
        assert cache.insert(*pieces) == len(expected)
        expected.append([torch.cat([p[i][0][0] for p in pieces], 1) for i in range(layers)])

    def step():
        rows = len(expected) + 1  # one filler row
        mask = cache.begin_step(rows)
        width = -(-(max(cache.lengths) + 1) // WIDTH_BLOCK) * WIDTH_BLOCK
        assert mask.shape == (rows, width) and cache.width == width
        assert [int(m.sum()) for m in mask] == [n + 1 for n in cache.lengths] + [1]  # the filler: its own key
        assert all(m[:n + 1].all() for m, n in zip(mask, cache.lengths))  # from column 0
        runs = cache.groups
        assert runs[0][0] == 0 and runs[-1][1] == rows and all(a[1] == b[0] for a, b in zip(runs, runs[1:]))
        assert all(w <= width and all(n + 1 <= w for n in (cache.lengths + [0])[first:end]) for first, end, w in runs)
        for i, layer in enumerate(cache.layers):
            k = torch.randn(rows, 2, 1, 4, generator=gen)
            with torch.inference_mode():  # as the model's forward pass runs
                keys, _ = layer.update(k, k.clone())
            assert keys.shape[2] == width
            for slot in range(len(expected)):
                expected[slot][i] = torch.cat([expected[slot][i], k[slot]], dim=1)
        cache.end_step()

    def check():
        for slot, keys in enumerate(expected):
            assert cache.lengths[slot] == keys[0].shape[1]
            for i in range(layers):
                assert torch.equal(cache.keys[i][slot, :, :cache.lengths[slot]], keys[i])
                assert torch.equal(cache.values[i][slot, :, :cache.lengths[slot]], keys[i])
            assert all(torch.isfinite(b[:, :, :cache.width]).all() for b in cache.keys + cache.values)

    join(5)
    step()
    join(3, 6)
    join(2)
    join(7)
    check()
    for _ in range(70):  # past the first block and the first capacity: the buffers grow
        step()
    check()
    assert cache.capacity >= 64 + WIDTH_BLOCK and cache.capacity % WIDTH_BLOCK == 0
    expected[1] = expected.pop()
    assert cache.remove(1) == 3  # the last row moved into slot 1
    step()
    check()
    expected.pop()
    assert cache.remove(len(expected)) is None  # the last row left: nothing moves
    join(300)
    step()
    check()
    assert cache.slots == 5  # four rows and a filler


def test_a_steps_runs_of_slots_read_the_fewest_padded_columns():
    """The attention's runs over rows longest first: one call where widths are alike, a new run where
    padding would cost more than a call (slots.CALL_COLUMNS), and every row in exactly one run."""
    from assistant.model.slots import CALL_COLUMNS, _groups

    assert _groups([128] * 16) == [(0, 16, 128)]
    assert _groups([448] * 8 + [128] * 8) == [(0, 8, 448), (8, 16, 128)]
    assert _groups([192, 128]) == [(0, 2, 192)]  # 64 padded columns cost less than a call
    runs = _groups([1024, 512, 512, 448, 128, 64, 64])
    cost = sum((end - first) * w + CALL_COLUMNS for first, end, w in runs)
    assert cost <= 7 * 1024 + CALL_COLUMNS and [r[0] for r in runs] == sorted({r[0] for r in runs})


def test_the_slot_cache_grows_no_further_than_the_token_budget_allows_and_is_freed_at_the_end(engine):
    """Slots grow by a quarter (fewer copies of the whole cache) but never past the rows the token
    budget lets live at the batch's width: the KV cache is most of the engine's memory. A finished
    batch drops its buffers at once."""
    row = lambda: engine.row(convs(QUESTIONS[1])[0])  # noqa: E731
    width = len(row().ids) + engine.max_new_tokens  # the cache's columns for one row: prompt and answer
    decoder = engine.decoder(slots=64, budget=9 * width)
    for _ in range(9):  # one at a time, as a server's requests come: 8 slots, then 9 (a quarter more: 10)
        decoder.admit(row())
    assert len(decoder.live) == 9 and decoder.cache.slots == 9

    decoders = list(engine.run([row() for _ in range(3)], slots=4))
    assert decoders[-1].cache.keys == [] and decoders[-1].cache.values == []


def test_onednn_keeps_a_bounded_number_of_kernels(tmp_path):
    """oneDNN builds a kernel per row count and weight shape and, by default, keeps 1,024 of them
    twice over (~0.3 MB each): the prefill's many row counts grew a process by 0.6 GB. Importing the
    engine's kernels caps both caches; 256 row counts must then cost a fraction of what they cost
    uncapped (the caps set back to 1,024 in the environment)."""
    import os
    import subprocess
    import sys

    from assistant.model import kernels

    if not kernels.available(torch.float32, "cpu"):
        pytest.skip("no oneDNN linear kernels on this build")
    script = tmp_path / "grow.py"
    script.write_text(
        "import torch\n"
        "from assistant.model import kernels\n"
        "from assistant.runtime import release_freed_memory\n"
        "def rss():\n"
        "    release_freed_memory()  # what the caches keep, not what the allocator kept\n"
        "    return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20\n"
        "torch.set_num_threads(1)\n"
        "layers = torch.nn.Sequential(torch.nn.Linear(576, 1536, bias=False), torch.nn.Linear(1536, 576, bias=False))\n"
        "kernels.pack_linears(layers)\n"
        "base = rss()\n"
        "with torch.inference_mode():\n"
        "    for n in range(1, 257):\n"
        "        layers(torch.randn(n, 576))\n"
        "print(rss() - base)\n")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    for name in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):
        env.pop(name, None)
    capped = float(subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                                  check=True).stdout)
    uncapped = float(subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True,
                                    env={**env, "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "1024",
                                         "LRU_CACHE_CAPACITY": "1024"}).stdout)
    assert uncapped > 100 and capped < uncapped / 4, (capped, uncapped)


def test_a_rag_prompt_whose_passages_are_cached_computes_only_its_question():
    """The last blank line ends a chunk however near the one before, so a RAG prompt's passages and
    the instruction after them are cached apart from its question: a second question over the same
    passages computes only what follows that line, and answers as it does alone with a cold cache."""
    engine = varied_engine(max_new_tokens=8, batch_size=4)
    instruction = "Answer from the passages above and cite the passage you used, like [1]."
    first, second = with_system(*(rag(q, 0, 1).replace("\n\nQuestion:", f"\n\n{instruction}\n\nQuestion:")
                                  for q in ("Returns?", "How long do tune-ups take?")))
    row = engine.row(second)
    text = engine.tokenizer.decode
    assert text(row.ids[row.ends[-2]:]).startswith("Question:")  # the question alone in the last chunk
    assert row.ends[-2] - row.ends[-3] < 64  # the instruction: a chunk shorter than MIN_CHUNK
    cold = engine.generate([second], batch_size=1)[0].text
    engine.prefixes.clear()
    engine.generate([first], batch_size=1)
    before = engine.stats.prefilled
    assert engine.generate([second], batch_size=1)[0].text == cold
    assert engine.stats.prefilled - before == len(row.ids) - row.ends[-2]
