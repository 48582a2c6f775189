"""How long headless chromium takes to load and draw a dashboard page:
`render.py LOGIN_LINK` logs in through the link (whose `next` is the page),
then loads the page three times and prints the median as JSON
(`load_ms`: navigation start to the load event; `painted_ms`: to the
second animation frame after it). Used by `stratus-bench ui`; with
`UI_SCREENSHOTS` set, saves the page there as ui-job-large.png."""

from __future__ import annotations

import json
import os
import statistics
import sys
from urllib.parse import parse_qs, urlsplit

from pathlib import Path

from cdp import Browser

link = sys.argv[1]
parts = urlsplit(link)
target = f"{parts.scheme}://{parts.netloc}{parse_qs(parts.query)['next'][0]}"
b = Browser()
try:
    p = b.page()
    p.goto(link)
    p.until(f"location.href === {json.dumps(target)} && document.readyState === 'complete'", "the page after login")
    loads, paints = [], []
    for _ in range(3):
        p.goto(target)
        t = p.js("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(performance.now()))))")
        loads.append(p.js("performance.getEntriesByType('navigation')[0].loadEventEnd"))
        paints.append(t)
    if os.environ.get("UI_SCREENSHOTS"):
        p.screenshot(Path(os.environ["UI_SCREENSHOTS"]) / "ui-job-large.png")
    bars = p.js("document.querySelectorAll('svg.timeline rect').length")
    print(json.dumps({"load_ms": statistics.median(loads), "painted_ms": statistics.median(paints), "bars": bars,
                      "errors": p.errors}))
finally:
    b.close()
