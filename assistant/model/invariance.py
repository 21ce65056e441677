"""Batch invariance: a question decodes to the same bytes alone and inside any batch, at any padding.

Two things made an answer depend on its batch, both measured on this project's CPUs (README,
"Models and hardware"):

1. Left padding, in attention. SDPA reduces over every key of a padded row, masked ones included,
   so the sums run in another order than for the same question alone: the last logits of the
   default model moved by up to 0.6 in bf16 (fp32: the last bits), enough to flip greedy steps.
   `batch_invariant_attention` runs SDPA row by row over each row's real tokens only: the very
   call a lone question makes. A decoding step over the slot cache, whose rows all start at
   column 0, can instead cover its rows in one masked call (`decoding_attention`) where
   `batched_decoding` finds that the kernel then gives each row the bits it gets alone.
2. The number of rows, in the linear layers. CPU BLAS computes a few rows with other kernels than
   many: here fp32 rows computed 1 to 3 at a time differ in the last bits from 4 or more at a
   time, bf16 rows computed alone (a GEMV: every decoding step of a lone question) from 2 or more.
   (oneDNN on prepacked weights, which the engine's own layers use on CPU (kernels.py): 1 row
   versus 2 or more, in both dtypes.) `min_rows` finds, once per process, the smallest row count
   from which every linear layer's output no longer depends on the batch, on the kernel each layer
   really runs; the engine never decodes fewer rows than that, filling a short batch with copies
   of its last row (whose answers are dropped).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from functools import lru_cache

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from assistant.model import kernels
from assistant.model.slots import SlotCache, width
from assistant.runtime import torch_threads

NAME = "batch_invariant"


def _real_keys(mask: torch.Tensor | None, batch: int, kv_length: int) -> list[tuple[int, int]]:
    """Each row's real keys as (first, end), read from the 4D mask's last query row (True = attend).

    A row's real keys are one run: after its left padding (a decoding step's right-aligned rows),
    before its right padding (newcomers prefilled together). The last query sees all of them: it
    is the row's last real token, or a padding token after it that attends every real key."""
    if mask is None:
        return [(0, kv_length)] * batch
    last = mask[:, 0, -1, :] if mask.dtype == torch.bool else mask[:, 0, -1, :] == 0
    last = last.expand(batch, -1)
    # argmax finds the first True; a row that sees nothing (never in generation) keeps all keys.
    firsts, counts = last.int().argmax(-1).tolist(), last.sum(-1).tolist()
    return [(f, f + n) if n else (0, kv_length) for f, n in zip(firsts, counts)]


