"""The dashboard in headless chromium against a real `stratus up`: log in
through `stratus dashboard`'s link, open every page, read the DOM (names,
counts, one bar per task), watch live updates arrive, and find no console
error anywhere. Each page is saved as a screenshot."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest

from cdp import Browser, screenshot_dir

ROOT = Path(__file__).resolve().parents[2]
TASKS = 40


def stratus_bin() -> str:
    explicit = os.environ.get("STRATUS_BIN")
    if explicit:
        return explicit
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    for build in ("debug", "release"):
        if (target / build / "stratus").exists():
            return str(target / build / "stratus")
    pytest.exit("no stratus binary: build it (cargo build -p stratus) or set STRATUS_BIN", 2)


class Node:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp  # functions see it (--sandbox-path), as their unprivileged user
        tmp.chmod(0o777)
        self.env = dict(os.environ, STRATUS_LOG="warn", STRATUS_CREDENTIALS=str(tmp / "credentials.toml"))
        for v in ("STRATUS_TOKEN", "STRATUS_URL", "STRATUS_PROJECT"):
            self.env.pop(v, None)
        self.proc = subprocess.Popen(
            [stratus_bin(), "up", "--listen", "127.0.0.1:0", "--data-dir", str(tmp / "data"), "--slots", "2",
             "--sandbox-path", f"{tmp}:rw"],
            stdout=subprocess.PIPE, env=self.env,
        )
        line = self.proc.stdout.readline().decode()
        assert line.startswith("stratus listening on "), line
        self.url = line.split()[-1]
        self.token = (tmp / "data" / "admin.token").read_text().strip()
        self.env.update(STRATUS_URL=self.url, STRATUS_TOKEN=self.token)

    def cli(self, *args: str) -> str:
        out = subprocess.run([stratus_bin(), *args], env=self.env, capture_output=True, text=True)
        assert out.returncode == 0, f"stratus {args}: {out.stderr}"
        return out.stdout

    def api(self, path: str) -> dict:
        req = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.load(r)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stratus")
    n = Node(tmp)
    fn = tmp / "sq"
    fn.mkdir()
    run = fn / "run.sh"
    run.write_text('#!/bin/sh\nread x\nif [ "$x" = 13 ]; then echo "cannot square $x: unlucky" >&2; exit 3; fi\n'
                   'echo $((x * x))\n')
    run.chmod(0o755)
    n.cli("fn", "deploy", "sq", "--dir", str(fn), "--cmd", "./run.sh")
    inputs = tmp / "inputs.jsonl"
    inputs.write_text("".join(f"{i}\n" for i in range(TASKS)))
    n.job = n.cli("map", "sq", "--inputs", str(inputs), "--detach").strip()
    assert n.api(f"/v1/jobs/{n.job}?wait=120")["state"] == "failed"
    n.cli("trigger", "create", "on-upload", "--on", "com.example.upload", "--invoke", "sq")
    n.cli("schedule", "create", "nightly", "--cron", "0 3 * * *", "--emit", "com.example.nightly")
    yield n
    n.stop()


@pytest.fixture(scope="module")
def page():
    b = Browser()
    p = b.page()
    yield p
    b.close()


def shot(page, name: str) -> None:
    page.screenshot(screenshot_dir() / f"ui-{name}.png")


def count(page, selector: str) -> int:
    return page.js(f"document.querySelectorAll({json.dumps(selector)}).length")


def text(page, selector: str) -> str:
    return page.js(f"(document.querySelector({json.dumps(selector)}) || {{}}).textContent || ''")


def test_the_login_link_opens_the_job_with_one_bar_per_task(node, page):
    link = node.cli("dashboard", "--next", f"/ui/jobs/{node.job}").strip()
    assert "/ui/login?code=" in link and node.token not in link
    page.send("Page.navigate", url=link)
    page.until(f"location.pathname === '/ui/jobs/{node.job}' && document.readyState === 'complete'",
               "the job's page after logging in")
    assert page.js("document.cookie") == "", "the session cookie is HttpOnly"
    assert count(page, "svg.timeline rect.task") == TASKS
    assert count(page, "svg.timeline rect.task[data-state='failed']") == 1
    assert page.js("document.querySelector('rect.task[data-state=failed]').dataset.task") == "13"
    assert page.js("[...document.querySelectorAll('svg.histogram rect.bin')]"
                   ".reduce((n, r) => n + Number(r.dataset.count), 0)") == TASKS
    assert page.js("document.querySelector('svg.curve').dataset.done") == str(TASKS)
    assert count(page, "#failures tbody tr") == 1
    assert page.errors == []
    shot(page, "job")

    # The link worked once.
    page.goto(link)
    assert "used already" in text(page, "#login-error")
    assert len(page.errors) == 1 and "401" in page.errors[0], page.errors  # the refused code's status, as expected
    page.errors.clear()


def test_every_page_shows_the_project(node, page):
    expect = {
        "/ui/": ("#count-functions", "1"),
        "/ui/functions": ("#functions tbody tr[data-function='sq'] td", "sq"),
        "/ui/functions/sq": ("h1", "Function sq"),
        "/ui/invocations?state=failed": ("#invocations tbody tr[data-state='failed'] td:nth-child(2)", "sq v1"),
        "/ui/jobs": ("#jobs tbody tr td", node.job),
        "/ui/workers": ("#workers tbody tr[data-state='alive'] td:nth-child(4)", "2"),
        "/ui/triggers": ("#triggers tbody tr[data-trigger='on-upload'] td", "on-upload"),
        "/ui/schedules": ("#schedules tbody tr[data-schedule='nightly'] td", "nightly"),
    }
    for path, (selector, want) in expect.items():
        page.goto(node.url + path)
        assert text(page, selector).strip() == want, f"{path}: {selector}"
        assert page.errors == [], path
        shot(page, path.split("?")[0].removeprefix("/ui/").replace("/", "-") or "overview")
    page.goto(node.url + "/ui/invocations?state=failed")
    assert count(page, "#invocations tbody tr") == 1, "the filter keeps the failed task only"

    # The failed task's invocation shows its error and the tail of its stderr.
    page.js("document.querySelector('#invocations tbody tr td a').click()")
    page.until("location.pathname.startsWith('/ui/invocations/') && document.readyState === 'complete'",
               "the invocation's page")
    assert "cannot square 13: unlucky" in page.js("document.body.textContent")
    assert page.js("document.querySelector('main pre').textContent") == "13", "the input comes first"
    assert count(page, "#attempts tbody tr") == 1
    assert page.errors == []
    shot(page, "invocation")


def test_events_arrive_live(node, page):
    page.goto(node.url + "/ui/events")
    before = count(page, "#events tbody tr")
    assert count(page, "#events tbody tr[data-type='stratus.job.failed']") == 1
    node.cli("event", "publish", "--type", "com.example.upload", "--source", "/browser", "--id", "e1",
             "--subject", "photos/cat.png", "--data", '{"size": 1}')
    page.until("!!document.querySelector(\"#events tbody tr[data-type='com.example.upload']\")",
               "the published event on the page")
    assert count(page, "#events tbody tr") > before
    assert page.errors == []
    shot(page, "events")


def test_a_running_job_updates_live(node, page):
    gate = node.tmp / "open"
    slow = node.tmp / "slow"
    slow.mkdir()
    run = slow / "run.sh"
    run.write_text(f'#!/bin/sh\nread x\nwhile [ ! -e {gate} ]; do sleep 0.05; done\necho "$x"\n')
    run.chmod(0o755)
    node.cli("fn", "deploy", "slow", "--dir", str(slow), "--cmd", "./run.sh")
    inputs = node.tmp / "in.jsonl"
    inputs.write_text("".join(f"{i}\n" for i in range(6)))
    job = node.cli("map", "slow", "--inputs", str(inputs), "--detach").strip()
    page.goto(f"{node.url}/ui/jobs/{job}")
    assert page.js("document.getElementById('job').dataset.live") == "true"
    page.until("document.getElementById('job-running').textContent === '2'", "two tasks running")
    gate.write_text("")
    # The page follows the job over SSE and redraws itself when it ends.
    page.until("document.getElementById('job') && document.getElementById('job').dataset.state === 'succeeded'",
               "the job's end on the page")
    page.until("document.querySelectorAll('svg.timeline rect.task').length === 6", "the redrawn timeline")
    assert page.errors == []


def test_a_trigger_is_disabled_and_a_schedule_paused_from_their_pages(node, page):
    for path, row, verb, state, back in [
        ("/ui/triggers", "tr[data-trigger='on-upload']", "disable", "disabled", "enable"),
        ("/ui/schedules", "tr[data-schedule='nightly']", "pause", "paused", "resume"),
    ]:
        page.goto(node.url + path)
        before = page.loads
        page.js(f"document.querySelector(\"{row} button[data-verb='{verb}']\").click()")
        page.until(f"document.readyState === 'complete' && "
                   f"!!document.querySelector(\"{row} .badge.s-{state}\")", f"{path}: {state}")
        assert page.loads > before
        assert count(page, f"{row} button[data-verb='{back}']") == 1
    shown = json.loads(node.cli("trigger", "show", "on-upload", "--json"))
    assert shown["enabled"] is False, "the page's change is the API's"
    assert page.errors == []


def test_logging_out_ends_the_session(node, page):
    page.goto(node.url + "/ui/")
    page.js("document.querySelector('.who form').submit()")
    page.until("location.pathname === '/ui/login' && document.readyState === 'complete'", "the login page")
    page.goto(node.url + "/ui/jobs")
    assert page.js("location.pathname") == "/ui/login", "the old session no longer opens pages"
    shot(page, "login")
    page.js(f"document.querySelector('input[name=token]').value = {json.dumps(node.token)};"
            "document.querySelector('form.login').submit()")
    page.until("location.pathname === '/ui/jobs' && document.readyState === 'complete'", "the page after login")
    assert page.errors == []
