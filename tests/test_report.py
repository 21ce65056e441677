"""report.md as sections the stages log (report.Report), and the parts of it that read settings."""

from __future__ import annotations

import json

import pytest

from assistant.config import EvalSettings, VerdictRules
from assistant.evaluation import report


def test_sections_render_in_the_report_s_order_whoever_logs_them_first(tmp_path):
    r = report.Report()
    r.log("verdict", ["## Verdict", "", "Use rag.", ""], {"recommendation": "rag"})
    r.log("first_verdict", report.first_verdict_section(["sft", "rag_sft"]), {"pending": ["sft", "rag_sft"]})
    r.log("labels", [])  # nothing to say: left out
    r.log("header", ["# Evaluation of `faq`", ""])
    assert [s.name for s in r.ordered()] == ["header", "first_verdict", "verdict"]
    md = r.markdown()
    assert md.index("# Evaluation") < md.index("**First verdict**, written before training sft, rag_sft") \
        < md.index("Use rag.")
    r.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "00-header.md", "01-first_verdict.json", "01-first_verdict.md", "02-verdict.json", "02-verdict.md"]
    assert json.loads((tmp_path / "01-first_verdict.json").read_text()) == {"pending": ["sft", "rag_sft"]}
    assert "\n".join(p.read_text() for p in sorted(tmp_path.glob("*.md"))) == md  # the pieces are the report
    with pytest.raises(ValueError, match="unknown report section 'verdicts'"):
        r.log("verdicts", ["x"])


def test_a_report_without_a_first_verdict_section_never_says_first_verdict():
    r = report.Report()
    r.log("header", ["# Evaluation of `faq`", ""])
    r.log("verdict", report.verdict_section({"recommendation": "rag", "text": "Use rag.", "provisional": None}))
    assert "First verdict" not in r.markdown() and "**Recommendation: rag**" in r.markdown()


def _settings(threshold: float | None) -> dict:
    evaluation = EvalSettings().model_dump()
    if threshold is None:
        del evaluation["similarity_threshold"]
    else:
        evaluation["similarity_threshold"] = threshold
    return {"settings": {"evaluation": evaluation, "verdict": VerdictRules().model_dump()}, "scoring_paths": {}}


def test_the_similarity_threshold_in_the_method_comes_from_the_settings_only():
    assert "MiniLM cosine below 0.71)" in "\n".join(report.method_section(_settings(0.71)))
    default = EvalSettings().similarity_threshold
    assert f"MiniLM cosine below {default})" in "\n".join(report.method_section(_settings(default)))
    with pytest.raises(KeyError):  # no stale fallback of its own: metrics.json always carries the setting
        report.method_section(_settings(None))
