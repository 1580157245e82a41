"""Screenshot the verdict section of RUN_DIR/report.html with headless Chromium (for the README),
or with --first-screen what a 1280 x 900 window shows first.

Usage: python scripts/screenshot_verdicts.py RUN_DIR OUT.png [--first-screen]
"""

from __future__ import annotations

import sys
from pathlib import Path

from tlbench.report.browser import CHROMIUM, chromium_page


def main(argv: list[str]) -> int:
    first_screen = "--first-screen" in argv
    argv = [a for a in argv if a != "--first-screen"]
    if len(argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    page_path, out = Path(argv[0]) / "report.html", Path(argv[1])
    if not page_path.is_file():
        print(f"error: {page_path} does not exist: run `tlbench report {argv[0]}` first", file=sys.stderr)
        return 2
    if not CHROMIUM.exists():
        print(f"error: {CHROMIUM} is missing: apt-get install chromium", file=sys.stderr)
        return 2
    with chromium_page(width=1280, height=900) if first_screen else chromium_page() as page:
        page.goto(page_path.resolve().as_uri())
        if first_screen:
            page.screenshot(path=str(out))
        else:
            page.locator("section#verdicts").screenshot(path=str(out))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
