"""The process's environment: offline switches and library verbosity, set once by each entry point,
the report card that says where a result was produced, and the memory high-water mark of each stage."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from importlib import metadata
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Distribution names whose versions decide the numbers (faiss ships as faiss-cpu or faiss-gpu).
PACKAGES = {"torch": ("torch",), "transformers": ("transformers",), "peft": ("peft",), "trl": ("trl",),
            "sentence_transformers": ("sentence-transformers",), "faiss": ("faiss-cpu", "faiss-gpu", "faiss")}


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch ops with at most `n` intra-op threads (process-wide, restored after)."""
    import torch  # heavy: the CLI imports this module before it knows whether the verb needs torch

    old = torch.get_num_threads()
    if n >= old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def quiet_libraries() -> None:
    """Offline by design (nothing is fetched from a hub at run time) and no library chatter."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    # TRL and PEFT still read the old attribute name; the notice is for them, not for our users.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*is deprecated", category=FutureWarning)


def git_state(root: Path = PROJECT_ROOT) -> dict | None:
    """Commit and dirty flag of the project checkout; None outside a git checkout or without git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()
    try:
        if git("rev-parse", "--show-toplevel") != str(root):  # a pip-installed copy inside someone's repo
            return None
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return None


def cache_dir() -> Path:
    """Where converted checkpoints and documents live (`ASSISTANT_CACHE`, else ~/.cache/assistant)."""
    root = os.environ.get("ASSISTANT_CACHE") or Path.home() / ".cache" / "assistant"
    return Path(root)


def cpu_name() -> str:
    """The processor's model name (lscpu's), else what the platform module knows."""
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_supports_bf16() -> bool:
    """True on CPUs with native bf16 matmul (AVX-512 BF16 / AMX), where bf16 is ~2.4x fp32 here."""
    try:
        import torch  # heavy: only where a CPU fact needs it

        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:
        return False
    if capability in ("DEFAULT", "AVX2", "NO AVX"):  # kernels capped below AVX-512 (ATEN_CPU_CAPABILITY): bf16 is emulated
        return False
    return capability in ("AVX512_BF16", "AMX") or _cpuinfo_has("avx512_bf16")


def _cpuinfo_has(flag: str) -> bool:
    return flag in _cpuinfo()


@lru_cache(maxsize=1)
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_kernels() -> str:
    """The CPU's matrix-kernel family, as far as it decides an answer's bits: torch's dispatch level,
    the vendor (MKL and oneDNN take other code paths on Intel and AMD) and the bf16 units. Torch
    calls both an AMD AVX-512-bf16 EPYC and an Intel AMX Xeon "AVX512", yet their fp32 kernels need
    other row counts to be batch-invariant (measured with two threads: 12 rows, and none)."""
    import torch  # heavy: only where a CPU fact needs it

    vendor = next((line.split(":", 1)[1].strip() for line in _cpuinfo().splitlines()
                   if line.startswith("vendor_id")), "")
    units = [flag for flag in ("amx_bf16", "avx512_bf16") if _cpuinfo_has(flag)]
    return " ".join([torch.backends.cpu.get_cpu_capability(), vendor, *units]).strip()


def _version(names: tuple[str, ...]) -> str | None:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def peak_memory_mb() -> float:
    """The process's memory high-water mark in MB since it started or since the last report card
    closed a stage (reset_peak_memory): the resident set, plus the CUDA allocator's peak on a GPU."""
    peak = _vm_hwm_mb()
    if peak is None:  # not Linux: the process's peak since it started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)
    torch = sys.modules.get("torch")  # no GPU peak to add in a process that never imported torch
    if torch is not None and torch.cuda.is_available():
        peak += torch.cuda.max_memory_allocated() / 2**20
    return round(peak, 1)


def _vm_hwm_mb() -> float | None:
    """Linux's resident-set high-water mark (VmHWM), which clear_refs resets; getrusage's ru_maxrss
    may also keep the peak of threads that have exited since, so it is read only where VmHWM is not."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def reset_peak_memory() -> bool:
    """Start a new stage's high-water mark; False where the peak cannot be reset (it then spans the
    process so far). Linux resets the resident-set peak (VmHWM, which ru_maxrss reports) on a write
    of "5" to /proc/self/clear_refs. First the memory the last stage freed goes back to the system:
    glibc's allocator keeps freed heap (gigabytes after a training step), which the next stage of
    the same process would otherwise carry in its resident set."""
    import gc

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    release_freed_memory()
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


M_ARENA_MAX, M_MMAP_THRESHOLD = -8, -3  # glibc's malloc.h


def release_freed_memory() -> None:
    """Give the heap that the C allocator keeps after frees back to the system. glibc's malloc,
    which PyTorch's CPU tensors come from, keeps freed memory for the process (after a training
    step, gigabytes; after a decoder's prefill, its transient tensors), and buffers of a later size
    may not fit in the holes: the resident set then grows by what was kept. Nothing happens where
    the allocator is not glibc's (macOS, musl)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def limit_malloc_arenas(arenas: int) -> None:
    """Keep the threads that start from now on in at most `arenas` glibc malloc arenas (each thread
    that allocates gets its own by default, and each keeps its freed pages: see serve/api.py's
    MemoryKeeper). Nothing happens where the allocator is not glibc's."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_ARENA_MAX, arenas)


def map_large_buffers(megabytes: int = 4) -> None:
    """From now on the C allocator gives each buffer of `megabytes` or more its own memory mapping,
    returned to the system when freed. glibc's default raises that threshold to the size of every
    mapped buffer freed (up to 32 MB), so a decoder's KV buffers and logits come from the heap after
    the first and leave holes there when freed: an evaluation worker answering through LoRA adapters
    peaked at 2.83 GB with 0.75 GB of free heap held, 2.59 GB with this. For processes that only
    answer: a training step's many such buffers would each be mapped and zeroed anew. Nothing
    happens where the allocator is not glibc's."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, megabytes << 20)


@lru_cache(maxsize=1)
def _glibc():
    import ctypes

    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None  # musl, macOS: neither


def report_card(generation: tuple | None = None, training: tuple | dict | None = None, **extra) -> dict:
    """Where a result was produced: code, library versions, processor, threads, device and dtype.

    `generation` and `training` are (device, dtype) pairs (torch objects or strings), or for
    `training` a dict of them per adapter; a field that does not apply is None. `extra` fields are
    added as they are. Saved in metrics.json, the reports, build.json and training_log.json.

    A card closes a stage (index build, training of one adapter, evaluation): `peak_memory_mb` is the
    high-water mark since the previous card (or the process start), and the next stage starts afresh.
    """
    import torch  # heavy: the CLI imports this module before it knows whether the verb needs torch

    def numerics(pair):
        if pair is None:
            return None
        if isinstance(pair, dict):
            return {name: numerics(p) for name, p in pair.items()}
        device, dtype = pair
        return {"device": str(device), "dtype": str(dtype).removeprefix("torch.")}

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    card = {
        "git": git_state(),
        "python": platform.python_version(),
        **{name: _version(dists) for name, dists in PACKAGES.items()},
        "platform": f"{platform.system()} {platform.machine()}",
        "cpu": cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_native_bf16": cpu_supports_bf16(),
        "gpu": gpu,
        "threads": torch.get_num_threads(),
        "generation": numerics(generation),
        "training": numerics(training),
        "peak_memory_mb": peak_memory_mb(),
        **extra,
    }
    reset_peak_memory()
    return card
