"""End to end in headless Chromium: `python app.py` on the tiny corpus, asked, reported, voted.

Debian's chromium is used (Playwright's own browser download does not work offline); `make
browser` installs it. The app runs as a subprocess exactly as a user starts it.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest

from assistant.corpus.corpus import load_corpus
from assistant.serve.lineup import example_questions, load_report
from assistant.variants import NotBuilt, variant_class

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).parent.parent
pytestmark = pytest.mark.browser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(corpus_dir: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "app.py", str(corpus_dir), "--port", str(port)], cwd=ROOT,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the app exited with code {proc.returncode}:\n{log.read_text()}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc, url
        except OSError:
            time.sleep(0.3)
    proc.kill()
    pytest.fail(f"the app did not answer on {url} within 90 s:\n{log.read_text()}")


def build_what_is_cheap(corpus) -> list[str]:
    """prompted always; rag too when this version has it (its index builds in seconds)."""
    built = ["prompted"]
    try:
        variant_class("rag")
    except NotBuilt:
        return built
    from assistant.variants.build import build_variants

    build_variants(corpus, ["rag"])
    return built + ["rag"]


class Evaluation(threading.Thread):
    """The real evaluation of the fixture corpus (one question per slice), run beside the browser."""

    def __init__(self, corpus, variants):
        super().__init__(daemon=True)
        self.corpus, self.variants, self.error = corpus, variants, None

    def run(self):
        try:
            from assistant.evaluation.runner import evaluate
        except ImportError:  # an early version without the runner: a minimal report instead
            folder = self.corpus.runs_dir / "eval" / "20250101-000000"
            folder.mkdir(parents=True)
            (folder / "metrics.json").write_text(json.dumps({"verdict": {"text": "Recommendation: prompted."}}))
            (folder / "report.md").write_text("# Report\n")
            (folder.parent / "latest").symlink_to(folder.name)
            return
        try:
            evaluate(self.corpus, variants=self.variants, limit=1)
        except BaseException as e:  # re-raised in the test's thread
            self.error = e


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (make browser)")
def test_chat_report_and_blind_vote_in_a_real_browser(tiny_corpus_dir, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    corpus = load_corpus(tiny_corpus_dir)
    built = build_what_is_cheap(corpus)
    log = tmp_path / "app.log"
    proc, url = serve(tiny_corpus_dir, log)
    evaluation = Evaluation(corpus, built)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM),
                                        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            expect.set_options(timeout=60_000)  # a busy CI machine; the tiny model answers in about a second
            page.goto(url)

            # Not-built variants are named with the command that builds them.
            for name in {"sft", "rag_sft"} - set(built):
                expect(page.locator("#missing")).to_contain_text(f"--variant {name}")

            # Nothing under runs/ is served (answer caches, votes), and no path escapes.
            for leak in (corpus.runs_dir / "votes.jsonl", corpus.runs_dir, Path("/etc/passwd")):
                leak_url = f"{url}gradio_api/file={leak}"
                with pytest.raises(urllib.error.HTTPError) as refused:
                    urllib.request.urlopen(leak_url, timeout=10)
                assert refused.value.code in (403, 404), leak_url
            for trick in ("gradio_api/file=../../../../etc/passwd", "gradio_api/file=%2e%2e/%2e%2e/etc/passwd"):
                try:
                    body = urllib.request.urlopen(url + trick, timeout=10).read()
                except urllib.error.HTTPError:
                    continue
                assert b"root:" not in body, trick

            # Nothing evaluated yet: the report tab says which command to run.
            page.get_by_role("tab", name="Report").click()
            expect(page.locator("#verdict")).to_contain_text(
                f"No evaluation yet: run assistant compare {tiny_corpus_dir}")
            evaluation.start()
            page.get_by_role("tab", name="Side by side").click()

            # Too long a question: a visible message, nothing asked.
            page.locator("#question textarea").fill("x" * 1001)
            page.locator("#ask").click()
            expect(page.locator("#status")).to_contain_text("the limit is 1000")
            expect(page.locator("#chat-prompted .stats")).to_have_count(0)

            # One question: every column answers, with its timing and tokens; a second tab asking
            # at the same time waits its turn in the queue and gets its own answers.
            other = browser.new_page()
            other.goto(url)
            page.locator("#question textarea").fill("Can I visit the workshop on a Monday?")
            other.locator("#question textarea").fill("How much is the Basic Tune-Up?")
            page.locator("#ask").click()
            other.locator("#ask").click()
            for name in built:
                expect(page.locator(f"#chat-{name} .stats")).to_have_count(1)
                expect(page.locator(f"#chat-{name} .stats")).to_have_text(
                    re.compile(r"\d+\.\d\d s · (\d+ prompt \+ \d+ answer tokens|abstained)"))
                expect(other.locator(f"#chat-{name} .stats")).to_have_count(1)
                expect(other.locator(f"#chat-{name}")).not_to_contain_text("workshop")
            other.close()
            if "rag" in built:  # the retrieved passages, in a collapsible panel
                page.locator("#passages-rag").get_by_text("Passages").click()
                expect(page.locator("#passages-rag")).to_contain_text("docs/service.md")
                expect(page.locator("#passages-rag")).to_contain_text("score")

            # An example is one click away, and it is a second turn of the same conversation.
            page.locator("#examples").get_by_text(example_questions(corpus)[0]).click()
            for name in built:
                expect(page.locator(f"#chat-{name} .stats")).to_have_count(2)
                expect(page.locator(f"#chat-{name}")).to_contain_text("Can I visit the workshop on a Monday?")
            page.locator("#clear").click()
            expect(page.locator("#chat-prompted .stats")).to_have_count(0)

            # A question with HTML in it is shown as typed, not rendered.
            page.locator("#question textarea").fill("<b>bold?</b> <img src=x onerror=\"window.pwned=1\">")
            page.locator("#ask").click()
            expect(page.locator("#chat-prompted")).to_contain_text("<b>bold?</b>")
            expect(page.locator("#chat-prompted b")).to_have_count(0)
            assert page.evaluate("window.pwned") is None
            page.locator("#clear").click()

            # Blind comparison: answers under A/B, a vote, the labels revealed.
            page.get_by_role("tab", name="Blind comparison").click()
            question = "Which days is the workshop closed?"
            if len(built) < 2:
                expect(page.locator("#blind-explain")).to_contain_text("needs two built variants")
            else:
                page.locator("#blind-question textarea").fill(question)
                page.locator("#blind-ask").click()
                expect(page.locator("#vote-tie")).to_be_enabled()
                page.locator("#vote-tie").click()
                expect(page.locator("#blind-reveal")).to_contain_text("A was ")
                a, b = re.search(r"A was (\w+), B was (\w+)", page.locator("#blind-reveal").inner_text()).groups()
                assert {a, b} == set(built[:2]) and a != b
                expect(page.locator("#vote-A")).to_be_disabled()  # one vote per answer pair
                rows = [json.loads(line) for line in (corpus.runs_dir / "votes.jsonl").read_text().splitlines()]
                assert len(rows) == 1
                assert rows[0] | {"time": None} == {"time": None, "question": question, "a": a, "b": b, "vote": "tie"}
                assert datetime.fromisoformat(rows[0]["time"])

            # The report: the verdict written by the evaluation, its plots and the disagreements.
            evaluation.join(timeout=300)
            assert not evaluation.is_alive(), "the evaluation took more than 5 minutes"
            if evaluation.error:
                raise evaluation.error
            metrics = json.loads((corpus.runs_dir / "eval" / "latest" / "metrics.json").read_text())
            page.get_by_role("tab", name="Report").click()
            page.locator("#report-refresh").click()
            expect(page.locator("#verdict")).to_contain_text(metrics["verdict"]["text"][:60])
            if metrics.get("plots"):  # a large preview above one thumbnail per plot
                expect(page.locator("#plots img").first).to_be_visible()
                assert page.locator("#plots img").count() >= len(metrics["plots"])
            shown = load_report(corpus)  # the table the evaluation's files give
            if shown.rows:
                expect(page.locator("#disagreements")).to_contain_text(str(shown.rows[0][0]))
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    server_log = log.read_text()
    assert "Traceback" not in server_log, server_log
