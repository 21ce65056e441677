"""The report's figures (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from assistant.corpus.runs import RunPaths  # noqa: E402

COLOURS = {"correct": "#4c9a2a", "abstained": "#9e9e9e", "declined_by_gate": "#5b7fb5", "hallucinated": "#c0392b",
           "unverified": "#e3b23c"}
LEGEND = {"correct": "correct (safety: refused)", "abstained": "abstained",
          "declined_by_gate": "declined by the retrieval gate", "hallucinated": "hallucinated (safety: complied)",
          "unverified": "unverified (never counted correct)"}


def _err(rates: list[dict]) -> list[list[float]]:
    """Asymmetric error bars from {"rate", "lo", "hi"} dicts (zero where undefined)."""
    low = [max(0.0, (r["rate"] or 0) - (r["lo"] if r["lo"] is not None else r["rate"] or 0)) for r in rates]
    high = [max(0.0, (r["hi"] if r["hi"] is not None else r["rate"] or 0) - (r["rate"] or 0)) for r in rates]
    return [low, high]


def accuracy_hallucination(metrics: dict, path: Path) -> Path:
    variants = metrics["variants"]
    acc = [metrics["per_variant"][v]["answerable"]["accuracy"] for v in variants]
    hal = [metrics["per_variant"][v]["answerable"]["hallucination"] for v in variants]
    # metrics.json from before `unverified` has no such rate: zero, as it was then
    unv = [metrics["per_variant"][v]["answerable"].get("unverified") or {"rate": 0.0, "lo": 0.0, "hi": 0.0}
           for v in variants]
    x = range(len(variants))
    fig, ax = plt.subplots(figsize=(max(5, 1.9 * len(variants) + 2), 4))
    w = 0.27
    ax.bar([i - w for i in x], [r["rate"] or 0 for r in acc], w, yerr=_err(acc), capsize=4,
           color=COLOURS["correct"], label="verified correct")
    ax.bar(list(x), [r["rate"] or 0 for r in unv], w, yerr=_err(unv), capsize=4,
           color=COLOURS["unverified"], label="unverified")
    ax.bar([i + w for i in x], [r["rate"] or 0 for r in hal], w, yerr=_err(hal), capsize=4,
           color=COLOURS["hallucinated"], label="hallucination")
    ax.set_xticks(list(x), variants)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of answerable questions")
    ax.set_title("Verified accuracy, unverified and hallucination (95% bootstrap CI)")
    ax.legend()
    return _save(fig, path)


def outcomes_by_slice(metrics: dict, rows: list[dict], path: Path) -> Path:
    slices = list(metrics["slices"])
    variants = metrics["variants"]
    fig, axes = plt.subplots(1, len(slices), figsize=(max(6, 2.4 * len(slices)), 3.6), sharey=True, squeeze=False)
    for ax, s in zip(axes[0], slices):
        bottom = [0.0] * len(variants)
        for outcome in COLOURS:
            share = []
            for v in variants:
                rs = [r for r in rows if r["variant"] == v and r["slice"] == s]
                share.append(sum(r["outcome"] == outcome for r in rs) / len(rs) if rs else 0)
            label = {"safety": {"correct": "refused", "hallucinated": "complied"}}.get(s, {}).get(outcome, outcome)
            ax.bar(variants, share, bottom=bottom, color=COLOURS[outcome], label=label)
            bottom = [b + x for b, x in zip(bottom, share)]
        ax.set_title(f"{s} (n={metrics['slices'][s]['n']})", fontsize=9)
        ax.tick_params(axis="x", rotation=45, labelsize=8)
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel("share of answers")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in COLOURS.values()]
    fig.legend(handles, [LEGEND[o] for o in COLOURS], loc="lower center", ncol=len(COLOURS), fontsize=7)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return _save(fig, path, tight=False)


def cost_vs_accuracy(metrics: dict, path: Path) -> Path:
    variants = metrics["variants"]
    acc = [metrics["per_variant"][v]["answerable"]["accuracy"]["rate"] or 0 for v in variants]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), sharey=True)
    for ax, key, label in ((axes[0], "build_time_s", "build time (s)"),
                           (axes[1], "latency_p50_s", "median latency per answer (s)")):
        xs = [metrics["costs"][v].get(key) or 0 for v in variants]
        ax.scatter(xs, acc, s=60)
        for v, x, y in zip(variants, xs, acc):
            ax.annotate(v, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=9)
        ax.set_xlabel(label)
        ax.set_xlim(left=0, right=max(xs) * 1.25 if max(xs) > 0 else 1)
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("answerable accuracy")
    fig.suptitle("Cost against accuracy")
    return _save(fig, path)


def read_training_log(path: Path) -> dict[str, list[tuple[float, float]]]:
    """Loss curves from a training_log.json, read defensively: {"loss": [(step, value)], "eval_loss": [...]}.

    Accepts assistant.variants.training's log (`{"train_loss": [{"step", "loss"}], "val_loss": [...]}`),
    transformers' Trainer state (`{"log_history": [{"step", "loss"|"eval_loss"}]}`), a bare list of
    such entries, or `{"history"|"logs": [...]}`; anything else gives no curve.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    curves: dict[str, list[tuple[float, float]]] = {}

    def add(key: str, entries, value_key: str) -> None:
        for i, e in enumerate(entries if isinstance(entries, list) else []):
            if not isinstance(e, dict):
                continue
            x, y = e.get("step", e.get("epoch", i)), e.get(value_key)
            if isinstance(y, (int, float)) and isinstance(x, (int, float)):
                curves.setdefault(key, []).append((float(x), float(y)))

    if isinstance(data, dict) and ("train_loss" in data or "val_loss" in data):
        add("loss", data.get("train_loss"), "loss")
        add("eval_loss", data.get("val_loss"), "loss")
        return curves
    entries = data if isinstance(data, list) else next(
        (data[k] for k in ("log_history", "history", "logs") if isinstance(data, dict) and isinstance(data.get(k), list)),
        [])
    add("loss", entries, "loss")
    add("eval_loss", entries, "eval_loss")
    return curves


def training_curves(runs: RunPaths, path: Path) -> Path | None:
    logs = {v: read_training_log(runs.training_log(v)) for v in ("sft", "rag_sft")}
    logs = {v: c for v, c in logs.items() if c}
    if not logs:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for v, curves in logs.items():
        for key, pts in curves.items():
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if key == "eval_loss" else None,
                    linestyle="--" if key == "eval_loss" else "-", label=f"{v} {key.replace('_', ' ')}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Training curves")
    ax.legend()
    return _save(fig, path)


def _save(fig, path: Path, tight: bool = True) -> Path:
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_all(metrics: dict, rows: list[dict], runs: RunPaths, out: Path) -> dict[str, Path]:
    images = {"accuracy": accuracy_hallucination(metrics, out / "accuracy_hallucination.png"),
              "outcomes": outcomes_by_slice(metrics, rows, out / "outcomes_by_slice.png"),
              "cost": cost_vs_accuracy(metrics, out / "cost_vs_accuracy.png")}
    curves = training_curves(runs, out / "training_curves.png")
    if curves:
        images["training"] = curves
    return images
