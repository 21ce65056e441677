"""`assistant export`: the merged model answers like `assistant ask`; the adapter and the model card go with it."""

from __future__ import annotations

import json

import pytest

from assistant.corpus.corpus import load_corpus
from tiny_model import TINY, copy_tiny_corpus

QUESTION = "How long is the return window?"
# The random tiny model's greedy answer is newlines only (empty once stripped); banning the newline
# token and repeats, in `assistant ask` and in plain transformers alike, gives text worth comparing.
VISIBLE = {"suppress_tokens": [198], "no_repeat_ngram_size": 1}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny corpus (fp32) with `sft` briefly trained."""
    from assistant.variants.sft import SftVariant

    tmp = tmp_path_factory.mktemp("export")
    root = tmp / "tiny"
    copy_tiny_corpus(root)
    text = (root / "corpus.yaml").read_text().replace(f"name: {TINY}", f"name: {TINY}\n  dtype: float32")
    (root / "corpus.yaml").write_text(text + f"runs_dir: {tmp / 'runs'}\n"
                                      "lora:\n  epochs: 2\n  batch_size: 2\n  learning_rate: 0.01\n")
    corpus = load_corpus(root)
    SftVariant.build(corpus)
    return corpus


def test_the_merged_model_answers_like_assistant_ask(trained, tmp_path, capsys):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from assistant import cli
    from assistant.model.loading import resolve_model
    from assistant.variants import open_engine

    out = tmp_path / "exported"
    assert cli.main(["export", str(trained.root), "--variant", "sft", "--to", str(out)]) == 0
    assert f"exported to {out}" in capsys.readouterr().out
    assert list(out.glob("*.safetensors")) and not list(out.glob("*.bin"))
    assert (out / "adapter" / "adapter_config.json").is_file() and (out / "README.md").is_file()

    open_engine(trained).model.generation_config.update(**VISIBLE)
    assert cli.main(["ask", str(trained.root), "--variant", "sft", "--json", QUESTION]) == 0
    asked = json.loads(capsys.readouterr().out)

    model = AutoModelForCausalLM.from_pretrained(out)  # plain transformers: no PEFT, no assistant code
    tok = AutoTokenizer.from_pretrained(out)
    assert not any("lora" in name for name, _ in model.named_parameters())
    messages = [{"role": "system", "content": trained.config.system_prompt}, {"role": "user", "content": QUESTION}]
    ids = tok(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False),
              add_special_tokens=False, return_tensors="pt")

    def greedy(m) -> str:
        with torch.inference_mode():
            row = m.generate(**ids, do_sample=False, max_new_tokens=trained.config.generation.max_new_tokens,
                             pad_token_id=tok.pad_token_id or tok.eos_token_id, **VISIBLE)[0]
        return tok.decode(row[ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()

    answer = greedy(model)
    assert answer and answer == asked["text"]
    base = AutoModelForCausalLM.from_pretrained(resolve_model(TINY), dtype=torch.float32)
    assert greedy(base) != answer  # the adapter is in the merged weights


def test_the_model_card_carries_the_figures_and_the_verdict(trained):
    from assistant.storage import atomic_write_json
    from assistant.variants.export import latest_figures, model_card

    card = model_card(trained, "sft", latest_figures(trained, "sft"))
    assert "Not evaluated yet" in card and trained.config.system_prompt in card
    rates = {"answerable": {"accuracy": {"rate": 0.5, "lo": 0.25, "hi": 0.75, "n": 8},
                            "hallucination": {"rate": 0.125, "lo": 0.0, "hi": 0.375, "n": 8}},
             "unanswerable": {"declined": {"rate": 1.0, "lo": 1.0, "hi": 1.0, "n": 2}}}
    metrics = {"created": "2000-01-01T00:00:00+00:00", "per_variant": {"prompted": rates, "sft": rates},
               "verdict": {"recommendation": "sft", "decision": "recommend", "text": "sft beats prompted."}}
    atomic_write_json(trained.runs_dir / "eval" / "latest" / "metrics.json", metrics)
    card = model_card(trained, "sft", latest_figures(trained, "sft"))
    assert "| accuracy on answerable questions | 50% (25% to 75%), n = 8 | 50% (25% to 75%), n = 8 |" in card
    assert "recommends `sft`. sft beats prompted." in card
    assert "trained again after this evaluation" in card  # the adapter is newer than the year 2000
    assert card.startswith("---\nlibrary_name: transformers\n")


@pytest.mark.parametrize("argv, words", [
    (["--variant", "rag", "--to", "{tmp}/x"], "invalid choice"),
    (["--variant", "sft", "--to", "{tmp}/full"], "not an empty folder"),
])
def test_export_refuses_what_it_cannot_do(trained, tmp_path, capsys, argv, words):
    from assistant import cli

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    argv = ["export", str(trained.root), *[a.format(tmp=tmp_path) for a in argv]]
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    assert code == 2 and words in capsys.readouterr().err
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_an_unbuilt_variant_names_the_build_command(tmp_path):
    from assistant.variants import NotBuilt
    from assistant.variants.export import export

    root = tmp_path / "tiny"
    copy_tiny_corpus(root, runs_dir=tmp_path / "runs")
    with pytest.raises(NotBuilt, match="assistant build .* --variant rag_sft"):
        export(load_corpus(root), "rag_sft", tmp_path / "out")
