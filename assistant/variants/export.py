"""`assistant export CORPUS --variant sft|rag_sft --to DIR`: a fine-tuned variant for serving elsewhere.

DIR/            the LoRA adapter merged into the base (PEFT `merge_and_unload`): a Hugging Face model
                folder in safetensors, with the tokenizer and its chat template; any server loads it
DIR/adapter/    the unmerged adapter, for servers that apply LoRA per request (vLLM --lora-modules)
DIR/README.md   the model card: base, training, how to prompt it, the latest evaluation's figures
                for this variant and the verdict

The figures come from the latest evaluation's metrics.json, read as data: this module sits below
the evaluation and imports none of it. The folder is written whole or not at all (`atomic_dir`).
"""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

from assistant.corpus.corpus import Corpus
from assistant.errors import NotBuilt, UsageError
from assistant.model.loading import load_tokenizer, numerics, resolve_model
from assistant.storage import atomic_dir, read_json
from assistant.variants import training, variant_class
from assistant.variants.retrieval import Source
from assistant.variants.rag import rag_messages

EXPORTABLE = ("sft", "rag_sft")
RATES = (("answerable", "accuracy", "accuracy on answerable questions"),
         ("answerable", "hallucination", "hallucination on answerable questions"),
         ("unanswerable", "declined", "declined when the corpus has no answer"))


def export(corpus: Corpus, variant: str, to: Path) -> Path:
    """Write the merged model, the adapter and the model card into `to` (new or empty); return it."""
    if variant not in EXPORTABLE:
        raise UsageError(f"--variant {variant!r} cannot be exported: only {' and '.join(EXPORTABLE)} carry trained "
                         "weights (prompted and rag are the base model plus a prompt)")
    if not variant_class(variant).is_built(corpus):
        raise NotBuilt(f"variant {variant!r} is not built for corpus {corpus.name!r}; "
                       f"run: assistant build {corpus.root} --variant {variant}")
    to = Path(to)
    if to.exists():
        if not to.is_dir() or any(to.iterdir()):
            raise UsageError(f"--to {to} already exists and is not an empty folder; name a new folder")
        to.rmdir()  # atomic_dir renames the finished folder into place
    card = model_card(corpus, variant, latest_figures(corpus, variant))

    def build(tmp: Path) -> None:
        model, tokenizer = merged(corpus, variant)
        model.save_pretrained(tmp)  # safetensors: the default of transformers 5
        tokenizer.save_pretrained(tmp)
        shutil.copytree(training.adapter_dir(corpus, variant), tmp / "adapter")
        (tmp / "README.md").write_text(card, encoding="utf-8")

    return atomic_dir(to, build)


def merged(corpus: Corpus, variant: str):
    """The base model with the variant's adapter folded into its weights, in the evaluation's dtype."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    path = resolve_model(corpus.config.model.name)
    _, dtype = numerics(corpus.config.model, evaluation=True)
    # On the CPU: merging is one addition per layer, and the folder is written from there anyway.
    base = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, device_map={"": torch.device("cpu")})
    model = PeftModel.from_pretrained(base, str(training.adapter_dir(corpus, variant))).merge_and_unload()
    return model.eval(), load_tokenizer(path)


def latest_figures(corpus: Corpus, variant: str) -> dict | None:
    """The latest evaluation's metrics.json, if it evaluated `variant` (else None)."""
    folder = corpus.runs.latest_eval
    try:
        metrics = read_json(folder / "metrics.json")
    except (OSError, ValueError):
        return None
    if not isinstance(metrics, dict) or variant not in (metrics.get("per_variant") or {}):
        return None
    metrics["_folder"] = str(folder.resolve())
    return metrics


def _rate(figure: dict | None) -> str:
    if not isinstance(figure, dict) or figure.get("rate") is None:
        return "n/a"
    interval = f" ({figure['lo']:.0%} to {figure['hi']:.0%})" if figure.get("lo") is not None else ""
    return f"{figure['rate']:.0%}{interval}, n = {figure.get('n', '?')}"


