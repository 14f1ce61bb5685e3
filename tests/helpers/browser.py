"""Headless Chromium as a user's browser: load a page of a single-page app (the MLflow UI) and
read what it shows, through Chromium's own `--dump-dom` (the DOM once the page's scripts have
run for a virtual-time budget); no driver library needed."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path


class _Text(HTMLParser):
    """The text a page shows: every text node outside <script> and <style>, space-joined."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip and data.strip():
            self.parts.append(data.strip())


def shown_text(dom: str) -> str:
    parser = _Text()
    parser.feed(dom)
    return " ".join(parser.parts)


@dataclass
class Page:
    dom: str  # the rendered DOM (HTML)
    text: str  # what it shows (shown_text)


@dataclass
class Browser:
    exe: str
    profile: Path  # a throwaway profile folder (first-run state, caches)

    def load(self, url: str, until: list[str], budget_ms: int = 15_000, tries: int = 3) -> Page:
        """The page at `url` once it shows every string in `until` (each try doubles the
        virtual-time budget); AssertionError naming what never showed."""
        for _ in range(tries):
            out = subprocess.run(
                [self.exe, "--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-dev-shm-usage", f"--user-data-dir={self.profile}",
                 f"--virtual-time-budget={budget_ms}", "--dump-dom", url],
                capture_output=True, text=True, timeout=180)
            page = Page(out.stdout, shown_text(out.stdout))
            missing = [s for s in until if s not in page.text]
            if not missing:
                return page
            budget_ms *= 2
        raise AssertionError(f"{url}: never showed {missing}; it showed: {page.text[:1500]}")