def batch_invariant_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                              value: torch.Tensor, attention_mask: torch.Tensor | None,
                              **kwargs) -> tuple[torch.Tensor, None]:
    """SDPA on each row's real keys and queries only; padded query positions get zeros (never read).

    Single-threaded, consecutive rows with the same real keys share one call: CPU SDPA then computes
    every batch element on its own, the same bits alone or beside others (tests/test_generation.py).
    With more threads the kernel splits a batch of one differently from a batch of many (measured:
    other bits on a 2-core AMD EPYC), so every row gets its own call."""
    batch, _, q_length, _ = query.shape
    cache = getattr(_step, "cache", None)
    if q_length == 1 and cache is not None:
        return decoding_attention(query, key, value, attention_mask, kwargs.get("scaling"), cache.groups,
                                  _step.how), None
    if q_length == 1 and query.device.type == "cpu" and torch.get_num_threads() > 1:
        # A decoding step's attention is one query per row: microseconds of work, on which a
        # multi-threaded call spends more starting its threads (measured: most of a step on a busy
        # 2-core machine). One thread for it, alone or batched alike, so rows still match.
        with torch_threads(1):
            return batch_invariant_attention(module, query, key, value, attention_mask, **kwargs)
    kv_length = key.shape[2]
    kwargs.pop("is_causal", None)
    # Padded query positions are never read; zeros keep them finite all the same.
    out = query.new_zeros(batch, q_length, query.shape[1], value.shape[-1])
    per_row = torch.get_num_threads() > 1
    # Consecutive rows with the same real keys share a call (a slice: no copy); gathering scattered
    # ones would copy their keys and values, which costs more than a call per row (measured: 2.2x
    # the time of one call per row for 48 decoding rows in 13 groups of equal length).
    runs: list[tuple[int, int, int, int]] = []  # (first key, end key, first row, end row)
    for b, (first, end) in enumerate(_real_keys(attention_mask, batch, kv_length)):
        if runs and not per_row and runs[-1][:2] == (first, end) and runs[-1][3] == b:
            runs[-1] = (first, end, runs[-1][2], b + 1)
        else:
            runs.append((first, end, b, b + 1))
    offset = kv_length - q_length  # the queries are the last q_length keys
    # CPU SDPA in bf16/fp16 is slow for one query without AMX (measured on an AVX-512-bf16 EPYC:
    # 344 us a row against 69 us in fp32 for 350 keys, 67% of a 16-row bf16 decoding step): there a
    # decoding step's attention runs in fp32 on the cached keys and values, for every row alike.
    # (Converting each row's keys is 16% of a profiled 16-row bf16 step, but keeping the slot cache
    # in fp32 was slower, twice the bytes read, and so was one conversion of the whole step's keys:
    # measured.) With AMX the bf16 kernel is the faster (an Intel Xeon, 16 rows x 30 layers of 337
    # keys or fewer: 12.8 ms against 20.5 upcast).
    upcast = upcasts_decoding(query.dtype, query.device.type)
    scale = kwargs.get("scaling")
    for first, end, row, row_end in runs:
        # A decoding step's one query per row is its newest key's, wherever the row's keys sit (the
        # slot cache keeps them from column 0); a prompt's queries are the last of its keys.
        q_start, q_end = (0, 1) if q_length == 1 else (max(0, first - offset), end - offset)
        q = query[row:row_end, :, q_start:q_end]
        k = key[row:row_end, :, first:end]
        v = value[row:row_end, :, first:end]
        n_q, n_k = q.shape[2], k.shape[2]
        mask = None
        if 1 < n_q < n_k:  # SDPA's is_causal aligns top-left; a prefix in the cache needs bottom-right
            mask = _bottom_right_causal(n_q, n_k, q.device)
        if n_q == 1 and upcast:
            q, k, v = q.float(), k.float(), v.float()
        # torch's own SDPA, called directly (HF's wrapper adds transposes and copies around the same
        # kernel; a first micro-benchmark suggested 40% of a step's attention, but the engine's own
        # attention time did not measurably change: the kernel reads every row's keys, that is the
        # cost). With no mask this is exactly the call a lone, unpadded question makes.
        o = torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None and n_q > 1, scale=scale,
            enable_gqa=q.shape[1] != k.shape[1])
        out[row:row_end, q_start:q_end] = o.transpose(1, 2)
    return out, None


# How a decoding step's attention covers a run of rows in one call (`decoding_attention`):
FOLDED = "folded"  # each key head's query heads as queries of one head: its keys read once for all of them
GROUPED = "grouped"  # every query head on its own, SDPA's enable_gqa