def _evaluation(corpus: Corpus, variant: str, metrics: dict | None) -> list[str]:
    if metrics is None:
        return ["Not evaluated yet: run `assistant eval " + f"{corpus.root}` (or `compare`) and export again.", ""]
    names = list(metrics["per_variant"])
    out = [f"From the evaluation of {metrics.get('created', '?')} (`{metrics['_folder']}`), 95% bootstrap "
           "intervals; the other variants, evaluated on the same questions, for comparison:", "",
           "| | " + " | ".join(f"**{n}**" if n == variant else n for n in names) + " |",
           "| --- |" + " --- |" * len(names)]
    for group, key, label in RATES:
        out.append(f"| {label} | " + " | ".join(_rate((metrics["per_variant"][n].get(group) or {}).get(key))
                                             for n in names) + " |")
    verdict = metrics.get("verdict") or {}
    out += ["", "**Verdict**: " + (f"recommends `{verdict['recommendation']}`. " if verdict.get("recommendation")
                                   else f"{verdict.get('decision', 'none')}: no recommendation. ")
            + str(verdict.get("text", "")), ""]
    trained = training.adapter_dir(corpus, variant).stat().st_mtime
    created = metrics.get("created")
    if created and datetime.fromisoformat(created).timestamp() < trained:
        out += ["**Warning**: the adapter was trained again after this evaluation; these figures describe the "
                "previous adapter. Evaluate again before relying on them.", ""]
    return out


def _prompting(corpus: Corpus, variant: str) -> list[str]:
    system = corpus.config.system_prompt
    out = ["It was trained, and evaluated, with this system prompt; prompt it the same way:", "",
           "```text", system, "```", ""]
    if variant == "rag_sft":
        example = rag_messages(system, "...", [Source("docs/returns.md", "Returns", "...", 1.0)])[-1]["content"]
        out += ["It answers from retrieved passages: the user message holds the numbered passages, then the "
                "instruction, then the question (`assistant/variants/rag.py`), for example:", "", "```text",
                example, "```", ""]
    return out


def model_card(corpus: Corpus, variant: str, metrics: dict | None) -> str:
    """README.md of the exported folder (Hugging Face model card, with its metadata header)."""
    cfg, lora = corpus.config, corpus.config.lora
    try:
        log = read_json(training.variant_dir(corpus, variant) / training.LOG_FILE)
    except (OSError, ValueError):
        log = {}
    base = cfg.model.name
    header = ["---", "library_name: transformers", "pipeline_tag: text-generation",
              f"tags: [lora, {variant}, assistant]"]
    if "/" in base and not base.startswith(("/", ".", "~")):  # a Hugging Face id, not a local path
        header.append(f"base_model: {base}")
    lines = [*header, "---", "", f"# {corpus.name}: `{variant}`", "",
             f"{cfg.description or corpus.name}. The `{variant}` variant built by `assistant build` from the corpus "
             f"`{corpus.name}`: a LoRA adapter on `{base}`, merged into it here.", "",
             "## Files", "",
             "- this folder: the merged model (safetensors, tokenizer with chat template), "
             "`AutoModelForCausalLM.from_pretrained(this_folder)`;",
             "- `adapter/`: the unmerged LoRA adapter, for `PeftModel.from_pretrained(base, 'adapter')` or "
             f"`vllm serve {base} --enable-lora --lora-modules {variant}=adapter`.", "",
             "## Training", "",
             f"LoRA r = {lora.r}, alpha = {lora.alpha}, trained on the corpus's train split"
             + (f" on {log['device']} in {log['dtype']}" if log.get("device") else "") + ".", "",
             "## How to prompt it", "", *_prompting(corpus, variant),
             "## Evaluation", "", *_evaluation(corpus, variant, metrics),
             f"Exported {datetime.now(timezone.utc).isoformat(timespec='seconds')} by `assistant export`."]
    return "\n".join(lines) + "\n"


def summary(folder: Path) -> str:
    """One line for the CLI: what was written where."""
    size = sum(p.stat().st_size for p in folder.glob("*.safetensors")) / 1e6
    return f"exported to {folder}: merged model ({size:.0f} MB safetensors), adapter/, README.md"

