"""LoRA fine-tuning with TRL's SFTTrainer + PEFT: the `sft` and `rag_sft` adapters.

Data: the train split's answerable QA pairs as prompt-completion conversations (system prompt +
question -> reference answer), the exact prompt the variants serve, so the loss falls on the
answer tokens only. `rag_sft` puts retrieved passages in the prompt, RAFT-style (gold passage plus
distractors, the gold left out of a share of prompts). A corpus without train QA pairs gets
continued training on its document chunks instead (unsupervised fine-tuning). The val split gives
the eval loss that early stopping watches.

Artifacts, in `runs/<corpus>/<variant>/`: `checkpoints/` (resumable after any crash, `kill -9`
included), `adapter/` (PEFT's own format), `training_log.json`, and `build.json`, written last: an
adapter counts as built only when build.json holds the current fingerprint.

Scale-out: the Trainer runs unchanged under `accelerate launch -m assistant.variants.training CORPUS`
(data parallel over GPUs or nodes); on CUDA it trains in bf16.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from assistant.config import ChunkSettings, LoraSettings
from assistant.corpus.chunking import chunk_documents, token_counter
from assistant.corpus.corpus import Corpus, QAItem, corpus_lock, load_corpus
from assistant.corpus.runs import ADAPTER, BUILD_FILE, CHECKPOINTS, LOG_FILE, TENSORBOARD
from assistant.errors import NotBuilt
from assistant.model.loading import load_tokenizer, pick_device, pick_dtype, resolve_model
from assistant.runtime import peak_memory_mb, quiet_libraries, report_card
from assistant.storage import atomic_dir, atomic_write_json, read_json
from assistant.text import contains_fact  # the one normaliser: "thirty days" holds "30 days"
from assistant.variants.rag import PROMPT_VERSION, rag_messages
from assistant.variants.retrieval import Retriever, Source, build_index, index_fingerprint, is_index_fresh

FORMAT = 1  # bump when the training data recipe changes: adapters built before retrain
RAFT_FIELDS = {"distractors", "gold_fraction", "rag_sft_epochs"}  # settings that only rag_sft reads
SFT_ONLY_FIELDS = {"epochs"}  # settings that only sft reads
MEMORY_FIELDS = {"max_batch_tokens"}  # how a step is computed, not what: never a reason to retrain


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- data -------------------------------------------------------------------------------------
def example(prompt: list[dict], answer: str) -> dict:
    """One prompt-completion conversation: TRL puts the loss on the completion only."""
    return {"prompt": prompt, "completion": [{"role": "assistant", "content": answer}]}


def reference_answer(q: QAItem) -> str:
    return q.answer.strip() or "; ".join(q.key_facts)


def training_questions(corpus: Corpus, split: str) -> list[QAItem]:
    """Answerable questions with something to learn; unanswerable ones stay test-only."""
    return [q for q in corpus.questions(split, "answerable") if reference_answer(q)]


def qa_examples(corpus: Corpus, split: str) -> list[dict]:
    """Closed-book examples: the system prompt and question exactly as `sft` serves them."""
    system = corpus.config.system_prompt
    return [example([{"role": "system", "content": system}, {"role": "user", "content": q.question}],
                    reference_answer(q)) for q in training_questions(corpus, split)]


def text_examples(corpus: Corpus, tokenizer, max_tokens: int) -> list[dict]:
    """Document chunks for plain language modelling (corpora without QA pairs)."""

    # The heading trail leads each chunk, so the model sees which topic the text belongs to.
    size = max(16, min(max_tokens - 32, 2048))
    chunks = chunk_documents(corpus.documents, ChunkSettings(chunk_tokens=size, overlap_tokens=0),
                             token_counter(tokenizer))
    return [{"text": c.embedding_text()} for c in chunks]


def _has_facts(text: str, facts: list[str]) -> int:
    return sum(contains_fact(text, f) for f in facts)


def gold_passage(q: QAItem, chunks: list, hits: list):
    """The chunk of the question's source document holding most of its key facts (None if unknown).

    Ties go to the chunk the retriever ranked higher, then to document order.
    """

    rank = {(h.path, h.text): h.rank for h in hits}
    candidates = [c for c in chunks if c.path == q.source]
    if not candidates:
        return None
    best = max(candidates, key=lambda c: (_has_facts(c.text, q.key_facts), -rank.get((c.path, c.text), 10**6)))
    return Source(best.path, best.heading, best.text, 0.0, 0)


def raft_examples(corpus: Corpus, retriever, split: str, settings: LoraSettings) -> tuple[list[dict], dict]:
    """RAFT prompts: gold + `distractors` retrieved passages, the gold dropped from a share of them.

    Distractors are the best-ranked passages that are not the gold and do not hold every key fact
    (hard negatives). Without its gold a prompt gets one more distractor, so every prompt holds the
    same number of passages, and the target stays the reference answer: the model must answer from
    what it learnt. With the gold present the answer cites it as `[n]`, as the rag instruction asks.
    Passage order is shuffled with a per-question seed, so the data is deterministic.
    """

    system = corpus.config.system_prompt
    questions = training_questions(corpus, split)
    n_passages = settings.distractors + 1
    results = retriever.search_many([q.question for q in questions], n_passages + 4)
    rows, with_gold = [], 0
    for q, hits in zip(questions, results):
        rng = random.Random(f"{settings.seed}:{q.id}")
        gold = gold_passage(q, retriever.chunks, hits)
        keep_gold = gold is not None and rng.random() < settings.gold_fraction
        others = [h for h in hits if (gold is None or h.text != gold.text)
                  and not (q.key_facts and _has_facts(h.text, q.key_facts) == len(q.key_facts))]
        passages = ([gold] if keep_gold else []) + others[:n_passages - keep_gold]
        rng.shuffle(passages)
        answer = reference_answer(q)
        if keep_gold:
            answer = f"{answer} [{passages.index(gold) + 1}]"
        rows.append(example(rag_messages(system, q.question, passages), answer))
        with_gold += keep_gold
    return rows, {"prompts_with_gold": with_gold, "prompts_without_gold": len(rows) - with_gold}


def row_tokens(row: dict, tokenizer) -> int:
    """Tokens of a training row as the Trainer will see it (chat template applied to a conversation)."""
    if "prompt" in row:
        text = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
    else:
        text = row["text"]
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def micro_batch_size(s: LoraSettings, longest: int) -> int:
    """Rows per forward/backward pass: the largest divisor of `batch_size` whose rows at the longest
    row's length fit `max_batch_tokens` (at least one row). A divisor, so that gradient accumulation
    still makes steps of exactly `batch_size` rows."""
    fits = [d for d in range(1, s.batch_size + 1)
            if s.batch_size % d == 0 and (not s.max_batch_tokens or d * longest <= s.max_batch_tokens)]
    return max(fits, default=1)


def fit_examples(rows: list[dict], tokenizer, max_length: int) -> tuple[list[dict], dict]:
    """Prompt-completion rows cut to `max_length` tokens by shortening the prompt's last message
    (the passages, or a long question) in its middle, never the answer: the Trainer would cut the
    end of the sequence, i.e. the very completion the loss is on. Rows whose answer alone is too
    long are dropped. Returns the rows and the counts for the training log."""
    def shorten(text: str, k: int) -> str:
        start = int(0.4 * (len(text) - k))
        return text[:start] + " … " + text[start + k:]

    out, truncated, dropped = [], 0, 0
    for row in rows:
        if "prompt" not in row or row_tokens(row, tokenizer) <= max_length:
            out.append(row)
            continue
        head, text = row["prompt"][:-1], row["prompt"][-1]["content"]

        def fits(k: int) -> bool:
            prompt = head + [{**row["prompt"][-1], "content": shorten(text, k)}]
            return row_tokens({"prompt": prompt, "completion": row["completion"]}, tokenizer) <= max_length

        if not fits(len(text)):
            dropped += 1
            continue
        lo, hi = 0, len(text)  # the fewest characters to remove
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if fits(mid) else (mid + 1, hi)
        out.append({**row, "prompt": head + [{**row["prompt"][-1], "content": shorten(text, lo)}]})
        truncated += 1
    if truncated or dropped:
        _log(f"{truncated} example(s) over max_length={max_length} tokens had their prompt shortened (answers kept); "
             f"{dropped} dropped (the answer alone is too long)")
    return out, {"truncated_examples": truncated, "dropped_examples": dropped}


# -- fingerprints and state -------------------------------------------------------------------
def variant_dir(corpus: Corpus, variant: str) -> Path:
    return corpus.runs.variant(variant)


def adapter_dir(corpus: Corpus, variant: str) -> Path:
    return corpus.runs.adapter(variant)


def fingerprint(corpus: Corpus, variant: str) -> str:
    """Hash of everything the adapter depends on: data, settings, prompt format, base model."""
    cfg = corpus.config
    h = hashlib.sha256(f"format={FORMAT}\0{variant}\0{cfg.model.name}\0{cfg.system_prompt}\0".encode())
    exclude = (SFT_ONLY_FIELDS if variant == "rag_sft" else RAFT_FIELDS) | MEMORY_FIELDS  # tuning one never retrains the other
    h.update(cfg.lora.model_dump_json(exclude=exclude).encode())
    for q in corpus.qa:
        if q.split in ("train", "val") and q.kind == "answerable":
            h.update(q.model_dump_json().encode())
    if variant == "rag_sft" or not training_questions(corpus, "train"):
        corpus.hash_documents(h)  # the documents are training data too
    if variant == "rag_sft":
        h.update(f"{index_fingerprint(corpus)}\0{PROMPT_VERSION}\0".encode())
        h.update(cfg.retrieval.model_dump_json().encode())
    return h.hexdigest()[:16]


def is_trained(corpus: Corpus, variant: str) -> bool:
    """True when a complete adapter for the current data and settings is on disk."""
    folder = variant_dir(corpus, variant)
    report = read_json(folder / BUILD_FILE)
    return (report is not None and report.get("fingerprint") == fingerprint(corpus, variant)
            and (folder / ADAPTER / "adapter_config.json").is_file())


def last_checkpoint(folder: Path, fp: str) -> str | None:
    """The newest complete checkpoint of a run on the same data and settings, else None.

    Checkpoints of another fingerprint are deleted; so are half-written ones (a crash while saving
    leaves a folder without trainer_state.json, which the Trainer writes last).
    """
    stamp = folder / "fingerprint"
    if folder.exists() and (stamp.read_text().strip() if stamp.exists() else "") != fp:
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fp)
    for p in folder.glob("checkpoint-*"):
        if not (p / "trainer_state.json").is_file():
            shutil.rmtree(p, ignore_errors=True)
    return last_checkpoint_readonly(folder)


# -- trainer ----------------------------------------------------------------------------------
@dataclass
class TrainJob:
    variant: str
    train: list[dict]
    val: list[dict]
    epochs: float
    mode: str  # "qa": prompt-completion, answer-only loss; "text": language modelling on documents
    extra: dict = field(default_factory=dict)  # variant-specific facts for build.json


def lora_config(s: LoraSettings):
    from peft import LoraConfig

    return LoraConfig(r=s.r, lora_alpha=s.alpha, lora_dropout=s.dropout, target_modules=s.target_modules,
                      bias="none", task_type="CAUSAL_LM")


def sft_config(s: LoraSettings, output_dir: Path, epochs: float, steps_per_epoch: int, has_eval: bool,
               device_type: str, dtype, progress: bool = True, micro_batch: int | None = None, **overrides):
    """Trainer settings: the measured fast path on CPU (see bench/training.py), bf16 on CUDA.

    The largest single gain is not a setting: train() uses SharedPrefixSFTTrainer, which runs the
    system prompt once per batch (assistant/variants/shared_prefix.py). `micro_batch` (a divisor of
    `batch_size`, micro_batch_size()) bounds memory: each step accumulates the gradients of
    batch_size / micro_batch passes; the length-grouped sampler still groups whole steps, so the rows
    of every step are the same as without it."""
    import torch
    from trl import SFTConfig

    every = s.eval_steps or steps_per_epoch
    settings = dict(
        output_dir=str(output_dir),
        num_train_epochs=epochs,
        per_device_train_batch_size=micro_batch or s.batch_size,
        per_device_eval_batch_size=micro_batch or s.batch_size,
        gradient_accumulation_steps=s.batch_size // (micro_batch or s.batch_size),
        learning_rate=s.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, steps_per_epoch // 4),
        weight_decay=0.0,
        max_length=s.max_length,
        seed=s.seed,
        data_seed=s.seed,
        # Speed (bench/training.py measures each): no activation recomputation (a 135M model's
        # activations fit easily), fp32 on CPUs without native bf16, length-grouped batches with
        # dynamic padding so little compute goes to pad tokens.
        **{checkpointing_argument(SFTConfig): False},
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        use_cpu=device_type == "cpu",
        train_sampling_strategy="group_by_length",
        dataloader_num_workers=0,
        # Checkpoints double as the resume points; a LoRA checkpoint is a few tens of MB.
        save_strategy="steps",
        save_steps=every,
        save_total_limit=1,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=every if has_eval else None,
        load_best_model_at_end=has_eval,
        metric_for_best_model="eval_loss" if has_eval else None,
        greater_is_better=False if has_eval else None,
        logging_steps=1,
        # Loss curves for TensorBoard, written locally (nothing leaves the machine); train() points
        # the writer at the variant's folder.
        report_to=["tensorboard"] if tensorboard_available() else "none",
        disable_tqdm=not progress,
    )
    return SFTConfig(**{**settings, **overrides})


def checkpointing_argument(config_class: type) -> str:
    """TrainingArguments' switch for activation recomputation: `activation_checkpointing` from
    transformers 5.24, `gradient_checkpointing` before (TRL's SFTConfig turns it on by default)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(config_class)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def tensorboard_available() -> bool:
    from transformers.integrations import is_tensorboard_available

    return is_tensorboard_available()


def log_to_tensorboard(trainer, folder: Path, fresh: bool) -> None:
    """Point the Trainer's TensorBoard writer at `folder` (its default is a dated folder inside the
    checkpoints); a fresh run (not a resume) starts from an empty folder, so one adapter, one curve."""
    from transformers.integrations import TensorBoardCallback

    for cb in trainer.callback_handler.callbacks:
        if isinstance(cb, TensorBoardCallback):
            if fresh and trainer.is_world_process_zero():
                shutil.rmtree(folder, ignore_errors=True)
            cb.logging_dir = str(folder)


def score_labelled_positions_only() -> bool:
    """Let TRL's fused LM head skip unlabelled positions on CPU too; return whether it applies.

    TRL computes the loss by projecting hidden states through the LM head in tiles. On devices
    without Triton it scores every position, prompt and padding included, to keep tile shapes
    fixed for compilers; nothing is compiled on CPU, and there the head (49k-token vocabulary) costs
    about as much as the 30 layers below it. QA prompts are ~2/3 of the tokens, so scoring the
    answer tokens only is the largest single gain measured by bench/training.py. Same loss, same
    gradients: only which rows enter the projection changes. Without the hook (another TRL
    version) training runs unchanged, just slower.
    """
    try:
        from trl.trainer import utils as trl_utils
    except ImportError:
        return False
    original = getattr(trl_utils, "_use_triton", None)
    if original is None or getattr(original, "assistant_patch", False):
        return original is not None

    def compact(device) -> bool:
        return device.type == "cpu" or original(device)

    compact.assistant_patch, compact.original = True, original
    trl_utils._use_triton = compact
    return True


# Positions x vocabulary entries per tile of TRL's fused LM head on CPU (TRL's own: 4096 x 32768).
CPU_LM_HEAD_TILE = (1024, 8192)


def small_lm_head_tiles(device_type: str) -> bool:
    """On CPU, run TRL's fused LM head in tiles of CPU_LM_HEAD_TILE; return whether it applies.

    Without Triton TRL folds each tile of logits with torch ops, which make several fp32 copies of
    it: 512 MB each at its 4096 x 32768 tiles, 3.3 GB of the 9.5 GB that 8 rows of 512 tokens
    peaked at (bench/training_memory.py). Smaller tiles change only the order in which the online
    log-sum-exp adds up the vocabulary: same loss and gradients up to rounding. On GPUs the Triton
    kernel folds tiles in registers, so their size is left alone there.
    """
    try:
        from trl.kernels import chunked_logprob
        from trl.trainer import utils as trl_utils
    except ImportError:
        return False
    if device_type != "cpu" or not hasattr(chunked_logprob, "TOKEN_CHUNK_SIZE") \
            or not hasattr(trl_utils, "_CHUNKED_LOGPROB_CHUNK_SIZE"):
        return False
    chunked_logprob.TOKEN_CHUNK_SIZE, trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE = CPU_LM_HEAD_TILE
    return True


def _callbacks(s: LoraSettings, has_eval: bool) -> list:
    from transformers import EarlyStoppingCallback, ProgressCallback, TrainerCallback

    class Progress(ProgressCallback):
        """The Trainer's bar, with the latest losses as postfix instead of one printed dict per step."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and self.training_bar is not None and logs:
                shown = {k: f"{v:.3f}" for k, v in logs.items() if k in ("loss", "eval_loss")}
                if shown:
                    self.training_bar.set_postfix(shown, refresh=False)

        def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
            pass  # no second bar for the short val pass

    class StepTimer(TrainerCallback):
        """Time spent in optimisation steps (excludes evaluation and checkpoint writing)."""

        def __init__(self):
            self.seconds, self._t = 0.0, None

        def on_step_begin(self, args, state, control, **kwargs):
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if self._t is not None:
                self.seconds += time.perf_counter() - self._t

    callbacks = [Progress(), StepTimer()]
    if has_eval and s.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=s.early_stopping_patience))
    return callbacks


def _curves(history: list[dict]) -> dict:
    train = [{"step": h["step"], "epoch": round(h["epoch"], 4), "loss": h["loss"],
              "learning_rate": h.get("learning_rate")} for h in history if "loss" in h]
    val = [{"step": h["step"], "epoch": round(h["epoch"], 4), "loss": h["eval_loss"]}
           for h in history if "eval_loss" in h]
    per_epoch: dict[int, list[float]] = {}
    for t in train:  # epoch e holds the steps in (e-1, e]
        per_epoch.setdefault(max(1, int(-(-t["epoch"] // 1))), []).append(t["loss"])
    epochs = [{"epoch": e, "loss": sum(v) / len(v)} for e, v in sorted(per_epoch.items())]
    return {"train_loss": train, "val_loss": val, "train_loss_per_epoch": epochs}


def train(corpus: Corpus, job: TrainJob, fp: str, progress: bool = True) -> dict:
    """Train (or resume) the job's adapter and publish it; return the build report."""
    from datasets import Dataset
    from datasets.utils.logging import disable_progress_bar
    from transformers import AutoModelForCausalLM, ProgressCallback

    from assistant.variants.shared_prefix import SharedPrefixSFTTrainer  # imports trl (3.8 s): only when training

    disable_progress_bar()  # the dataset preparation bars; training keeps its own
    score_labelled_positions_only()
    cfg, s = corpus.config, corpus.config.lora
    folder = variant_dir(corpus, job.variant)
    state = process_state(cfg.model.device)
    if state.is_main_process:
        # build.json stays: the earlier adapter is still good (a changed fingerprint already marks
        # it stale) until publish() swaps in a complete new one, so a killed rebuild loses nothing.
        folder.mkdir(parents=True, exist_ok=True)
        resume = last_checkpoint(folder / CHECKPOINTS, fp)
    state.wait_for_everyone()
    if not state.is_main_process:
        resume = last_checkpoint_readonly(folder / CHECKPOINTS)

    device = state.device if state.distributed_type.value != "NO" else pick_device(cfg.model.device)
    dtype = pick_dtype(cfg.model.dtype, device)
    small_lm_head_tiles(device.type)
    path = resolve_model(cfg.model.name)
    tokenizer = load_tokenizer(path)
    job.train, fitted = fit_examples(job.train, tokenizer, s.max_length)
    job.val, fitted_val = fit_examples(job.val, tokenizer, s.max_length)
    fitted = {k: fitted[k] + fitted_val[k] for k in fitted}
    longest = min(s.max_length, max(row_tokens(r, tokenizer) for r in job.train + job.val))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    has_eval = bool(job.val)
    world = max(1, state.num_processes)
    steps_per_epoch = max(1, -(-len(job.train) // (s.batch_size * world)))
    # QA rows: loss on the answer only; text rows: on every token.
    args = sft_config(s, folder / CHECKPOINTS, job.epochs, steps_per_epoch, has_eval, device.type, dtype, progress,
                      micro_batch=micro_batch_size(s, longest), completion_only_loss=job.mode == "qa")
    trainer = SharedPrefixSFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(job.train),
                                     eval_dataset=Dataset.from_list(job.val) if has_eval else None,
                                     processing_class=tokenizer, peft_config=lora_config(s),
                                     callbacks=_callbacks(s, has_eval))
    for cb in [c for c in trainer.callback_handler.callbacks if type(c) is ProgressCallback]:
        trainer.remove_callback(cb)  # replaced by the quieter subclass in _callbacks
    log_to_tensorboard(trainer, folder / TENSORBOARD, fresh=resume is None)
    timer = next(c for c in trainer.callback_handler.callbacks if type(c).__name__ == "StepTimer")
    start_step = int(resume.rsplit("-", 1)[-1]) if resume else 0
    _log(f"{job.variant}: {'resuming at step ' + str(start_step) if resume else 'training'} on "
         f"{len(job.train)} {'QA pairs' if job.mode == 'qa' else 'document chunks'} "
         f"({len(job.val)} val), {job.epochs:g} epochs, {device.type} {str(dtype).removeprefix('torch.')}")
    t0 = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=resume)
    wall = time.perf_counter() - t0

    trainable, total = trainer.model.get_nb_trainable_parameters()
    st = trainer.state
    # TRL counts the real (non-pad) tokens of this session, summed over processes; after a resume
    # the history also holds the earlier session's entries, hence the step filter.
    tokens = next((h["num_tokens"] for h in reversed(st.log_history)
                   if "num_tokens" in h and h["step"] > start_step), 0)
    curves = _curves(st.log_history)
    log = {
        "variant": job.variant, "mode": job.mode, "base_model": cfg.model.name, "device": device.type,
        "dtype": str(dtype).removeprefix("torch."), "processes": world,
        "train_examples": len(job.train), "val_examples": len(job.val),
        # rewordings added by `assistant questions --augment N` among the train questions (0: none)
        "augmented_train_examples": sum(q.origin == "augmented" for q in corpus.questions("train", "answerable")),
        # rows per forward/backward pass and passes per step (micro_batch_size: the memory bound)
        "micro_batch": args.per_device_train_batch_size, "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "epochs_planned": job.epochs, "epochs_done": round(st.epoch or 0, 3), "steps": st.global_step,
        "max_steps": st.max_steps, "resumed_from_step": start_step,
        "stopped_early": bool(has_eval and st.global_step < st.max_steps),
        "best_step": int(st.best_model_checkpoint.rsplit("-", 1)[-1]) if st.best_model_checkpoint else None,
        "best_val_loss": st.best_metric,
        "final_train_loss": curves["train_loss"][-1]["loss"] if curves["train_loss"] else None,
        "final_val_loss": curves["val_loss"][-1]["loss"] if curves["val_loss"] else None,
        "train_time_s": round(wall, 2), "step_time_s": round(timer.seconds, 2),
        "tokens_seen": tokens,
        # positions not computed because the rows of a batch share them (assistant/variants/shared_prefix.py)
        "shared_prefix_tokens_saved": trainer.prefix_tokens_saved,
        "tokens_per_s": round(tokens / timer.seconds, 1) if timer.seconds else None,
        "peak_memory_mb": peak_memory_mb(), "trainable_params": trainable, "total_params": total,
        "train_runtime_s": output.metrics.get("train_runtime"),
        "settings": s.model_dump(), "fingerprint": fp, **fitted, **job.extra, **curves,
        "environment": report_card(training=(device, dtype)),
    }
    if not trainer.is_world_process_zero():
        return log
    return publish(corpus, job.variant, trainer.model, log, fp)


def process_state(device_setting: str):
    """Accelerate's view of this process: one of several under `accelerate launch`, or alone.

    On a machine without an accelerator, PartialState only recognises a multi-process launch
    (torchrun, which `accelerate launch --multi_gpu` starts) when told it runs on the CPU; without
    that, every process would believe it is the only one.
    """
    from accelerate import PartialState

    return PartialState(cpu=pick_device(device_setting).type == "cpu")


def last_checkpoint_readonly(folder: Path) -> str | None:
    done = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return str(max(done, key=lambda p: int(p.name.split("-")[-1]))) if done else None


def publish(corpus: Corpus, variant: str, model, log: dict, fp: str) -> dict:
    """Save the adapter under a temporary name, rename it into place, then the log, build.json last."""
    folder = variant_dir(corpus, variant)
    # The old adapter is swapped out only once the new one is complete (and put back by the next
    # build if a kill lands between the two renames).
    atomic_dir(folder / ADAPTER, lambda tmp: model.save_pretrained(str(tmp)), replace=True)
    atomic_write_json(folder / LOG_FILE, log)
    size = sum(p.stat().st_size for p in (folder / ADAPTER).rglob("*") if p.is_file())
    report = {
        "fingerprint": fp, "build_time_s": log["train_time_s"], "artifact_bytes": size,
        "peak_memory_mb": log["peak_memory_mb"], "trainable_params": log["trainable_params"],
        "train_tokens_per_s": log["tokens_per_s"], "train_examples": log["train_examples"],
        "epochs_done": log["epochs_done"], "steps": log["steps"], "resumed_from_step": log["resumed_from_step"],
        "final_train_loss": log["final_train_loss"], "best_val_loss": log["best_val_loss"], "mode": log["mode"],
        "environment": log.get("environment"),
    }
    atomic_write_json(folder / BUILD_FILE, report)  # last: its presence with this fingerprint marks the build done
    _log(f"{variant}: {log['steps']} steps, {log['epochs_done']:g} epochs in {log['train_time_s']:.0f} s, "
         f"{log['tokens_per_s'] or 0:.0f} tokens/s, train loss {log['final_train_loss'] or float('nan'):.3f}, "
         f"best val loss {log['best_val_loss'] if log['best_val_loss'] is not None else float('nan'):.3f} -> "
         f"{folder / ADAPTER}")
    return report


# -- the two fine-tuned variants --------------------------------------------------------------
def sft_job(corpus: Corpus) -> TrainJob:
    s = corpus.config.lora
    train_rows = qa_examples(corpus, "train")
    if train_rows:
        return TrainJob("sft", train_rows, qa_examples(corpus, "val"), s.epochs, "qa")

    tokenizer = load_tokenizer(resolve_model(corpus.config.model.name))
    rows = text_examples(corpus, tokenizer, s.max_length)
    _log(f"sft: no train QA pairs in {corpus.qa_path}; continued training on {len(rows)} document chunks")
    return TrainJob("sft", rows, [], s.epochs, "text")


def rag_sft_job(corpus: Corpus) -> TrainJob:
    s = corpus.config.lora
    if not training_questions(corpus, "train"):
        raise _not_built(f"rag_sft needs answerable train questions in {corpus.qa_path} "
                         "(RAFT trains on questions with retrieved passages); add some or use the sft variant")
    retriever = Retriever.load(corpus)
    train_rows, stats = raft_examples(corpus, retriever, "train", s)
    val_rows, _ = raft_examples(corpus, retriever, "val", s)
    return TrainJob("rag_sft", train_rows, val_rows, s.rag_sft_epochs, "qa", {"raft": stats})


def _not_built(msg: str) -> Exception:
    return NotBuilt(msg)


def build(corpus: Corpus, variant: str, force: bool = False, progress: bool = True) -> dict:
    """Train the variant's adapter unless an up-to-date one exists (resuming any interrupted run)."""
    if not force and is_trained(corpus, variant):
        return {**(read_json(variant_dir(corpus, variant) / BUILD_FILE) or {}), "reused": True}
    if variant == "rag_sft":
        with process_state(corpus.config.model.device).main_process_first():  # one process builds the index, the others read it
            if not is_index_fresh(corpus):
                build_index(corpus)
        job = rag_sft_job(corpus)
    elif variant == "sft":
        job = sft_job(corpus)
    else:
        raise ValueError(f"{variant!r} is not a fine-tuned variant")
    fp = fingerprint(corpus, variant)
    if force:
        shutil.rmtree(variant_dir(corpus, variant) / CHECKPOINTS, ignore_errors=True)
    return train(corpus, job, fp, progress)


def main(argv: list[str] | None = None) -> int:
    """`python -m assistant.variants.training CORPUS --variant sft`, also under `accelerate launch`."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m assistant.variants.training", description=main.__doc__)
    p.add_argument("corpus")
    p.add_argument("--variant", choices=["sft", "rag_sft"], default="sft")
    p.add_argument("--force", action="store_true", help="retrain even when up to date")
    a = p.parse_args(argv)
    quiet_libraries()
    corpus = load_corpus(a.corpus)
    if process_state(corpus.config.model.device).num_processes > 1:  # accelerate launch: the launcher's job
        report = build(corpus, a.variant, force=a.force)
    else:
        with corpus_lock(corpus):
            report = build(corpus, a.variant, force=a.force)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
