"""Take the README's screenshot: the app answering a demo question, every column finished.

    python docs/screenshot.py [CORPUS] [--question Q] [--out docs/screenshot.png]

Starts `python app.py CORPUS` on a free port, asks in headless Chromium (Debian's, as the browser
test does), waits until every column has answered, opens the passages and saves a PNG.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", nargs="?", default="corpora/ecostride")
    ap.add_argument("--question", default="What percentage of revenue goes to reforestation projects?")
    ap.add_argument("--out", default=str(ROOT / "docs" / "screenshot.png"))
    ap.add_argument("--width", type=int, default=1500)
    args = ap.parse_args()
    from playwright.sync_api import expect, sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = subprocess.Popen([sys.executable, "app.py", args.corpus, "--port", str(port)], cwd=ROOT)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(600):
            if app.poll() is not None:
                return app.returncode
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": args.width, "height": 1000}, device_scale_factor=1)
            page.set_default_timeout(300_000)
            expect.set_options(timeout=300_000)  # the real model on a busy CPU
            page.goto(url)
            chats = page.locator("[id^=chat-]")
            expect(chats.first).to_be_visible()
            page.locator("#question textarea").fill(args.question)
            page.locator("#ask").click()
            expect(page.locator("[id^=chat-] .stats")).to_have_count(chats.count())
            for panel in page.locator("[id^=passages-]:visible").all():
                panel.get_by_text("Passages").click()
            page.mouse.move(0, 0)
            time.sleep(1)
            page.screenshot(path=args.out, full_page=True)
            browser.close()
        print(f"saved {args.out}")
        return 0
    finally:
        app.terminate()
        app.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
