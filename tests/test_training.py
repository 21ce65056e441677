"""LoRA training mechanics on the tiny model: data and masks, artifacts, freshness, resume, RAFT, adapters."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from assistant.variants import training
from assistant.corpus.corpus import load_corpus
from assistant.model.loading import pick_device
from tiny_model import TINY

ROOT = Path(__file__).parent.parent


def configure(corpus_dir: Path, **lora) -> None:
    """Append LoRA settings to the fixture's corpus.yaml (small and fast unless told otherwise)."""
    settings = {"epochs": 2, "batch_size": 2, "learning_rate": 0.01, **lora}
    with open(corpus_dir / "corpus.yaml", "a") as f:
        f.write("lora:\n" + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in settings.items()))


def tiny_model():
    from assistant.config import ModelSettings
    from assistant.model.loading import load_model

    return load_model(ModelSettings(name=TINY))


def test_examples_mask_the_prompt_and_match_the_serving_prompt(tiny_corpus_dir):
    from datasets import Dataset
    from trl import SFTTrainer

    from assistant.model.engine import Engine
    from assistant.variants.sft import SftVariant

    configure(tiny_corpus_dir)
    corpus = load_corpus(tiny_corpus_dir)
    rows = training.qa_examples(corpus, "train")
    assert [r["completion"][0]["content"] for r in rows] == [q.answer for q in corpus.questions("train")]
    model, tok = tiny_model()
    s = corpus.config.lora
    args = training.sft_config(s, tiny_corpus_dir / "ck", 1, 2, False, "cpu", model.dtype, progress=False)
    args.completion_only_loss = True
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                         peft_config=training.lora_config(s))
    engine = Engine(model, tok)
    variant = SftVariant.__new__(SftVariant)  # prompt() needs only the corpus and the engine (context fit)
    variant.corpus, variant.engine = corpus, engine
    for row, q in zip(trainer.train_dataset, corpus.questions("train")):
        ids, labels = row["input_ids"], row["labels"]
        served = tok(engine.render(variant.prompt(q.question).messages), add_special_tokens=False)["input_ids"]
        n = len(served)
        assert ids[:n] == served  # training prompt == serving prompt, token for token
        assert all(label == -100 for label in labels[:n])  # no loss on the prompt
        assert labels[n:] == ids[n:]  # loss on every answer token, end-of-turn included
        assert tok.decode(ids[n:]).startswith(q.answer + "<|im_end|>")


def test_scoring_only_answer_positions_keeps_the_loss_and_gradients(tiny_corpus_dir, monkeypatch):
    import torch
    from datasets import Dataset
    from trl import SFTTrainer
    from trl.trainer import utils as trl_utils

    configure(tiny_corpus_dir)
    corpus = load_corpus(tiny_corpus_dir)
    model, tok = tiny_model()
    s = corpus.config.lora
    args = training.sft_config(s, tiny_corpus_dir / "ck", 1, 2, False, "cpu", model.dtype, progress=False,
                               completion_only_loss=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(training.qa_examples(corpus, "train")),
                         processing_class=tok, peft_config=training.lora_config(s))
    batch = next(iter(trainer.get_train_dataloader()))
    lora = [p for n, p in trainer.model.named_parameters() if "lora_A" in n][0]

    def loss_and_grad():
        trainer.model.zero_grad()
        loss = trainer.compute_loss(trainer.model, dict(batch))
        loss.backward()
        return loss.detach(), lora.grad.clone()

    assert training.score_labelled_positions_only()
    compact = loss_and_grad()
    monkeypatch.setattr(trl_utils, "_use_triton", trl_utils._use_triton.original)
    full = loss_and_grad()
    torch.testing.assert_close(compact[0], full[0])
    torch.testing.assert_close(compact[1], full[1])