def decoding_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor,
                       scale: float | None, groups: Sequence[tuple[int, int, int]] | None = None,
                       how: str = GROUPED) -> torch.Tensor:
    """A decoding step's attention, one SDPA call per run of rows (`groups`: first row, end row,
    columns; default one run of all): each row's keys from column 0, a run's columns its longest
    row's rounded up to slots.WIDTH_BLOCK, `mask` (True: attend) hiding each row's columns past its
    own. A row alone reads its own length rounded up; used only where `batched_decoding` found that
    this gives every row the same bits at any width and batch. FOLDED (grouped-query models): the
    query heads that share a key head are one head's queries (its keys read once; 9.0 against 9.9
    ms for 16 rows x 30 layers in bf16 on an Intel AMX Xeon, measured); same numbers, other bits."""
    rows, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    if mask is None:  # no row padded (the mask functions may skip it): the same call, every key attended
        mask = torch.ones(rows, 1, 1, key.shape[2], dtype=torch.bool, device=key.device)
    folded = how == FOLDED and heads != kv_heads
    q = query.reshape(rows, kv_heads, heads // kv_heads, dim) if folded else query
    outs = [torch.nn.functional.scaled_dot_product_attention(
        q[a:b], key[a:b, :, :w], value[a:b, :, :w], attn_mask=mask[a:b, ..., :w], scale=scale,
        enable_gqa=not folded and heads != kv_heads)
        for a, b, w in groups or [(0, rows, key.shape[2])]]
    out = outs[0] if len(outs) == 1 else torch.cat(outs)
    return out.reshape(rows, heads, 1, dim).transpose(1, 2)


_step = threading.local()


@contextlib.contextmanager
def decoding_step(cache: SlotCache | None, how: str | None = None) -> Iterator[None]:
    """Within (this thread): a decoding step over `cache` whose attention is `decoding_attention`,
    `how` the plan says (`DecodePlan.attention`), over the cache's runs of rows (`SlotCache.groups`,
    set by its begin_step); with None, one call per row (batch_invariant_attention)."""
    saved = getattr(_step, "cache", None), getattr(_step, "how", None)
    _step.cache, _step.how = (cache, how) if how else (None, None)
    try:
        yield
    finally:
        _step.cache, _step.how = saved


def batched_decoding(dtype: torch.dtype, device: str, heads: int, kv_heads: int, dim: int) -> str | None:
    """How `decoding_attention` gives a row the same bits alone (its own columns, rounded up) and
    in a step of other rows (the longest row's columns): FOLDED where that holds, else GROUPED
    where that does, else None. Probed once per process and thread count with random rows of 1 to
    900 keys, in batches of 2 to 33, stale values in the padding (a slot's earlier rows). Measured
    on an Intel AMX Xeon: both hold in bf16 and GROUPED in fp32, at 1 and 2 threads, and one call
    for 16 rows of ~300 keys x 30 layers took 11.2 ms against 15.2 ms for a call per row (bf16,
    2 threads, GROUPED). Never where the step's attention is upcast (`upcasts_decoding`: every
    row's keys would be converted), nor with one torch thread: a call per row reads each row's own
    keys only and has no second core to lose (measured there, fp32 on one thread: 16 rows x 30
    layers took 24.0 ms in one call against 22.1 ms a call per row, and `bench/answering.py`, whose
    evaluation runs one thread, gave 1.92x HF generate's speed with one call, 2.03x without)."""
    if upcasts_decoding(dtype, device) or torch.get_num_threads() == 1:
        return None
    for how in (FOLDED, GROUPED) if heads != kv_heads else (GROUPED,):
        if _batched_decoding(dtype, device, heads, kv_heads, dim, how, torch.get_num_threads()):
            return how
    return None


@lru_cache(maxsize=16)
def _batched_decoding(dtype: torch.dtype, device: str, heads: int, kv_heads: int, dim: int, how: str,
                      threads: int) -> bool:
    gen = torch.Generator().manual_seed(2)
    scale = dim ** -0.5
    with torch.inference_mode():
        for batch in (2, 3, 5, 8, 16, 16, 33):
            lengths = torch.randint(1, 900, (batch,), generator=gen)
            lengths[0] = 1  # a filler: its one column
            columns = width(int(lengths.max()))
            k, v = (torch.randn(batch, kv_heads, columns, dim, generator=gen).to(dtype=dtype, device=device)
                    for _ in range(2))
            q = torch.randn(batch, heads, 1, dim, generator=gen).to(dtype=dtype, device=device)
            mask = torch.arange(columns, device=device)[None, :] < lengths.to(device)[:, None]
            together = decoding_attention(q, k, v, mask[:, None, None, :], scale, how=how)
            for b, n in enumerate(lengths.tolist()):
                own = width(n)
                alone = decoding_attention(q[b:b + 1], k[b:b + 1, :, :own], v[b:b + 1, :, :own],
                                           mask[b:b + 1, None, None, :own], scale, how=how)
                if not torch.equal(alone, together[b:b + 1]):
                    return False
    return True


def upcasts_decoding(dtype: torch.dtype, device_type: str) -> bool:
    """Whether a decoding step's attention runs in fp32 for a model in `dtype` (see
    batch_invariant_attention): on CPU in bf16 or fp16, unless bf16 on a CPU with AMX tiles."""
    return device_type == "cpu" and dtype in (torch.bfloat16, torch.float16) \
        and not (dtype == torch.bfloat16 and _amx())


@lru_cache(maxsize=1)
def _amx() -> bool:
    """Whether this CPU has AMX tiles (oneDNN's bf16 attention kernels use them)."""
    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


@lru_cache(maxsize=8)
def _bottom_right_causal(n_q: int, n_k: int, device: torch.device) -> torch.Tensor:
    """The causal mask of `n_q` queries that are the last of `n_k` keys (the same for every layer)."""
    return torch.ones(n_q, n_k, dtype=torch.bool, device=device).tril(n_k - n_q)[None, None]


def register() -> str:
    """Make the attention available to `model.set_attn_implementation(NAME)`; idempotent."""
    AttentionInterface.register(NAME, batch_invariant_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME


Shapes = tuple[tuple[int, int, bool], ...]


def linear_shapes(model: torch.nn.Module) -> Shapes:
    """The distinct (in, out, packed) linear layers of the model, LoRA's included: packed ones run
    oneDNN's kernel on prepacked weights (kernels.py), the others PyTorch's default."""
    return tuple(sorted({(m.in_features, m.out_features, isinstance(m, kernels.PackedLinear))
                         for m in model.modules() if isinstance(m, torch.nn.Linear)}))


def min_rows(shapes: Shapes, dtype: torch.dtype, device: str, max_rows: int, most: int | None = None) -> int | None:
    """Smallest row count from which a row's linear output is the same bits whatever the batch.

    Probed once per process and thread count with random data on this machine's kernels: every
    row of a block is computed in batches of m rows, for each m up to max_rows, and compared with
    one large batch (bf16 outputs hide most order differences in their rounding, hence many rows).
    With `most`, compared with batches of `most` rows instead: the answer then holds for batches of
    up to `most` rows only (a decoding step capped there, `DecodePlan.most`). Measured on an Intel
    AMX Xeon in bf16: rows computed 1 to 32 at a time are the same bits, 33 or more at a time
    (another kernel) others, in the MLP's down projection and the LM head.
    None when no row count up to max_rows is invariant: padding with copies cannot help then
    (measured: an H200 in fp32; the engine then decodes with one thread or each question alone, see
    `Engine.plan`).
    """
    return _min_rows(shapes, dtype, device, max_rows, most, torch.get_num_threads())


@lru_cache(maxsize=32)
def _min_rows(shapes: Shapes, dtype: torch.dtype, device: str, max_rows: int, most: int | None,
              threads: int) -> int | None:
    # `threads` only keys the cache: the kernels, and so the answer, change with the thread count.
    gen = torch.Generator().manual_seed(0)
    need = 1
    for n_in, n_out, packed in shapes:
        rows = 16 if n_out > 8192 else 64  # the vocabulary head only ever sees the last position
        rows = max(rows, most or 0)
        w = torch.randn(n_out, n_in, generator=gen).to(dtype=dtype, device=device)
        x = torch.randn(4 * rows, n_in, generator=gen).to(dtype=dtype, device=device)
        linear = kernels.linear(w, packed)
        if most is None:
            ref = linear(x)[:rows]  # prompts: many rows at once
        else:  # the largest decoding step
            ref = torch.cat([linear(x[i:i + most]) for i in range(0, rows // most * most, most)])
        for m in range(1, min(max_rows, rows) + 1):
            full = min(rows // m * m, len(ref))  # whole batches of m rows only
            out = torch.cat([linear(x[i:i + m]) for i in range(0, full, m)])[:full]
            if not torch.equal(out, ref[:full]):
                need = max(need, m + 1)
        if need > max_rows:
            return None
    return need


def many_rows_invariant(shapes: Shapes, dtype: torch.dtype, device: str, need: int) -> bool:
    """Whether, from `need` rows on, a row's linear output stays the same bits in much larger batches
    too: newcomers' prompts are prefilled together (hundreds to thousands of rows) where one alone
    is its own prompt's tokens. Probed like `min_rows`, once per process and thread count, with
    chunks of odd sizes against one batch of 1,024 rows (the vocabulary head, which only ever sees
    a few rows, against 64)."""
    return _many_rows_invariant(shapes, dtype, device, need, torch.get_num_threads())


@lru_cache(maxsize=32)
def _many_rows_invariant(shapes: Shapes, dtype: torch.dtype, device: str, need: int, threads: int) -> bool:
    gen = torch.Generator().manual_seed(1)
    for n_in, n_out, packed in shapes:
        head = n_out > 8192
        w = torch.randn(n_out, n_in, generator=gen).to(dtype=dtype, device=device)
        x = torch.randn(64 if head else 1024, n_in, generator=gen).to(dtype=dtype, device=device)
        linear = kernels.linear(w, packed)
        ref = linear(x)
        chunks = ((0, max(need, 5)), (3, 37)) if head else ((0, max(need, 5)), (3, 77), (100, 333), (0, 1000))
        for start, m in chunks:
            if not torch.equal(linear(x[start:start + m]), ref[start:start + m]):
                return False
    return True

