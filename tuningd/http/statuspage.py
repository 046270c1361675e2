"""The status page: a static shell at `/` (login for the API token, kept in sessionStorage) whose
inline script fetches a server-rendered fragment every few seconds, and the status routes."""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from aiohttp import web

from tuningd.core.errors import TuningdError
from tuningd.core.model import TERMINAL_STATES, Job, LocalState
from tuningd.core.overview import FAILURE_WINDOW_S, QUEUE_SHOWN, Overview
from tuningd.http.envelope import json_response
from tuningd.http.jobview import job_view
from tuningd.http.status import full_scopes, job_reasons, scope_name, status_json, waiting_for
from tuningd.service.facade import JobService
from tuningd.vertex import wire

__all__ = ["FRAGMENT_PATH", "PAGE_PATH", "REFRESH_S", "STATUS_PATH", "add_status_routes",
           "duration", "reason_cell", "render_fragment"]

PAGE_PATH = "/"
STATUS_PATH = "/v1/tuningd/status"
FRAGMENT_PATH = "/v1/tuningd/status.html"
# How often the page fetches the fragment again.
REFRESH_S = 2.0

_STYLE = """
:root{color-scheme:light dark;--fg:#1b1f24;--muted:#5c6670;--line:#d5dae0;--bg:#fff;
--head:#f3f5f7;--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e;--accent:#0969da}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--muted:#8d96a0;--line:#30363d;
--bg:#0d1117;--head:#161b22;--ok:#3fb950;--warn:#d29922;--bad:#f85149;--accent:#4493f8}}
*{box-sizing:border-box}
[hidden]{display:none!important}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--fg);
background:var(--bg)}
header{display:flex;gap:1rem;align-items:baseline;padding:.6rem 1.2rem;
border-bottom:1px solid var(--line);background:var(--head)}
header h1{font-size:1.1rem;margin:0}
#state{color:var(--muted);flex:1}
main,#login{padding:.4rem 1.2rem 2rem;max-width:80rem}
h2{font-size:1rem;margin:1.4rem 0 .4rem}
h2 small{font-weight:normal;color:var(--muted)}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.25rem .6rem .25rem 0;border-bottom:1px solid var(--line);
vertical-align:top}
th{color:var(--muted);font-weight:600}
td.num,th.num{text-align:right}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace}
.muted,.empty{color:var(--muted)}
.counts{display:flex;flex-wrap:wrap;gap:.4rem 1.4rem;margin:.8rem 0 .2rem;padding:0}
.counts div{display:flex;flex-direction:column}
.counts dt{color:var(--muted);font-size:.8rem}
.counts dd{margin:0;font-size:1.3rem;font-variant-numeric:tabular-nums}
.state-running,.state-succeeded{color:var(--ok)}
.state-failed,.error{color:var(--bad)}
.state-pending,.state-submitting,.state-cancelling,.state-queued{color:var(--warn)}
.counts dd.zero{color:var(--muted)}
.paused{border:1px solid var(--bad);border-radius:6px;padding:.2rem .8rem .6rem}
meter{width:8rem}
form{display:flex;gap:.6rem;align-items:center;margin-top:1.2rem}
input{font:inherit;padding:.3rem .5rem;min-width:22rem}
button{font:inherit;padding:.3rem .8rem;cursor:pointer}
"""

