"""report.html shows model answers, questions and documents as text: a crafted answer runs no script."""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.evaluation import report

CHROMIUM = Path("/usr/bin/chromium")
ATTACKS = ['<script>window.pwned = "script"</script>',
           '<img src=x onerror="window.pwned = \'img\'">',
           '<svg onload="window.pwned = \'svg\'"></svg>',
           '[click](javascript:window.pwned=1)',
           '<iframe srcdoc="<script>parent.pwned=1</script>"></iframe>',
           '![pixel](https://tracker.example/p.png) ![ref][1]\n\n[1]: https://tracker.example/q.png']


def crafted_report() -> str:
    rows = [{"slice": "unseen", "id": f"q{i}", "question": f"question {attack}", "variant": v,
             "outcome": o, "answer": attack}
            for i, attack in enumerate(ATTACKS) for v, o in (("rag", "correct"), ("sft", "hallucinated"))]
    dis = report.disagreements(rows)
    md = "\n".join(["# Evaluation of `<b>corpus</b>`", "", ATTACKS[0], "", report._table(
        ["slice", "question", "rag", "sft"],
        [[d["slice"], report._cell(d["question"])] + [report._cell(d["answers"][v][1]) for v in ("rag", "sft")]
         for d in dis])])
    return report.html(md, {}, "<script>x</script> evaluation")


def test_report_html_escapes_raw_html_from_answers_and_questions():
    page = crafted_report()
    lowered = page.lower()
    for tag in ("<script", "<img", "<svg", "<iframe", 'href="javascript'):
        assert tag not in lowered, tag
    assert "&lt;img src=x onerror=" in page  # shown as text, not dropped: the reader sees what the model wrote
    assert "src=\"https://tracker" not in page and "pixel" in page  # an image in an answer fetches nothing: its alt text


def test_the_reports_own_plots_stay_images(tmp_path):
    png = tmp_path / "accuracy.png"
    png.write_bytes(b"\x89PNG fake")
    page = report.html("![accuracy](plots/accuracy.png)", {"accuracy": str(png)}, "r")
    assert '<img src="data:image/png;base64,' in page


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (make browser)")
def test_no_script_runs_when_the_report_is_opened_in_chromium(tmp_path):
    from playwright.sync_api import sync_playwright

    path = tmp_path / "report.html"
    path.write_text(crafted_report(), encoding="utf-8")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        dialogs = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(path.as_uri())
        page.wait_for_load_state("load")
        page.get_by_text("click").first.click() if page.get_by_text("click").count() else None
        page.wait_for_timeout(300)
        assert page.evaluate("window.pwned") is None and not dialogs
        assert page.locator("script, img, svg, iframe").count() == 0
        assert "<script>" in page.inner_text("body")  # the attack is visible as text
        browser.close()
