"""The four variants behind one interface, and the shared engine they answer through.

Each variant class offers `is_built(corpus)`, `build(corpus, force=False)` and, once built,
`Variant(corpus, engine)` answers questions. Variants are imported lazily: `prompted` must not
pay for FAISS or TRL imports.
"""

from __future__ import annotations

import importlib
from functools import lru_cache

from assistant.config import VARIANTS, GenerationSettings, ModelSettings, ServerSettings
from assistant.corpus.corpus import Corpus
from assistant.model.engine import Engine
from assistant.model.loading import load_model, numerics
from assistant.model.remote import RemoteEngine, open_remote_engine
from assistant.errors import NotBuilt
from assistant.variants.base import ABSTAIN_TEXT, Answer, Prompt, Variant
from assistant.variants.retrieval import Source

__all__ = ["ABSTAIN_TEXT", "Answer", "NotBuilt", "Prompt", "Source", "Variant", "VARIANTS",
           "variant_class", "open_engine", "load_variant"]

_CLASSES = {
    "prompted": "assistant.variants.prompted:PromptedVariant",
    "rag": "assistant.variants.rag:RagVariant",
    "sft": "assistant.variants.sft:SftVariant",
    "rag_sft": "assistant.variants.rag_sft:RagSftVariant",
}


def variant_class(name: str) -> type[Variant]:
    if name not in _CLASSES:
        raise KeyError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
    module, cls = _CLASSES[name].split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ModuleNotFoundError as e:
        if e.name == module:
            raise NotBuilt(f"variant {name!r} is not implemented yet in this version") from None
        raise


@lru_cache(maxsize=4)
def _engine_for(model_json: str, gen_json: str) -> Engine:
    gen = GenerationSettings.model_validate_json(gen_json)
    model, tok = load_model(ModelSettings.model_validate_json(model_json))
    return Engine(model, tok, max_new_tokens=gen.max_new_tokens, batch_size=gen.batch_size,
                  batch_invariant=gen.batch_invariant)


@lru_cache(maxsize=4)
def _remote_for(server_json: str, model_name: str, gen_json: str) -> RemoteEngine:
    gen = GenerationSettings.model_validate_json(gen_json)
    return open_remote_engine(ServerSettings.model_validate_json(server_json), model_name, gen.max_new_tokens,
                              gen.batch_size)


def open_engine(corpus: Corpus, evaluation: bool = True) -> Engine | RemoteEngine:
    """The corpus's base model, loaded once per process and shared by every variant, or, with
    `model.server`, the server that answers for it.

    `evaluation` (answers that are scored, and `assistant ask`) loads `model.eval_dtype`; the chat
    passes False for `model.dtype`. Where both resolve to the same dtype they share one engine.
    """
    cfg = corpus.config
    if cfg.model.server is not None:  # an OpenAI-compatible server answers (assistant/model/remote.py)
        return _remote_for(cfg.model.server.model_dump_json(), cfg.model.name, cfg.generation.model_dump_json())
    _, dtype = numerics(cfg.model, evaluation)
    name = str(dtype).removeprefix("torch.")
    model = cfg.model.model_copy(update={"dtype": name, "eval_dtype": name})
    return _engine_for(model.model_dump_json(), cfg.generation.model_dump_json())


def load_variant(name: str, corpus: Corpus, engine: Engine | None = None) -> Variant:
    """A ready-to-answer variant; raises NotBuilt (with the command to run) when artifacts are missing."""
    cls = variant_class(name)
    if cls.needs_build and not cls.is_built(corpus):
        raise NotBuilt(f"variant {name!r} is not built for corpus {corpus.name!r}; "
                       f"run: assistant build {corpus.root} --variant {name}")
    return cls(corpus, engine or open_engine(corpus))
