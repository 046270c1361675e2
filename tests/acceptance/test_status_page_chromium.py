"""The status page in a real headless Chromium (Debian's package) against real daemon and
emulator processes: log in with the token, watch a job run with its sub-state, screenshot.

Chromium is driven over the Chrome DevTools Protocol on its websocket with aiohttp (already a
dependency): the few commands needed (navigate, evaluate, type, press Enter, screenshot) do not
justify a browser-automation package."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers import REPO, DaemonProc, Processes, job_body, job_id_of, ok_json

pytestmark = pytest.mark.acceptance

TOKEN = "status-page-token-7f3a"
SCREENSHOT = REPO / "tests" / "output" / "status-page.png"
# An expression true once the element (a CSS selector in %s) is laid out.
VISIBLE = ("(() => { const el = document.querySelector('%s');"
           " return !!el && el.getClientRects().length > 0; })()")


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path is not None:
            return path
    if os.environ.get("CI") == "true":
        pytest.fail("chromium missing in CI (run .ci/install-ops.sh)")
    pytest.skip("chromium not installed (apt-get install chromium)")


class Page:
    """One browser tab over CDP: commands with ids, their answers matched by id."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        await self._ws.send_json({"id": call_id, "method": method, "params": params})
        while True:
            msg = await asyncio.wait_for(self._ws.receive(), timeout=30)
            if msg.type is not aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"CDP socket closed: {msg!r}")
            data = json.loads(msg.data)
            if data.get("id") != call_id:
                continue  # an event, or a late answer
            if "error" in data:
                raise AssertionError(f"{method}: {data['error']}")
            result: dict[str, Any] = data.get("result", {})
            return result

    async def js(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = await self.send("Runtime.evaluate", expression=expression,
                                 returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def until(self, expression: str, timeout_s: float, what: str) -> Any:
        """Evaluate until truthy (the page redraws every 2 s), then the value."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = await self.js(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                text = await self.js("document.body.innerText")
                raise AssertionError(f"timed out waiting for {what}; the page shows:\n{text}")
            await asyncio.sleep(0.2)

    async def visible(self, selector: str) -> bool:
        """Whether the element is laid out (not hidden by attribute or style)."""
        return bool(await self.js(
            f"(() => {{ const el = document.querySelector({json.dumps(selector)});"
            " return !!el && el.getClientRects().length > 0; })()"))

    async def type_and_enter(self, selector: str, text: str) -> None:
        """Focus a field, type into it as a keyboard would, and press Enter."""
        await self.js(f"document.querySelector({json.dumps(selector)}).focus()")
        await self.send("Input.insertText", text=text)
        for kind in ("keyDown", "keyUp"):
            await self.send("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter",
                            windowsVirtualKeyCode=13, nativeVirtualKeyCode=13,
                            **({"text": "\r"} if kind == "keyDown" else {}))


@contextlib.asynccontextmanager
async def chromium(tmp_path: Path) -> AsyncIterator[Page]:
    """A headless Chromium with a fresh profile; its first tab, driven over CDP."""
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    argv = [chromium_binary(), "--headless=new", "--remote-debugging-port=0",
            f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check",
            "--disable-gpu", "--disable-extensions", "--window-size=1280,1100",
            "--hide-scrollbars", "about:blank"]
    if os.geteuid() == 0:
        argv.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
    log = (tmp_path / "chromium.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("chromium did not start:\n"
                                     + (tmp_path / "chromium.log").read_text(errors="replace"))
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().splitlines()[0])
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets = await resp.json()
            page_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            async with session.ws_connect(page_url, max_msg_size=64 * 1024 * 1024) as ws:
                yield Page(ws)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def _daemon(procs: Processes, tmp_path: Path) -> DaemonProc:
    emulator = procs.emulator(job_seconds=60, pending_seconds=1, max_concurrent=2)
    token_file = tmp_path / "api-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    return procs.daemon(emulator.url, {
        "server": {"token_file": str(token_file)},
        "limits": {"max_active": 2, "per_base_model": {"gemini-2.5-flash": 1}},
        "polling": {"initial_interval_s": 0.3, "max_interval_s": 0.6},
    })


async def test_the_status_page_logs_in_shows_a_running_job_and_is_screenshotted(
        procs: Processes, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """In headless Chromium: the page asks for the token (a wrong one is refused), keeps it in
    sessionStorage only, then shows a job running with its sub-state, the queue with positions,
    the limits and a job Vertex refused with its error; the screenshot is written to
    tests/output/status-page.png."""
    chromium_binary()  # skip (or fail under CI) before starting anything
    daemon = _daemon(procs, tmp_path)
    runner = ok_json(daemon.call("POST", daemon.collection_url(version="v1beta1"),
                                 body=job_body("runs <first>")))
    waiting = [ok_json(daemon.call("POST", daemon.collection_url(version="v1beta1") +
                                   f"?priority={p}", body=job_body(f"waits {p}")))
               for p in (1, 2)]
    # An unknown base model passes the daemon (it forwards models it does not list) and is
    # refused by Vertex at create: a recent failure with its reason.
    refused = ok_json(daemon.call("POST", daemon.collection_url(version="v1beta1"),
                                  body=job_body("refused", baseModel="no-such-model")))

    async with chromium(tmp_path) as page:
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        await page.send("Page.navigate", url=daemon.url + "/")
        await page.until(VISIBLE % "#login", 20, "the login form")
        assert not await page.visible("#status")
        await page.until("document.getElementById('login-note').textContent.includes('token')",
                         5, "the login's note")

        await page.type_and_enter("#token", "not-the-token")
        await page.until("document.getElementById('login-note').textContent"
                         ".includes('refused')", 10, "the refusal of a wrong token")
        assert await page.js("sessionStorage.getItem('tuningd.token')") is None

        await page.type_and_enter("#token", TOKEN)
        substate = await page.until(
            f"(() => {{ const row = document.querySelector("
            f"'#active-table tr[data-job-id=\"{job_id_of(runner)}\"]');"
            " if (!row || !row.textContent.includes('running')) return null;"
            " const cell = row.children[2].textContent.trim();"
            " return cell !== '-' ? cell : null; })()",
            60, "the first job running with its sub-state")
        assert substate in ("processing dataset", "waiting for capacity", "tuning",
                            "post processing", "waiting for quota"), substate

        assert not await page.visible("#login")
        assert await page.visible("#status") and await page.visible("#signout")
        text = await page.js("document.getElementById('status').innerText")
        assert "runs <first>" in text  # shown as text, escaped on the way
        queue = await page.js("Array.from(document.querySelectorAll('#queue-table tr.job'))"
                              ".map(r => [r.dataset.jobId, r.children[0].textContent])")
        assert queue == [[job_id_of(waiting[1]), "1"], [job_id_of(waiting[0]), "2"]]
        assert "waits for a free slot: baseModel/gemini-2.5-flash" in await page.js(
            "document.getElementById('queue-table').innerText")
        limits = await page.js("document.getElementById('limits-table').innerText")
        assert "global" in limits and "1 / 2" in limits
        assert "baseModel/gemini-2.5-flash" in limits and "1 / 1" in limits
        failure = await page.until(
            f"(() => {{ const row = document.querySelector("
            f"'#failures-table tr[data-job-id=\"{job_id_of(refused)}\"]');"
            " return row ? row.innerText : null; })()", 30, "the refused job as a failure")
        assert "refused" in failure and "no-such-model" in failure
        assert "No place has its creates paused." in text
        assert "Last successful poll" in text and "never" not in text

        # The token lives in this tab's sessionStorage only: not in the URL, not in a cookie.
        assert await page.js("location.href") == daemon.url + "/"
        assert await page.js("sessionStorage.getItem('tuningd.token')") == TOKEN
        assert await page.js("document.cookie") == ""
        assert await page.js("localStorage.length") == 0

        shot = await page.send("Page.captureScreenshot", format="png",
                               captureBeyondViewport=True)
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        SCREENSHOT.write_bytes(base64.b64decode(shot["data"]))
        with capsys.disabled():  # shown in every run, for the note that attaches it
            print(f"\nstatus page screenshot: {SCREENSHOT}")
        assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert SCREENSHOT.stat().st_size > 10_000

        await page.js("document.getElementById('signout').click()")
        await page.until(VISIBLE % "#login", 5, "the login after signing out")
        assert not await page.visible("#status")
        assert await page.js("sessionStorage.getItem('tuningd.token')") is None
