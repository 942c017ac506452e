"""Make the README's picture of the web page, docs/web.png: the real page, served by the real app
on the bundled `shapes` models, after a batch of four pixel-art variations, in headless Chromium.

    python -m scripts.make_web_screenshot     # writes docs/web.png (about a minute on a CPU)

Needs Playwright and Debian's Chromium (`apt-get install chromium`), as the browser tests do.
"""

from __future__ import annotations

import argparse
import re
import socket
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "web.png"
CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1200, "height": 1000}
PROMPT = "a yellow star on a purple background"
TIMEOUT_MS = 10 * 60 * 1000  # four CPU pictures on a busy machine


def serve_app(output_dir: Path) -> tuple[object, str]:
    """The app on the shapes models, served by uvicorn in a thread: (server, base URL)."""
    import uvicorn

    from api.app import create_app
    from api.config import ServiceConfig

    config = ServiceConfig(clip_models=["shapes"], output_dir=output_dir, device="cpu")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(config), log_level="warning"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.1)
    return server, f"http://127.0.0.1:{sock.getsockname()[1]}"


def make_batch(page: object, base_url: str) -> None:
    """Open the page, make four pixel-art variations of PROMPT, wait until they are shown."""
    page.goto(base_url)  # type: ignore[attr-defined]
    page.wait_for_selector("html[data-ready]")  # type: ignore[attr-defined]
    page.get_by_label("Prompt", exact=True).fill(PROMPT)  # type: ignore[attr-defined]
    page.get_by_role("radio", name=re.compile("Pixel art")).check()  # type: ignore[attr-defined]
    page.locator("input[name=variations][value='4']").check(force=True)  # type: ignore[attr-defined]
    page.locator("#advanced summary").click()  # type: ignore[attr-defined]
    page.get_by_label("Seed", exact=True).fill("1")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Create art").click()  # type: ignore[attr-defined]
    page.wait_for_function(  # type: ignore[attr-defined]
        "[...document.querySelectorAll('#variations-grid img')]"
        ".filter(img => img.complete && img.naturalWidth > 0).length === 4",
        timeout=TIMEOUT_MS,
    )


def main(argv: list[str] | None = None) -> int:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"PNG to write (default {OUT})")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        server, base_url = serve_app(Path(tmp))
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport=VIEWPORT)
        make_batch(page, base_url)
        page.mouse.move(0, 0)  # no hover effect in the picture
        # The form and the finished batch, just under the page's header.
        page.locator(".workspace").evaluate(
            "el => window.scrollTo(0, el.getBoundingClientRect().top + window.scrollY - 80)"
        )
        page.screenshot(path=str(args.out))
        browser.close()
        server.should_exit = True  # type: ignore[attr-defined]
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
