"""The generation engine shared by every variant: batched decoding and token streaming.

One `Engine` wraps one loaded base model. Fine-tuned variants are LoRA adapters loaded onto that
same base (`Engine.add_adapter`), so the four variants share one copy of the weights; each request
names the adapter to use, or none for the plain base model. Evaluation (`generate`), the chat
(`stream`, `stream_many`) and the API (batching.Scheduler) all decode through one loop, continuous
batching with a shared-prefix cache (decoding.py).
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessorList, PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import DynamicCache

from assistant.model import invariance, kernels
from assistant.model.decoding import MIN_CHUNK, DecodePlan, Decoder, DecodeStats, PrefixCache, Row
from assistant.model.loading import cache_argument
from assistant.model.sampling import GREEDY, Sampling
from assistant.model.slots import KV
from assistant.runtime import release_freed_memory, torch_threads

Messages = list[dict[str, str]]
MIN_PREFIX = 16  # shorter shared prefixes are not worth their own forward pass
# Rows of a prefill block where decoding steps are capped (Engine.plan): an Intel AMX Xeon in bf16
# computes 1 to 32 rows with one kernel; a lone 25-token chunk in blocks of 16 took 67 ms to admit
# against 52 ms in one call.
PREFILL_BLOCK = 32


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float  # wall time from joining the batch to the last token
    batch_size: int = 1  # rows decoded together with it, on average over its steps


class Engine:
    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                 max_new_tokens: int = 64, batch_size: int = 16, batch_invariant: bool = True, pack: bool = True):
        # The engine owns its model (inference only): on CPU its linear layers run on prepacked weights
        # (kernels.py), before any adapter wraps them.
        if pack:
            kernels.pack_linears(model)
        self.packed = sum(isinstance(m, kernels.PackedLinear) for m in model.modules())  # layers
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.batch_tokens: int | None = None  # see batched()
        self.batch_invariant = batch_invariant
        self._dtype = model.dtype  # the base model's; PEFT may load adapters in another
        if batch_invariant:  # neither padding nor batch neighbours may change an answer: see invariance.py
            model.set_attn_implementation(invariance.register())
        self.adapters: dict[str, str] = {}
        self._memo: dict | None = None  # prompt -> Generation, within reuse_answers()
        self.prefixes = PrefixCache()  # shared prompt prefixes' keys and values, per adapter
        self._system_ids: dict[str, list[int]] = {}  # system prompt -> its rendered turn's token ids
        self._texts: dict[int, str] = {}  # token id -> its text (chunk_ends)
        self.stats = DecodeStats()
        # One forward pass at a time: adapters are loaded and routed on the shared model.
        self._lock = threading.RLock()

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    def plan(self, max_rows: int | None = None) -> DecodePlan:
        """How this engine keeps an answer independent of its batch on this machine, probed once per
        dtype, thread count and batch size (see invariance.py): run every decoding step with at
        least the fewest rows whose matrix kernels no longer depend on the row count (filler rows
        make up the rest); where that holds only up to a row count (PREFILL_BLOCK, else the batch
        size; measured: an Intel AMX Xeon in bf16 computes 33 rows and more with other kernels),
        cap every step there, and prefill prompts together with their linear layers in blocks of
        at most that many rows; else, on CPU, try the same with one thread; else decode each
        question alone, which is what a lone question does by definition. Newcomers' prompts are
        prefilled together where a second probe finds batches of hundreds of rows exact from that
        row count on too (`invariance.many_rows_invariant`). Without batch invariance: plain
        batches, prompts prefilled together. `max_rows`: the most live rows a step will hold (the
        engine's batch size by default)."""
        packed = self.packed > 0
        if not self.batch_invariant:
            return DecodePlan(rows=1, together=True, packed=packed)
        shapes = invariance.linear_shapes(self.model)
        max_rows = max(max_rows or self.batch_size, 4)
        # Under the lock: the one-thread probe changes the process's thread count while it runs.
        with self._lock:
            for threads in (None, 1) if self.device.type == "cpu" and torch.get_num_threads() > 1 else (None,):
                with torch_threads(threads) if threads else contextlib.nullcontext():
                    rows = invariance.min_rows(shapes, self.dtype, self.device.type, max_rows)
                    if rows is not None:
                        return DecodePlan(rows=rows, threads=threads, together=self._together(shapes, rows),
                                          packed=packed, attention=self._attention())
                    # Capped steps, at PREFILL_BLOCK rows where those agree too (fewer calls for
                    # the prefill's blocks), else at the batch size.
                    for most in sorted({max(max_rows, PREFILL_BLOCK), max_rows}, reverse=True):
                        rows = invariance.min_rows(shapes, self.dtype, self.device.type, most, most=most)
                        if rows is None:
                            continue
                        # Prompts share prefill passes, each packed layer computing blocks of at most
                        # `most` rows (kernels.row_blocks); not with plain layers beside (LoRA's), or
                        # where a last block could fall short of `rows`.
                        together = rows == 1 and all(p for _, _, p in shapes)
                        capped = DecodePlan(rows=rows, threads=threads, most=most, packed=packed,
                                            together=together, attention=self._attention())
                        # Worth it where a step holds two live rows beside every adapter group's fillers.
                        if capped.slots(max_rows, len(self.adapters) + 1) > 1:
                            return capped
        return DecodePlan(rows=1, alone=True, packed=packed)

    def _together(self, shapes: invariance.Shapes, rows: int) -> bool:
        return invariance.many_rows_invariant(shapes, self.dtype, self.device.type, rows)

    def _attention(self) -> str | None:
        """How a decoding step's attention can cover its rows in one call per run (this thread count)."""
        c = self.model.config
        heads = c.num_attention_heads
        dim = getattr(c, "head_dim", None) or c.hidden_size // heads
        return invariance.batched_decoding(self.dtype, self.device.type, heads,
                                           getattr(c, "num_key_value_heads", None) or heads, dim)

    @contextlib.contextmanager
    def decoding_threads(self, plan: DecodePlan) -> Iterator[None]:
        """The thread count the plan was probed with, while decoding."""
        with torch_threads(plan.threads) if plan.threads else contextlib.nullcontext():
            yield

    # -- adapters ---------------------------------------------------------------------------
    def add_adapter(self, name: str, path: str) -> None:
        """Load a PEFT adapter onto the shared base model under `name`."""
        from peft import PeftModel

        with self._lock:
            if self.adapters.get(name) == path:
                return
            if isinstance(self.model, PeftModel):
                if name in self.adapters:  # same name, another folder (another corpus): replace it
                    self.model.delete_adapter(name)
                self.model.load_adapter(path, adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.model, path, adapter_name=name)
            # PEFT keeps a bf16 model's adapters in fp32; its mixed-adapter batches (the chat) round
            # each adapter's output to bf16 before adding it, its one-adapter batches after: in the
            # engine's dtype both paths add the same numbers. Only the adapter's weights are cast:
            # model.to() would also round buffers kept in fp32 on purpose (RoPE's inv_freq).
            for param_name, param in self.model.named_parameters():
                if f".{name}." in param_name:
                    param.data = param.data.to(self.dtype)
            self.model.eval()
            self.adapters[name] = path
            self.prefixes.clear()  # computed through the model before it had this adapter

    @contextlib.contextmanager
    def using(self, adapter: str | None):
        """Route the forward pass through `adapter`, or through the bare base model when None."""
        with self._lock:
            if not self.adapters:
                if adapter:
                    raise KeyError(f"adapter {adapter!r} is not loaded")
                yield
            elif adapter is None:
                with self.model.disable_adapter():
                    yield
            else:
                self.model.set_adapter(adapter)
                yield

    # -- prompts ----------------------------------------------------------------------------
    def render(self, messages: Messages) -> str:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def adapter_kwargs(self, adapters: Sequence[str | None]) -> dict:
        """The forward pass's routing of each row through its adapter (PEFT mixed-adapter batch,
        "__base__" being the bare model); nothing while no adapter is loaded."""
        unknown = sorted({a for a in adapters if a and a not in self.adapters})
        if unknown:
            raise KeyError(f"adapters {unknown} are not loaded")
        return {"adapter_names": [a or "__base__" for a in adapters]} if self.adapters else {}

    # -- the shared prefix ------------------------------------------------------------------
    def prefix_length(self, messages: Messages, ids: Sequence[int]) -> int:
        """How many leading tokens of `ids` (the rendered `messages`) are the chat template's opening
        and the system turn: every prompt with the same system prompt shares them (`prefix_kv`).
        0 without a system turn, or when too short to be worth a second forward pass."""
        if not messages or messages[0].get("role") != "system":
            return 0
        system = messages[0].get("content", "")
        if system not in self._system_ids:
            try:
                text = self.tokenizer.apply_chat_template(messages[:1], add_generation_prompt=False, tokenize=False)
            except Exception:  # a template that refuses a lone system turn: no shared prefix
                text = ""
            self._system_ids[system] = self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        n = 0
        for a, b in zip(ids, self._system_ids[system]):
            if a != b:
                break
            n += 1
        return n if MIN_PREFIX <= n < len(ids) else 0

    def prefix_kv(self, prefix: Sequence[int], adapter: str | None) -> KV:
        """Every layer's keys and values for `prefix` through `adapter`, computed once and kept."""
        def compute() -> KV:
            self.stats.prefilled += len(prefix)
            cache = DynamicCache(config=self.model.config)
            self.model(input_ids=torch.tensor([list(prefix)], device=self.device), use_cache=True, logits_to_keep=1,
                       **{cache_argument(self.model): cache}, **self.adapter_kwargs([adapter]))
            return [(layer.keys, layer.values) for layer in cache.layers]

        source = self.adapters.get(adapter) if adapter else None
        return self.prefixes.get((source, tuple(prefix)), compute)

    def cached_chunks(self, row: Row) -> list[KV]:
        """The keys and values of `row`'s leading chunks after its prefix that the prefix cache holds
        (another prompt computed them), in order; the prompt's last chunk is never cached."""
        source = self.adapters.get(row.adapter) if row.adapter else None
        out = []
        with self._lock:  # the prefix cache is shared with the decoding loop
            for end in row.ends[:-1]:
                kv = self.prefixes.find((source, tuple(row.ids[:end])))
                if kv is None:
                    break
                out.append(kv)
        return out

    def to_prefill(self, row: Row) -> int:
        """How many of `row`'s prompt tokens a prefill would compute now: those after its shared
        prefix, less its cached leading chunks (Decoder.admit copies those)."""
        return len(row.ids) - row.prefix - sum(kv[0][0].shape[2] for kv in self.cached_chunks(row))

    # -- decoding ---------------------------------------------------------------------------
    def row(self, messages: Messages, adapter: str | None = None, max_new_tokens: int | None = None,
            sampling: Sampling = GREEDY, stopped: Callable[[], bool] | None = None) -> Row:
        """A request for the decoding loop (`Decoder`): the rendered prompt and how to answer it."""
        ids = self.tokenizer(self.render(messages), add_special_tokens=False)["input_ids"]
        prefix = self.prefix_length(messages, ids)
        return Row(ids, adapter, max_new_tokens or self.max_new_tokens, sampling, prefix=prefix,
                   chunks=self.chunk_ends(ids, prefix), stopped=stopped)

    def chunk_ends(self, ids: Sequence[int], start: int) -> tuple[int, ...]:
        """Where the chunks of a prompt's tokens after `start` end (Decoder.admit prefills them one
        after the other and caches them): at the first blank line after at least MIN_CHUNK tokens,
        e.g. between RAG passages, at the last blank line (before a RAG prompt's question), and at
        the prompt's end. From the tokens alone, so a prompt is cut the same way whatever else is
        decoding."""
        def text(token: int) -> str:
            if token not in self._texts:
                self._texts[token] = self.tokenizer.decode([token])
            return self._texts[token]

        ends, last = [], start
        for i in range(start + MIN_CHUNK - 1, len(ids) - 1):
            if i + 1 - last >= MIN_CHUNK and (text(ids[i - 1]) + text(ids[i])).endswith("\n\n"):
                ends.append(i + 1)
                last = i + 1
        # The last blank line ends a chunk however near the one before: what follows it (a RAG
        # prompt's question) is then all that differs between prompts over the same passages, and
        # all that a newcomer computes once they are cached (the instruction before it is cached too).
        for i in range(len(ids) - 2, last, -1):
            if (text(ids[i - 1]) + text(ids[i])).endswith("\n\n"):
                ends.append(i + 1)
                break
        return (*ends, len(ids))

    def decoder(self, slots: int | None = None, budget: int | None = None) -> Decoder:
        """A continuous batch of up to `slots` rows (`batch_size` by default; one where the plan
        decodes each question alone)."""
        slots = slots or self.batch_size
        return Decoder(self, self.plan(slots), slots, budget)

    def run(self, rows: Sequence[Row], slots: int | None = None, budget: int | None = None) -> Iterator[Decoder]:
        """Decode `rows` through one continuous batch, each joining as soon as a slot is free, in
        the order given; yields the decoder after every step."""
        decoder = self.decoder(slots, budget)
        waiting = deque(rows)
        try:
            while waiting or decoder.live:
                joining: list[Row] = []
                while waiting and decoder.has_room(waiting[0], joining):
                    joining.append(waiting.popleft())
                decoder.admit(joining)
                decoder.step()
                yield decoder
        finally:
            # The slot cache is most of the engine's memory; glibc keeps what is freed for the process
            # unless told (measured: 570 MB kept after 64 evaluation prompts; the next batch's buffers
            # did not fit in it and the resident set grew by that much).
            decoder.cache.release()
            release_freed_memory()

    def generate(self, conversations: Sequence[Messages], adapter: str | None = None,
                 max_new_tokens: int | None = None, batch_size: int | None = None,
                 progress: bool | str = False) -> list[Generation]:
        """Greedy answers for many conversations, decoded by continuous batching, in input order."""
        max_new = max_new_tokens or self.max_new_tokens
        plan = self.plan()
        rows = [self.row(m, adapter, max_new) for m in conversations]
        # One decoding per distinct prompt (and, within `reuse_answers`, per prompt ever seen): with
        # batch-invariant decoding a copy is the very answer a second decoding would give.
        source = self.adapters.get(adapter) if adapter else None
        keys = [(source, tuple(r.ids), max_new) for r in rows]
        memo = self._memo if self._memo is not None else {}
        first: dict[tuple, int] = {}
        for i, k in enumerate(keys):
            if k not in memo:
                first.setdefault(k, i)
        todo = list(first.values())
        self.stats.reused += len(rows) - len(todo)
        self.stats.alone += len(todo) if plan.alone else 0
        # Longest first, by 128 tokens: a row longer than every live one moves them all to make room
        # (slots.py). Within that, in token order: prompts that start alike (the same first RAG
        # passages) join in one wave and compute their shared chunks once (Decoder.admit).
        order = sorted(todo, key=lambda i: (-len(rows[i].ids) // 128, rows[i].ids))
        bar = tqdm(total=len(rows), desc=progress if isinstance(progress, str) else "generating",
                   disable=not progress, unit="q")
        bar.update(len(rows) - len(todo))
        reported = 0
        for _ in self.run([rows[i] for i in order], batch_size or self.batch_size, self.batch_tokens):
            finished = sum(rows[i].done for i in todo)
            bar.update(finished - reported)
            reported = finished
        bar.close()
        for i in todo:
            memo[keys[i]] = self._generation(rows[i])
        return [memo[k] for k in keys]

    def _generation(self, row: Row) -> Generation:
        text = self.tokenizer.decode(row.tokens, skip_special_tokens=True).strip()
        return Generation(text, len(row.ids), len(row.tokens), row.finished - row.started, row.batch_size)

    @contextlib.contextmanager
    def batched(self, batch_size: int, batch_tokens: int | None = None) -> Iterator[None]:
        """Within: `generate` decodes up to `batch_size` prompts together by default, and no more
        than `batch_tokens` tokens of KV cache (the rows times the longest live prompt with its
        answer's room, `max_new_tokens`; long prompts: fewer rows): a bound on the engine's memory."""
        saved = self.batch_size, self.batch_tokens
        self.batch_size, self.batch_tokens = batch_size, batch_tokens
        try:
            yield
        finally:
            self.batch_size, self.batch_tokens = saved

    @contextlib.contextmanager
    def reuse_answers(self) -> Iterator[None]:
        """Within: a prompt already answered through the same adapter (same weights' folder) with the
        same length limit is not decoded again but answered with the same Generation. The evaluation
        uses it across variants: e.g. `rag` with its gate open sends `prompted`'s very prompt for every
        question its retrieval declines. Only for batch-invariant decoding, where it changes nothing."""
        saved = self._memo
        if self._memo is None and self.batch_invariant:
            self._memo = {}
        try:
            yield
        finally:
            self._memo = saved

    def _processors(self) -> LogitsProcessorList:
        """The logits processors `model.generate` would apply to greedy decoding under the model's
        generation config (none for the default model: a config may add e.g. suppress_tokens); the
        decoding loop applies them row by row."""
        config = copy.deepcopy(self.model.generation_config)
        config.update(do_sample=False, pad_token_id=self.tokenizer.pad_token_id)
        return self.model._get_logits_processor(generation_config=config, device=self.device)

    def _stop_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos])
        ids.add(self.tokenizer.eos_token_id)
        ids.discard(None)
        return ids

    def stream(self, messages: Messages, adapter: str | None = None,
               max_new_tokens: int | None = None, sampling: Sampling = GREEDY) -> Iterator[str]:
        """Yield the answer text as it grows, token by token (for the chat): one row of the decoding
        loop, so it decodes exactly like `generate`."""
        row = self.row(messages, adapter, max_new_tokens, sampling)
        for _ in self.run([row], slots=1):
            yield self.tokenizer.decode(row.tokens, skip_special_tokens=True)

    def stream_many(self, conversations: Sequence[Messages], adapters: Sequence[str | None] | None = None,
                    max_new_tokens: int | None = None,
                    stop_rows: Callable[[], Sequence[bool]] | None = None) -> Iterator[list[StreamRow]]:
        """Decode several conversations together, each through its own adapter, yielding every row's
        text so far after each step: the chat's columns grow together (or, where no row count is
        batch-invariant, one after another: `plan().alone`).

        `stop_rows`, when given, is polled at every step: a row it flags True stops there (marked
        done, no further tokens), so a server can free the row of a client that went away."""
        adapters = list(adapters) if adapters is not None else [None] * len(conversations)
        self.adapter_kwargs(adapters)  # unknown adapters fail here, before any decoding
        rows = [self.row(m, a, max_new_tokens,
                         stopped=(lambda i=i: bool(stop_rows()[i])) if stop_rows is not None else None)
                for i, (m, a) in enumerate(zip(conversations, adapters))]
        for _ in self.run(rows, slots=len(rows)):
            yield [StreamRow(self.tokenizer.decode(r.tokens, skip_special_tokens=True), len(r.tokens),
                             r.reason in ("stop", "cancelled")) for r in rows]


class StreamRow(NamedTuple):
    text: str  # decoded so far
    tokens: int  # generated so far, end-of-sequence excluded
    done: bool  # reached end-of-sequence (rows cut at max_new_tokens end with the stream)