_SCRIPT = """
"use strict";
const KEY = "tuningd.token", PERIOD_MS = __PERIOD_MS__;
const main = document.getElementById("status"), form = document.getElementById("login"),
  input = document.getElementById("token"), note = document.getElementById("login-note"),
  state = document.getElementById("state"), signout = document.getElementById("signout");
let timer = null, generation = 0;
function later() { clearTimeout(timer); timer = setTimeout(refresh, PERIOD_MS); }
function showLogin(message) {
  clearTimeout(timer); generation += 1;
  main.hidden = true; main.textContent = ""; form.hidden = false; signout.hidden = true;
  note.textContent = message; state.textContent = "sign in"; input.focus();
}
async function refresh() {
  const mine = ++generation, token = sessionStorage.getItem(KEY);
  const headers = {"Accept": "text/html"};
  if (token) headers["Authorization"] = "Bearer " + token;
  let resp;
  try {
    resp = await fetch("__FRAGMENT__", {headers, cache: "no-store", credentials: "omit"});
  } catch (err) {
    if (mine === generation) { state.textContent = "tuningd does not answer; retrying"; later(); }
    return;
  }
  if (mine !== generation) return;  // signed out or in again meanwhile
  if (resp.status === 401) {
    sessionStorage.removeItem(KEY);
    showLogin(token ? "The daemon refused that token." : "This daemon needs its API token.");
    return;
  }
  if (!resp.ok) { state.textContent = "status answered " + resp.status + "; retrying"; later();
    return; }
  const body = await resp.text();
  if (mine !== generation) return;
  main.innerHTML = body;
  main.hidden = false; form.hidden = true; signout.hidden = !token;
  state.textContent = "updated " + new Date().toLocaleTimeString();
  later();
}
form.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const value = input.value.trim();
  input.value = "";
  if (value) { sessionStorage.setItem(KEY, value); note.textContent = ""; refresh(); }
});
signout.addEventListener("click", () => { sessionStorage.removeItem(KEY);
  showLogin("Signed out."); });
refresh();
""".replace("__PERIOD_MS__", str(int(REFRESH_S * 1000))).replace("__FRAGMENT__", FRAGMENT_PATH)


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# The inline script and style are allowed by their hashes; nothing else runs or loads.
PAGE_CSP = (f"default-src 'self'; script-src {_sha256(_SCRIPT)}; style-src {_sha256(_STYLE)}; "
            "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")
# The fragment is inserted into the page, never shown on its own.
FRAGMENT_CSP = "default-src 'none'; frame-ancestors 'none'"

_SHELL = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>tuningd status</title>
<style>{_STYLE}</style>
</head>
<body>
<header><h1>tuningd</h1><span id="state">loading</span>
<button id="signout" type="button" hidden>Sign out</button></header>
<form id="login" hidden autocomplete="off">
<label for="token">API token</label>
<input id="token" name="token" type="password" autocomplete="off" spellcheck="false">
<button type="submit">Sign in</button>
<span id="login-note" class="muted"></span>
</form>
<main id="status" aria-live="polite"></main>
<script>{_SCRIPT}</script>
</body>
</html>
"""

_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}


def add_status_routes(router: web.UrlDispatcher, service: JobService) -> None:
    """`/` (the page's shell, open: it holds no data), the status JSON and the fragment (both
    behind the API's bearer token, as every other route)."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=_SHELL, content_type="text/html", charset="utf-8",
                            headers={**_HEADERS, "Content-Security-Policy": PAGE_CSP})

    async def status(request: web.Request) -> web.Response:
        return json_response(status_json(await service.overview()))

    async def fragment(request: web.Request) -> web.Response:
        body = render_fragment(await service.overview())
        return web.Response(text=body, content_type="text/html", charset="utf-8",
                            headers={**_HEADERS, "Content-Security-Policy": FRAGMENT_CSP})

    router.add_get(PAGE_PATH, page, allow_head=False)
    router.add_get(STATUS_PATH, status, allow_head=False)
    router.add_get(FRAGMENT_PATH, fragment, allow_head=False)


