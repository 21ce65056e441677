"""The tests' model, and the copies of the tests' corpus that use it.

The model is a deterministic 2-layer Llama with SmolLM2's real tokenizer (fast mechanics). It is
built once into the assistant's cache folder (`ASSISTANT_CACHE`, else ~/.cache/assistant), and
corpora name it by that folder, as a user names any local model: the package knows nothing of it.
tests/fixtures/tiny/corpus.yaml holds the placeholder `name: TINY_MODEL`, which every copy
(`copy_tiny_corpus`) replaces with the folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

# _build_once: built under the target's lock, so test processes started together wait for one build
from assistant.model.loading import _build_once, cache_dir, gguf_path, load_tokenizer

TINY_MODEL = cache_dir() / "models" / "tiny-random"
TINY = str(TINY_MODEL)  # what model.name says to use it
TINY_CORPUS = Path(__file__).parent / "fixtures" / "tiny"
PLACEHOLDER = "name: TINY_MODEL"


def build_tiny_model() -> Path:
    """TINY_MODEL, built on first use."""
    return _build_once(TINY_MODEL, _build_model)


def _tokenizer() -> Path:
    """The default model's tokenizer alone, from its GGUF (seconds, against a minute for the model)."""
    full = cache_dir() / "models" / "smollm2-135m-instruct"
    if full.exists():
        return full

    def build(tmp: Path) -> None:
        gguf = gguf_path()
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)

    return _build_once(cache_dir() / "models" / "smollm2-tokenizer", build)


def _build_model(tmp: Path) -> None:
    tok = load_tokenizer(str(_tokenizer()))
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp)
    tok.save_pretrained(tmp)


def copy_tiny_corpus(dst: Path, runs_dir: Path | None = None) -> Path:
    """A writable copy of tests/fixtures/tiny at `dst`, its model the tiny one (built if need be) and,
    given `runs_dir`, its artifacts there (else under the copy's own runs/)."""
    shutil.copytree(TINY_CORPUS, dst)
    cfg = dst / "corpus.yaml"
    text = cfg.read_text().replace(PLACEHOLDER, f"name: {build_tiny_model()}")
    cfg.write_text(text + (f"runs_dir: {runs_dir}\n" if runs_dir else ""))
    return dst


if __name__ == "__main__":  # bench/ and CI scripts: build it and print its folder
    print(build_tiny_model())