def test_small_lm_head_tiles_keep_the_loss_and_gradients(tiny_corpus_dir, monkeypatch):
    """TRL's fused LM head in tiles of a few positions and part of the vocabulary: same loss, same gradients."""
    import torch
    from datasets import Dataset
    from trl import SFTTrainer
    from trl.kernels import chunked_logprob
    from trl.trainer import utils as trl_utils

    configure(tiny_corpus_dir)
    corpus = load_corpus(tiny_corpus_dir)
    model, tok = tiny_model()
    model.double()  # float64: two orders of summation agree far below any real difference
    s = corpus.config.lora
    args = training.sft_config(s, tiny_corpus_dir / "ck", 1, 2, False, "cpu", model.dtype, progress=False,
                               completion_only_loss=True, report_to="none")
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(training.qa_examples(corpus, "train")),
                         processing_class=tok, peft_config=training.lora_config(s))
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    with torch.no_grad():  # non-zero LoRA B, so the gradient reaches every LoRA matrix
        for n, w in trainer.model.named_parameters():
            if "lora_B" in n:
                w.copy_(torch.randn(w.shape, generator=torch.Generator().manual_seed(0)) * 0.1)
    lora = [w for _, w in trainer.model.named_parameters() if w.requires_grad]

    def loss_and_grads():
        trainer.model.zero_grad()
        loss = trainer.compute_loss(trainer.model, dict(batch))
        loss.backward()
        return loss.detach(), [w.grad.clone() for w in lora]

    big = loss_and_grads()
    for module, name in ((chunked_logprob, "TOKEN_CHUNK_SIZE"), (trl_utils, "_CHUNKED_LOGPROB_CHUNK_SIZE")):
        monkeypatch.setattr(module, name, getattr(module, name))  # restored after the test
    positions = int((batch["labels"] != -100).sum())
    monkeypatch.setattr(training, "CPU_LM_HEAD_TILE", (max(1, positions // 3), 5000))  # several tiles both ways
    assert training.small_lm_head_tiles("cpu") and not training.small_lm_head_tiles("cuda")
    assert chunked_logprob.TOKEN_CHUNK_SIZE < positions
    small = loss_and_grads()
    torch.testing.assert_close(small[0], big[0], rtol=1e-10, atol=1e-12)
    for a, b in zip(small[1], big[1]):  # TRL accumulates the head's gradients in float32, whatever the dtype
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))


def test_micro_batch_is_the_largest_divisor_of_the_batch_within_the_token_budget():
    from assistant.config import LoraSettings

    def micro(batch: int, longest: int, budget: int) -> int:
        return training.micro_batch_size(LoraSettings(batch_size=batch, max_batch_tokens=budget), longest)

    assert micro(8, 512, 1536) == 2  # answers at the 512-token limit: passes of 2 rows
    assert micro(8, 134, 1536) == 8  # ecostride's closed-book rows: one pass, the prefix shared by 8
    assert micro(6, 300, 1536) == 3  # a divisor, so that every step still holds 6 rows
    assert micro(8, 2048, 1536) == 1  # a single row over the budget still trains
    assert micro(8, 512, 0) == 8  # 0: no limit


def test_micro_batches_train_the_same_steps_to_the_same_losses(tiny_corpus_dir):
    """A token budget that splits every step into micro-batches changes how a step is computed, not
    what: same steps, same rows, same losses (float32: up to rounding), same fingerprint."""
    import shutil

    from assistant.variants.sft import SftVariant

    yaml = tiny_corpus_dir / "corpus.yaml"
    yaml.write_text(yaml.read_text().replace(f"  name: {TINY}\n", f"  name: {TINY}\n  dtype: float32\n"))
    logs, prints = {}, {}
    for budget in (0, 1):
        d = tiny_corpus_dir.parent / f"budget{budget}"
        shutil.copytree(tiny_corpus_dir, d)
        (d / "corpus.yaml").write_text((d / "corpus.yaml").read_text().replace("runs_dir: ", f"runs_dir: {d}/"))
        configure(d, max_batch_tokens=budget)
        corpus = load_corpus(d)
        SftVariant.build(corpus)
        logs[budget] = json.loads((corpus.runs_dir / "sft" / "training_log.json").read_text())
        prints[budget] = training.fingerprint(corpus, "sft")
    whole, split = logs[0], logs[1]
    assert (whole["micro_batch"], whole["gradient_accumulation_steps"]) == (2, 1)
    assert (split["micro_batch"], split["gradient_accumulation_steps"]) == (1, 2)
    assert split["steps"] == whole["steps"] == 4 and prints[0] == prints[1]
    assert [p["loss"] for p in split["train_loss"]] == pytest.approx([p["loss"] for p in whole["train_loss"]], rel=1e-4)
    assert split["best_val_loss"] == pytest.approx(whole["best_val_loss"], rel=1e-4)


def test_each_report_card_records_the_peak_memory_of_the_stage_it_closes():
    from assistant.runtime import report_card, reset_peak_memory

    if not reset_peak_memory():
        pytest.skip("this OS cannot reset the resident-set high-water mark")
    before = report_card()["peak_memory_mb"]
    block = b"\1" * (400 * 2**20)  # 400 MB, written, so resident
    del block  # gone before the card: the peak remembers it
    heavy = report_card()["peak_memory_mb"]
    light = report_card()["peak_memory_mb"]
    assert heavy >= before + 350  # the stage that held the block
    assert light < heavy - 350  # the next stage starts afresh


def test_shared_prefix_keeps_the_loss_and_gradients(tiny_corpus_dir):
    """The system prompt run once per batch gives the loss and LoRA gradients of running it per row."""
    import torch
    from datasets import Dataset

    from assistant.variants.shared_prefix import SharedPrefixSFTTrainer, shared_prefix_length

    configure(tiny_corpus_dir, batch_size=3)
    corpus = load_corpus(tiny_corpus_dir)
    model, tok = tiny_model()
    model.double()  # float64: the two orders of summation agree to rounding far below any real difference
    s = corpus.config.lora
    args = training.sft_config(s, tiny_corpus_dir / "ck", 1, 1, False, "cpu", model.dtype, progress=False,
                               completion_only_loss=True, report_to="none")
    trainer = SharedPrefixSFTTrainer(model=model, args=args, processing_class=tok, peft_config=training.lora_config(s),
                                     train_dataset=Dataset.from_list(training.qa_examples(corpus, "train")))
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    p = shared_prefix_length(batch)
    system = tok.apply_chat_template([{"role": "system", "content": corpus.config.system_prompt}], tokenize=False)
    assert p >= len(tok(system, add_special_tokens=False)["input_ids"])  # at least the system prompt
    assert (batch["labels"][:, :p + 1] == -100).all()  # no labelled position inside (or right after) it
    assert shared_prefix_length({**batch, "labels": batch["input_ids"]}) == 0  # language modelling: nothing shared
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # non-zero LoRA B, so the gradient reaches every LoRA matrix
        for n, w in trainer.model.named_parameters():
            if "lora_B" in n:
                w.copy_(torch.randn(w.shape, generator=generator) * 0.1)
    lora = [w for _, w in trainer.model.named_parameters() if w.requires_grad]

    def loss_and_grads(shared: bool):
        trainer.shared_prefix = shared
        trainer.model.zero_grad()
        loss = trainer.compute_loss(trainer.model, dict(batch))
        loss.backward()
        return loss.detach(), [w.grad.clone() for w in lora]

    full, shared = loss_and_grads(False), loss_and_grads(True)
    assert trainer.prefix_tokens_saved == p * (batch["input_ids"].size(0) - 1)
    torch.testing.assert_close(shared[0], full[0], rtol=1e-10, atol=1e-12)
    for a, b in zip(shared[1], full[1]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)


def assert_tensorboard_curves(logdir: Path, train_points: int, val_points: int) -> None:
    """The adapter folder holds TensorBoard event files with the train and val loss curves."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list(logdir.rglob("events.out.tfevents.*"))
    assert events, f"no TensorBoard event file under {logdir}"
    acc = EventAccumulator(str(events[0].parent)).Reload()
    assert len(acc.Scalars("train/loss")) == train_points
    assert len(acc.Scalars("eval/loss")) == val_points


def test_build_publishes_a_peft_adapter_and_retrains_only_on_change(tiny_corpus_dir):
    from peft import PeftModel

    from assistant.variants import load_variant
    from assistant.variants.sft import SftVariant

    configure(tiny_corpus_dir)
    corpus = load_corpus(tiny_corpus_dir)
    assert not SftVariant.is_built(corpus)
    report = SftVariant.build(corpus)
    folder = corpus.runs_dir / "sft"
    assert SftVariant.is_built(corpus) and "reused" not in report
    assert report["trainable_params"] > 0 and report["steps"] == 4  # 3 pairs, batch 2, 2 epochs
    log = json.loads((folder / "training_log.json").read_text())
    assert len(log["train_loss"]) == 4 and len(log["val_loss"]) == 2  # per step, per epoch
    assert log["tokens_per_s"] > 0 and log["peak_memory_mb"] > 0 and log["resumed_from_step"] == 0
    assert log["shared_prefix_tokens_saved"] > 0  # the system prompt ran once per batch, not per row
    device = pick_device("auto").type  # the report card names where it trained
    assert log["environment"]["training"] == {"device": device, "dtype": log["dtype"]}
    assert report["environment"] == log["environment"] and log["environment"]["trl"]
    assert not list(folder.glob(".adapter.*"))  # no temporary leftovers
    assert_tensorboard_curves(folder / "tensorboard", train_points=4, val_points=2)

    # PEFT's own format: loadable without this project's code.
    model, tok = tiny_model()
    peft_model = PeftModel.from_pretrained(model, str(folder / "adapter"))
    assert any("lora_A" in n for n, _ in peft_model.named_parameters())

    answer = load_variant("sft", corpus).answer("How long do I have to return a bike?")
    assert answer.variant == "sft" and answer.completion_tokens > 0

    t0 = time.perf_counter()
    assert SftVariant.build(corpus).get("reused") is True  # second build: a no-op
    assert time.perf_counter() - t0 < 2

    qa = tiny_corpus_dir / "qa.jsonl"
    qa.write_text(qa.read_text().replace("Within 21 days of delivery.", "Within 22 days of delivery."))
    changed = load_corpus(tiny_corpus_dir)
    assert not SftVariant.is_built(changed)  # changed training data: stale
    assert "reused" not in SftVariant.build(changed) and SftVariant.is_built(changed)


def test_tuning_one_fine_tune_does_not_retrain_the_other(tiny_corpus_dir):
    def prints(**lora):
        d = tiny_corpus_dir.parent / f"c{len(list(tiny_corpus_dir.parent.iterdir()))}"
        import shutil

        shutil.copytree(tiny_corpus_dir, d)
        configure(d, **lora)
        c = load_corpus(d)
        return training.fingerprint(c, "sft"), training.fingerprint(c, "rag_sft")

    base = prints()
    more_sft = prints(epochs=9)
    more_raft = prints(rag_sft_epochs=9, distractors=1)
    shared = prints(learning_rate=0.02)
    assert prints(max_batch_tokens=64) == base  # memory, not results: nothing retrains
    assert more_sft[0] != base[0] and more_sft[1] == base[1]
    assert more_raft[0] == base[0] and more_raft[1] != base[1]
    assert shared[0] != base[0] and shared[1] != base[1]


def test_kill_9_mid_training_resumes_from_the_last_checkpoint(tiny_corpus_dir):
    configure(tiny_corpus_dir, epochs=10, batch_size=1, eval_steps=3, early_stopping_patience=0,
              learning_rate=0.001)
    corpus = load_corpus(tiny_corpus_dir)
    checkpoints = corpus.runs_dir / "sft" / "checkpoints"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # CPU also on a one-GPU machine
    proc = subprocess.Popen([sys.executable, "-m", "assistant.variants.training", str(tiny_corpus_dir), "--variant", "sft"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not list(checkpoints.glob("checkpoint-*/trainer_state.json")):
            assert proc.poll() is None, "training ended before its first checkpoint"
            assert time.time() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not training.is_trained(corpus, "sft")  # interrupted: not built

    report = training.build(corpus, "sft", progress=False)
    log = json.loads((corpus.runs_dir / "sft" / "training_log.json").read_text())
    assert report["resumed_from_step"] >= 3 and log["resumed_from_step"] >= 3
    assert log["steps"] == 30  # 3 pairs x 10 epochs: resumed and finished, not restarted
    assert [t["step"] for t in log["train_loss"]] == list(range(1, 31))  # the curve spans both sessions
    assert training.is_trained(corpus, "sft")


def test_training_runs_unchanged_under_accelerate_launch_with_two_processes(tiny_corpus_dir):
    """Data parallel over two CPU processes (gloo): the same module, one adapter, half the steps."""
    configure(tiny_corpus_dir, epochs=2, batch_size=1)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # CPU also on a one-GPU machine
    # --multi_gpu picks accelerate's torchrun launcher; without GPUs the processes train on CPU over gloo.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "assistant.variants.training", str(tiny_corpus_dir), "--variant", "sft"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    corpus = load_corpus(tiny_corpus_dir)
    assert training.is_trained(corpus, "sft")
    log = json.loads((corpus.runs_dir / "sft" / "training_log.json").read_text())
    # 3 train pairs over 2 processes at batch 1: 2 steps per epoch instead of 3 on one process.
    assert log["processes"] == 2 and log["steps"] == 4
    assert training.build(corpus, "sft", progress=False).get("reused") is True


@pytest.mark.parametrize("gold_fraction", [1.0, 0.0])
def test_raft_prompts_mix_gold_and_distractors(tiny_corpus_dir, gold_fraction):
    from assistant.variants.retrieval import Retriever, build_index
    from assistant.variants.rag import INSTRUCTION

    configure(tiny_corpus_dir, distractors=2, gold_fraction=gold_fraction)
    corpus = load_corpus(tiny_corpus_dir)
    build_index(corpus)
    retriever = Retriever.load(corpus)
    rows, stats = training.raft_examples(corpus, retriever, "train", corpus.config.lora)
    assert rows == training.raft_examples(corpus, retriever, "train", corpus.config.lora)[0]  # deterministic
    assert stats["prompts_with_gold"] == (3 if gold_fraction else 0)
    for row, q in zip(rows, corpus.questions("train")):
        user = row["prompt"][-1]["content"]
        assert row["prompt"][0]["content"] == corpus.config.system_prompt
        assert user.endswith("Question: " + q.question)
        block = user.split("\n\n" + INSTRUCTION)[0].removeprefix("Passages:\n")
        passages = re.split(r"\n\n(?=\[\d+\] )", block)
        assert [p[:3] for p in passages] == ["[1]", "[2]", "[3]"]  # gold + 2 distractors, or 3 distractors
        holding = [p for p in passages if all(f.lower() in p.lower() for f in q.key_facts)]
        answer = row["completion"][0]["content"]
        if gold_fraction:
            assert len(holding) == 1 and answer.startswith(q.answer)
            assert answer.endswith(f"[{holding[0][1]}]")  # cites the gold passage's number
        else:
            assert holding == [] and answer == q.answer  # no gold: answer from memory


def test_rag_sft_builds_and_answers_with_sources(tiny_corpus_dir):
    from assistant.variants import load_variant
    from assistant.variants.rag_sft import RagSftVariant

    configure(tiny_corpus_dir, rag_sft_epochs=1)
    corpus = load_corpus(tiny_corpus_dir)
    RagSftVariant.build(corpus)
    assert RagSftVariant.is_built(corpus)
    log = json.loads((corpus.runs_dir / "rag_sft" / "training_log.json").read_text())
    assert log["raft"]["prompts_with_gold"] + log["raft"]["prompts_without_gold"] == 3
    answer = load_variant("rag_sft", corpus).answer("How much is the Basic Tune-Up?")
    assert answer.variant == "rag_sft" and answer.sources


def test_corpus_without_qa_trains_on_document_chunks(tiny_corpus_dir):
    (tiny_corpus_dir / "qa.jsonl").unlink()
    configure(tiny_corpus_dir, epochs=1)
    corpus = load_corpus(tiny_corpus_dir)
    job = training.sft_job(corpus)
    assert job.mode == "text" and job.val == []
    text = "\n".join(r["text"] for r in job.train)
    assert "21 days" in text and "$45" in text  # the documents' facts are the training data
    report = training.build(corpus, "sft", progress=False)
    assert report["mode"] == "text" and training.is_trained(corpus, "sft")


def test_one_engine_switches_adapters_like_separate_engines(tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model

    from assistant.model.engine import Engine

    # Random (non-zero) adapters make every route visibly different from the base model.
    paths = {}
    for seed, name in enumerate(["sft", "rag_sft"]):
        model, _ = tiny_model()
        torch.manual_seed(seed)
        peft = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.data.normal_(0, 0.5)
        peft.save_pretrained(tmp_path / name)
        paths[name] = str(tmp_path / name)
    prompts = [[{"role": "user", "content": "How much is a tune-up?"}], [{"role": "user", "content": "Hello"}]]

    def logits(engine: Engine, adapter):
        ids = engine.tokenizer(engine.render(prompts[0]), return_tensors="pt").to(engine.device)
        with engine.using(adapter), torch.inference_mode():
            return engine.model(**ids).logits

    alone = {}
    for adapter in [None, "sft", "rag_sft"]:
        engine = Engine(*tiny_model(), max_new_tokens=6)
        if adapter:
            engine.add_adapter(adapter, paths[adapter])
        alone[adapter] = ([g.text for g in engine.generate(prompts, adapter=adapter)], logits(engine, adapter))
    shared = Engine(*tiny_model(), max_new_tokens=6)
    shared.add_adapter("sft", paths["sft"])
    shared.add_adapter("rag_sft", paths["rag_sft"])
    for adapter in ["rag_sft", None, "sft", "rag_sft", None, "sft"]:
        texts = [g.text for g in shared.generate(prompts, adapter=adapter)]
        assert texts == alone[adapter][0], adapter
        torch.testing.assert_close(logits(shared, adapter), alone[adapter][1])
    assert not torch.allclose(alone["sft"][1], alone[None][1])
    assert not torch.allclose(alone["sft"][1], alone["rag_sft"][1])


def test_examples_over_max_length_keep_their_answer(tiny_corpus_dir):
    from assistant.model.loading import load_tokenizer

    tok = load_tokenizer(TINY)
    long_passages = "Passages:\n" + "\n".join(f"[{i}] filler text about bikes number {i}." for i in range(200))
    rows = [training.example([{"role": "system", "content": "Be brief."},
                              {"role": "user", "content": long_passages + "\n\nQuestion: How long?"}], "Within 21 days."),
            training.example([{"role": "user", "content": "Short?"}], "Yes."),
            training.example([{"role": "user", "content": "Q"}], "word " * 400)]  # the answer alone is too long
    fitted, counts = training.fit_examples(rows, tok, 128)
    assert counts == {"truncated_examples": 1, "dropped_examples": 1} and len(fitted) == 2
    cut = fitted[0]
    assert cut["completion"] == rows[0]["completion"]  # the answer is whole
    assert cut["prompt"][-1]["content"].endswith("Question: How long?") and "…" in cut["prompt"][-1]["content"]
    text = tok.apply_chat_template(cut["prompt"] + cut["completion"], tokenize=False)
    assert len(tok(text, add_special_tokens=False)["input_ids"]) <= 128
    assert fitted[1] == rows[1]