# --------------------------------------------------------------------------------------------
# The fragment (every value escaped)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def duration(seconds: float) -> str:
    """A short human duration: 42 s, 3 min 05 s, 2 h 10 min, 3 d 4 h."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def _when(unix_s: float | None, now: float, *, empty: str = "never") -> str:
    if unix_s is None:
        return f'<span class="muted">{_e(empty)}</span>'
    stamp = wire.format_timestamp(unix_s)
    delta = now - unix_s
    text = f"{duration(delta)} ago" if delta >= 0 else f"in {duration(-delta)}"
    return f'<time datetime="{_e(stamp)}" title="{_e(stamp)}">{_e(text)}</time>'


def _substate(value: str | None) -> str:
    if not value:
        return '<span class="muted">-</span>'
    short = value.removeprefix("TUNING_JOB_STATE_").replace("_", " ").lower()
    return f'<span title="{_e(value)}">{_e(short)}</span>'


def _job_cell(job: Job) -> str:
    name = job.display_name or "(no display name)"
    return (f'{_e(name)}<br><code title="{_e(job.id)}">{_e(job.id[:8])}</code> '
            f'<span class="muted">{_e(job.project)}/{_e(job.location)}</span>')


def reason_cell(job: Job, reasons: Mapping[str, Any], now: float,
                paused: Collection[tuple[str, str]] = (), waits: Sequence[str] = ()) -> str:
    """Why the job waits or was retried: `reasons` (the job view's lastError and
    nextAttemptTime, see status.job_reasons), a paused place, full limits (`waits`), a cancel
    under way."""
    parts: list[str] = []
    if waits:
        parts.append("waits for a free slot: " + ", ".join(_e(w) for w in waits))
    err = reasons.get("lastError")
    if isinstance(err, Mapping):
        status = err.get("status") or err.get("code") or "error"
        when = _parsed(err.get("time"))
        parts.append(f'<span class="error">{_e(status)}: {_e(err.get("message", ""))}</span>'
                     + ("" if when is None else f" ({_when(when, now)})"))
    next_at = _parsed(reasons.get("nextAttemptTime"))
    if next_at is not None:
        parts.append(f"next attempt {_when(next_at, now)}")
    if job.state is LocalState.QUEUED and (job.project, job.location) in paused:
        parts.append('<span class="error">creates to this place are paused</span>')
    if job.cancel_requested and job.state not in TERMINAL_STATES:
        parts.append("cancel requested")
    return "<br>".join(parts) or '<span class="muted">-</span>'


def _parsed(value: object) -> float | None:
    """Unix seconds of an RFC 3339 value (None for anything else)."""
    if not isinstance(value, str):
        return None
    try:
        return wire.parse_timestamp(value)
    except TuningdError:
        return None


def _table(headers: Iterable[str], rows: list[str], empty: str, table_id: str) -> str:
    if not rows:
        return f'<p class="empty" id="{table_id}">{_e(empty)}</p>'
    # A heading starting with "#" heads a column of numbers (right-aligned).
    head = "".join(f'<th class="num">{_e(h[1:])}</th>' if h.startswith("#")
                   else f"<th>{_e(h)}</th>" for h in headers)
    return (f'<table id="{table_id}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _summary(ov: Overview) -> str:
    counts = "".join(
        f"<div><dt>{_e(state.value)}</dt><dd class=\"state-{_e(state.value)}"
        f"{' zero' if not ov.counts.get(state, 0) else ''}\">{ov.counts.get(state, 0)}</dd></div>"
        for state in LocalState)
    oldest = ("-" if ov.oldest_queued_at is None
              else f"waiting {_e(duration(ov.at - ov.oldest_queued_at))}")
    return (f'<section id="summary"><p class="muted">{_e(ov.role.value)} instance, tuningd '
            f'{_e(ov.version)}, as of <time datetime="{_e(wire.format_timestamp(ov.at))}">'
            f"{_e(wire.format_timestamp(ov.at))}</time></p>"
            f'<dl class="counts">{counts}</dl>'
            f"<p>Queue depth <b>{ov.queue_depth}</b>; oldest queued job: {oldest}. "
            f"Last successful poll: {_when(ov.last_poll_at, ov.at)}.</p></section>")


def _paused(ov: Overview) -> str:
    if not ov.paused:
        return ('<section id="breaker"><h2>Creates</h2><p class="empty">No place has its '
                "creates paused.</p></section>")
    rows = [f"<tr><td>{_e(p.project)}/{_e(p.location)}</td><td>{_e(p.pause.status)}</td>"
            f'<td class="error">{_e(p.pause.message)}</td>'
            f"<td>{_when(p.pause.since, ov.at)}</td><td>{_when(p.pause.probe_at, ov.at)}"
            f"{' (probing)' if p.pause.probing else ''}</td></tr>" for p in ov.paused]
    return ('<section id="breaker" class="paused"><h2>Creates paused '
            "<small>after a project-wide error; one probe create at the next probe</small></h2>"
            + _table(("Place", "Status", "Message", "Since", "Next probe"), rows, "",
                     "paused-table") + "</section>")


def _limits(ov: Overview) -> str:
    rows = []
    for use in ov.limits:
        lowered = ""
        if use.configured != use.limit:
            configured = "unlimited" if use.configured is None else str(use.configured)
            lowered = f' <span class="muted">(lowered from {_e(configured)} after 429s)</span>'
        rows.append(f"<tr><td>{_e(scope_name(use.scope))}</td>"
                    f'<td class="num">{use.active} / {use.limit}</td>'
                    f'<td><meter min="0" max="{use.limit}" value="{min(use.active, use.limit)}">'
                    f"</meter>{lowered}</td></tr>")
    return ('<section id="limits"><h2>Limits <small>active jobs per scope</small></h2>'
            + _table(("Scope", "#Active / limit", ""), rows, "No limits known to this instance.",
                     "limits-table") + "</section>")


def _active(ov: Overview) -> str:
    rows = [f'<tr class="job" data-job-id="{_e(a.job.id)}"><td>{_job_cell(a.job)}</td>'
            f'<td class="state-{_e(a.job.state.value)}">{_e(a.job.state.value)}</td>'
            f"<td>{_substate(a.job.remote_substate)}</td><td>{_e(a.job.base_model)}</td>"
            f'<td class="num">{_e(duration(a.elapsed_s))}</td>'
            f"<td>{reason_cell(a.job, job_reasons(a.job), ov.at)}</td></tr>" for a in ov.active]
    return (f'<section id="active"><h2>Active <small>{len(ov.active)} submitting, pending, '
            "running or cancelling</small></h2>"
            + _table(("Job", "State", "Sub-state", "Base model", "#Elapsed", "Reason"), rows,
                     "No active job.", "active-table") + "</section>")


def _queue(ov: Overview) -> str:
    places = {(p.project, p.location) for p in ov.paused}
    full = full_scopes(ov)
    rows = []
    for q in ov.queued:
        reason = reason_cell(q.job, job_reasons(q.job), ov.at, places, waiting_for(q.job, full))
        rows.append(f'<tr class="job" data-job-id="{_e(q.job.id)}">'
                    f'<td class="num">{q.position}</td><td>{_job_cell(q.job)}</td>'
                    f'<td class="num">{q.job.priority}</td><td>{_e(q.job.base_model)}</td>'
                    f'<td class="num">{_e(duration(ov.at - q.job.created_at))}</td>'
                    f"<td>{reason}</td></tr>")
    shown = (f"first {len(ov.queued)} of {ov.queue_depth}" if ov.queue_depth > len(ov.queued)
             else f"{ov.queue_depth} queued")
    return (f'<section id="queue"><h2>Queue <small>{_e(shown)}, in submission order (at most '
            f"{QUEUE_SHOWN} shown)</small></h2>"
            + _table(("#Position", "Job", "#Priority", "Base model", "#Waiting", "Reason"),
                     rows, "The queue is empty.", "queue-table") + "</section>")


def _failures(ov: Overview) -> str:
    rows = []
    for job in ov.recent_failures:
        error = job_view(job).get("error") or {}
        rows.append(f'<tr class="job" data-job-id="{_e(job.id)}">'
                    f"<td>{_when(job.ended_at, ov.at)}</td><td>{_job_cell(job)}</td>"
                    f"<td>{_e(error.get('code', ''))}</td>"
                    f'<td class="error">{_e(error.get("message", ""))}</td></tr>')
    hours = int(FAILURE_WINDOW_S // 3600)
    return (f'<section id="failures"><h2>Recent failures <small>last {hours} h, newest first'
            "</small></h2>"
            + _table(("Ended", "Job", "Code", "Error"), rows, f"No job failed in the last "
                     f"{hours} h.", "failures-table") + "</section>")


def render_fragment(ov: Overview) -> str:
    """The status as an HTML fragment for the page to insert (every value escaped)."""
    return "".join((_summary(ov), _paused(ov), _active(ov), _queue(ov), _limits(ov),
                    _failures(ov)))
