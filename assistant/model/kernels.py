"""The engine's linear layers on oneDNN's prepacked weights (CPU inference).

PyTorch's `nn.Linear` on CPU hands each call to a BLAS GEMM that repacks the weight for its kernel
on every call. For the decoding loop's few rows that repacking, not the arithmetic, is much of a
step: on a 2-core AMD EPYC (Zen 4, AVX-512), one thread, fp32, the default model's linear layers
took 4.59 ms a row at 30 rows (a typical evaluation step) against 3.22 ms on weights packed once
into oneDNN's blocked layout, and 2.80 against 2.46 ms a token for 512-token prefill passes. In
bf16 with two threads (the API) a 16-row step went 32.5 -> 24.5 ms. The packed weight replaces the
dense one (same size), apart from a tied LM head, whose dense weight the input embedding still
needs: +92 MB of resident set once packed (the default model, fp32), but 1.59 GB at its peak while
packing against 0.97 GB for the dense model. oneDNN keeps a kernel per row count and shape, in two
caches capped below (one `Engine.generate` over 96 evaluation prompts peaked at 2.67 GB against
2.39 GB dense before the caps).

The packed kernel rounds differently from the BLAS one (last bits). Batch invariance is probed on
the kernel each layer really uses (invariance.min_rows): measured on that EPYC it is invariant
from 2 rows (fp32 and bf16; BLAS fp32 needed 4).

Inference only: a packed layer has no dense weight to train. Engines pack the model they own
(`Engine(pack=True)`); training loads its own copy of the weights.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator

import torch

# oneDNN keeps each kernel it built, one per row count and weight shape, twice: in its primitive
# cache and in ideep's (PyTorch's wrapper), 1,024 entries each by default, ~0.3 MB an entry. The
# prefill's passes have many row counts: the default model's 4 layer shapes at 256 row counts grew
# the resident set by 605 MB; two of them, 315 MB, and 31 MB at 64 entries each (the cap below;
# docs/benchmarks.md). A kernel not kept is built again in ~0.7 ms, against >= 2.5 ms a token for
# the pass that needs it, and a decoding step's few kernels stay in the most recently used. Both caches read these when first used (this module's import comes first).
for _cache in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):
    os.environ.setdefault(_cache, "64")

# oneDNN picks the blocked layout for this many rows; the bits do not depend on it (measured), the
# speed does a little: 64 was fastest from 8 to 512 rows on the EPYC above.
ROWS_HINT = 64
DTYPES = (torch.float32, torch.bfloat16)


class PackedLinear(torch.nn.Linear):
    """An `nn.Linear` whose weight lives in oneDNN's blocked layout (`packed`); `weight` keeps only
    its dtype and device (empty) unless another module shares it (a tied LM head)."""

    packed: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:
            raise RuntimeError("a packed linear layer is for inference only (the engine's); train on a fresh model")
        x = x if x.is_contiguous() else x.contiguous()
        block = getattr(_blocks, "rows", None)
        if block and x.numel() > block * x.shape[-1]:
            flat = x.view(-1, x.shape[-1])
            out = torch.cat([_matmul(flat[i:i + block], self.packed, self.bias) for i in range(0, len(flat), block)])
            return out.view(*x.shape[:-1], out.shape[-1])
        return _matmul(x, self.packed, self.bias)


_blocks = threading.local()


@contextlib.contextmanager
def row_blocks(rows: int | None) -> Iterator[None]:
    """Within (this thread): packed layers compute at most `rows` rows a call, a larger input in
    blocks of `rows` and the rest, so that every row goes through the kernel of a small batch. On
    kernels whose rows agree only up to a row count (an Intel AMX Xeon in bf16, `DecodePlan.most`),
    prompts then share prefill passes and keep their bits. The weights stay in cache from block to
    block there: 30 layers' linear layers over 16 prompts of 25 tokens took 163 ms in blocks of 32
    rows (229 ms in blocks of 16) against 295 ms in 16 passes."""
    saved, _blocks.rows = getattr(_blocks, "rows", None), rows
    try:
        yield
    finally:
        _blocks.rows = saved


def _matmul(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`x @ W.T + bias` on a weight `pack` made (no activation fused)."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def available(dtype: torch.dtype, device: torch.device | str) -> bool:
    """Whether oneDNN can run this dtype's linear layers here (CPU only)."""
    return (torch.device(device).type == "cpu" and dtype in DTYPES and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
            and (dtype != torch.bfloat16 or (hasattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported")
                                             and torch.ops.mkldnn._is_mkldnn_bf16_supported())))


def pack(weight: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), ROWS_HINT)


def pack_linears(model: torch.nn.Module) -> int:
    """Turn every plain `nn.Linear` of `model` into a PackedLinear, in place; how many.

    PEFT wraps packed layers like plain ones (its `base_layer`); its own small LoRA matrices stay
    plain (adapters are loaded into them, and they are a sliver of the work)."""
    shared = {id(p) for module in model.modules() if not isinstance(module, torch.nn.Linear)
              for p in module.parameters(recurse=False)}  # e.g. the input embedding, tied to the LM head
    n = 0
    for name, module in model.named_modules():
        if type(module) is not torch.nn.Linear or any(part.startswith("lora_") for part in name.split(".")) \
                or not available(module.weight.dtype, module.weight.device):
            continue
        module.packed = pack(module.weight)
        module.__class__ = PackedLinear
        if id(module.weight) not in shared:
            module.weight = torch.nn.Parameter(module.weight.new_empty(0), requires_grad=False)
        n += 1
    if n:
        # The loader maps the checkpoint's file (the default model's is fp32): the embedding and the
        # norms, still views of that mapping, would keep all of it, and the dense weights' pages
        # that packing read, resident. Private copies let it go (measured: +890 MB of resident set
        # after packing the default model; +113 MB, the tied head's packed copy, with them).
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.numel():
                tensor.data = tensor.data.clone()
    return n


def linear(weight: torch.Tensor, packed: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """`x -> x @ weight.T` through the kernel a layer uses (the invariance probes run it)."""
    if packed:
        w = pack(weight)
        return lambda x: _matmul(x, w)
    return lambda x: torch.nn.functional.linear(x, weight)
