"""tuningd's own job routes beside Vertex's: a job by id or unique id prefix, and one list of the
jobs of every project and location the daemon holds."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from tuningd.adapters.pushdown import filter_pushdown
from tuningd.core.errors import InvalidArgument, NotFound
from tuningd.core.model import Job
from tuningd.http.envelope import json_response
from tuningd.http.jobview import job_view, render_view
from tuningd.service.facade import JobService
from tuningd.vertex import wire

__all__ = ["CANDIDATES_NAMED", "LIST_SCOPE", "MIN_PREFIX_CHARS", "resolve_job", "serve_list"]

# A shorter prefix is too likely to match many jobs to be worth a lookup (and a typo of a
# short id should read "not found", not "ambiguous").
MIN_PREFIX_CHARS = 4
# An ambiguous prefix's message names this many of the jobs it matches.
CANDIDATES_NAMED = 5
# The page tokens of the cross-project list are bound to it (a Vertex list's token is refused).
LIST_SCOPE = "tuningd/jobs"

InScope = Callable[[Job], bool]


async def resolve_job(engine: JobService, ident: str, in_scope: InScope) -> Job:
    """The job whose id is `ident`, else the one job whose id starts with it.

    Unknown (or only of projects out of scope): NotFound. Several: InvalidArgument naming
    them, as Google answers a request it cannot act on as given."""
    job = await engine.get(ident)
    if job is not None:
        return job
    if len(ident) >= MIN_PREFIX_CHARS:
        ids = await engine.ids_with_prefix(ident, CANDIDATES_NAMED + 1)
        found = [j for j in [await engine.get(i) for i in ids] if j is not None and in_scope(j)]
        if len(found) == 1:
            return found[0]
        if found:
            named = ", ".join(j.id for j in found[:CANDIDATES_NAMED])
            more = " and more" if len(ids) > CANDIDATES_NAMED else ""
            raise InvalidArgument(
                f"The job id prefix {ident} is ambiguous: it matches {named}{more}. "
                "Give more of the id.")
    hint = "" if len(ident) >= MIN_PREFIX_CHARS else (
        f" (an id prefix needs at least {MIN_PREFIX_CHARS} characters)")
    raise NotFound(f"tuningd job {ident} does not exist{hint}.")


async def serve_list(request: web.Request, engine: JobService, in_scope: InScope) -> web.Response:
    """GET /v1/tuningd/jobs?filter=&pageSize=&pageToken=: the jobs of every project and
    location, newest first, filtered and paged as Vertex's list is."""
    filter_text = request.query.get("filter", "")
    list_filter = wire.parse_list_filter(filter_text)
    matches = list_filter.matches
    page_size = wire.parse_page_size(_query(request, "pageSize", "page_size"))
    token = _query(request, "pageToken", "page_token")
    after_key = wire.decode_page_token(token, filter_text, LIST_SCOPE) if token else None

    def predicate(job: Job) -> bool:
        return in_scope(job) and matches(_vertex_part(job_view(job)))

    pushdown = filter_pushdown(list_filter)
    page = await engine.list_jobs(None, None, predicate=predicate, page_size=page_size,
                                  after_key=after_key, states=pushdown.states,
                                  labels=pushdown.labels)
    body: dict[str, Any] = {}
    if page.jobs:
        enum_as_int = wire.wants_int_enums(request.query)
        body["tuningJobs"] = [
            render_view(job_view(job, queue_position=engine.queue_position(job),
                                 pause=engine.pause_for(job)), enum_as_int=enum_as_int)
            for job in page.jobs
        ]
    if page.next_key is not None:
        body["nextPageToken"] = wire.encode_page_token(page.next_key, filter_text, LIST_SCOPE)
    return json_response(body)


def _vertex_part(view: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in view.items() if k != "tuningd"}


def _query(request: web.Request, camel: str, snake: str) -> str | None:
    value = request.query.get(camel)
    return value if value is not None else request.query.get(snake)
