"""A small Chrome DevTools Protocol client: starts headless chromium, opens
one page, sends commands and collects the page's console errors."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import websocket


class Browser:
    def __init__(self) -> None:
        exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
        if not exe:
            raise RuntimeError("no chromium: scripts/ui-tests.sh installs Debian's")
        self.profile = tempfile.mkdtemp(prefix="stratus-chromium-")
        self.proc = subprocess.Popen(
            [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
             "--remote-debugging-port=0", "--remote-allow-origins=*", "--window-size=1280,900",
             f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.05)
        self.port = int(port_file.read_text().split("\n")[0])

    def page(self) -> "Page":
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list") as r:
            targets = [t for t in json.load(r) if t["type"] == "page"]
        return Page(targets[0]["webSocketDebuggerUrl"])

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


class Page:
    def __init__(self, ws_url: str) -> None:
        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.next_id = 0
        self.errors: list[str] = []
        self.loads = 0
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")

    def _event(self, msg: dict) -> None:
        method, p = msg.get("method"), msg.get("params", {})
        if method == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            self.errors.append(d.get("exception", {}).get("description") or d.get("text", "exception"))
        elif method == "Runtime.consoleAPICalled" and p.get("type") == "error":
            self.errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
        elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
            self.errors.append(f'{p["entry"].get("url", "")}: {p["entry"]["text"]}')
        elif method == "Page.loadEventFired":
            self.loads += 1

    def send(self, method: str, **params) -> dict:
        self.next_id += 1
        mine = self.next_id
        self.ws.send(json.dumps({"id": mine, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == mine:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._event(msg)

    def pump(self) -> None:
        """Reads the events that arrived meanwhile."""
        self.ws.settimeout(0.05)
        try:
            while True:
                self._event(json.loads(self.ws.recv()))
        except websocket.WebSocketTimeoutException:
            pass
        finally:
            self.ws.settimeout(60)

    def js(self, expression: str):
        r = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def until(self, expression: str, what: str, timeout: float = 30):
        """Polls a condition in the page until it is truthy."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                v = self.js(expression)
            except RuntimeError:
                v = None  # the page is between documents
            if v:
                return v
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            self.pump()
            time.sleep(0.05)

    def goto(self, url: str) -> None:
        """Opens `url` and waits for its page (or the one it redirects to) to load."""
        before = self.loads
        self.send("Page.navigate", url=url)
        deadline = time.monotonic() + 30
        while self.loads == before:
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out loading {url}")
            self.pump()
        self.until("document.readyState === 'complete'", f"loading {url}")

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        height = self.js("Math.min(document.documentElement.scrollHeight, 2400)")
        self.send("Emulation.setDeviceMetricsOverride", width=1280, height=height, deviceScaleFactor=1, mobile=False)
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        self.send("Emulation.clearDeviceMetricsOverride")

    def clear_cookies(self) -> None:
        self.send("Network.clearBrowserCookies")


def screenshot_dir() -> Path:
    return Path(os.environ.get("UI_SCREENSHOTS", "target/ui-screenshots"))
