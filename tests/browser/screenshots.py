"""Screenshots of the portal's main pages for README, written by the browser tests as they pass.

`capture(page, name)` saves docs/screenshots/<name>.png at the size the page is being tested at, so the
pictures in README are refreshed whenever the browser tests run against changed pages. Set
KEYWARD_SCREENSHOTS=0 to skip writing them (a read-only checkout, for example).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def enabled() -> bool:
    return os.environ.get("KEYWARD_SCREENSHOTS", "1").lower() not in {"0", "false", "no", "off"}


def capture(page: Any, name: str, *, full_page: bool = True) -> Path | None:
    """Write docs/screenshots/<name>.png from a Playwright page, once its htmx requests have settled."""
    if not enabled():
        return None
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_load_state("networkidle")
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page, animations="disabled", caret="hide")
    return path
