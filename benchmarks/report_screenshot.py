"""The README's picture of `nnexp report`: a report's page as headless Chromium shows it
1200 px wide, once every chart is drawn (Debian's /usr/bin/chromium, driven by Playwright).

    nnexp report results/beyond-20261201 -o /tmp/report.html
    python benchmarks/report_screenshot.py /tmp/report.html docs/report.png [--height 1350]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from playwright.sync_api import sync_playwright


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("png", type=Path)
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=1350, help="How much of the page, from its top.")
    args = parser.parse_args()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": args.width, "height": args.height})
        page.goto(args.page.resolve().as_uri())
        page.wait_for_function("window.nnexpReady === true", timeout=120_000)
        # hover the first row's best-epoch star in the first chart, so the picture shows a label
        star = page.evaluate("""() => {
            const gd = document.querySelector('#charts .chart'), L = gd._fullLayout, box = gd.getBoundingClientRect();
            const t = gd.data.find(t => t.meta.kind === 'best');
            return t && {x: box.left + L._size.l + L.xaxis.l2p(t.x[0]), y: box.top + L._size.t + L.yaxis.l2p(t.y[0])};
        }""")
        if star:
            page.mouse.move(star["x"] - 20, star["y"] + 20)
            page.mouse.move(star["x"], star["y"], steps=4)
            page.wait_for_timeout(300)
        page.screenshot(path=str(args.png))
        browser.close()
    print(args.png)


if __name__ == "__main__":
    main()
