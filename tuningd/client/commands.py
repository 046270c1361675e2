"""The one-shot client commands: submit, list, show, cancel and status."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from tuningd.client import live
from tuningd.client.connection import (
    EVERYWHERE,
    EXIT_OK,
    NAME_RE,
    Connection,
    collection,
    connection_from_args,
    job_path,
    list_filter,
    list_scope,
    location_default,
    read_job_file,
    require_project,
)
from tuningd.client.details import format_job_details
from tuningd.client.jobs import place, rows
from tuningd.client.render import job_table, show
from tuningd.client.status import STATUS_PATH, status_view


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def cmd_submit(args: argparse.Namespace) -> int:
    """POST a TuningJob file; prints the queued job (-q: its id only; --wait: then waits)."""
    project, location = require_project(args), location_default(args)
    body = read_job_file(args.file)
    query: dict[str, str] = {}
    if args.priority is not None:
        query["priority"] = str(args.priority)
    if args.request_id is not None:
        query["requestId"] = args.request_id
    conn = connection_from_args(args)
    job = conn.call("POST", collection(project, location, args.api_version), query=query,
                    body=body)
    if args.quiet:
        print(str(job.get("name", "")).rsplit("/", 1)[-1], flush=True)
    elif args.json:
        print_json(job)
    else:
        show(job_table(rows([job], time.time())))
    if not args.wait:
        return EXIT_OK
    return live.wait_for(conn, [job], interval_s=args.interval, max_wait_s=args.max_wait,
                         quiet=args.quiet or args.json)


def fetch_list(conn: Connection, path: str, location: str | None,
               filter_text: str) -> list[dict[str, Any]]:
    """Every job of a list route matching the filter (and in `location` when given)."""
    jobs = conn.list_all(path, {"filter": filter_text} if filter_text else {})
    if location is not None:
        jobs = [j for j in jobs if place(j).endswith("/" + location)]
    return jobs


def cmd_list(args: argparse.Namespace) -> int:
    """List the jobs of the project (or of every project), newest first, every page."""
    path, location = list_scope(args)
    jobs = fetch_list(connection_from_args(args), path, location, list_filter(args))
    if args.json:
        print_json(jobs)
    elif jobs:
        show(job_table(rows(jobs, time.time()), with_place=path == EVERYWHERE))
    else:
        print("No tuning jobs.")
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    """Show one job with its reasons and history (an id, a unique id prefix or a name)."""
    job = connection_from_args(args).call("GET", job_path(args.job))
    if args.json:
        print_json(job)
    else:
        print(format_job_details(job))
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel one job (an id or unique prefix is resolved to its name first)."""
    conn = connection_from_args(args)
    name = args.job
    if not NAME_RE.fullmatch(args.job):
        # The Vertex cancel route needs project, location and the exact id; the lookup knows.
        name = str(conn.call("GET", job_path(args.job))["name"])
    conn.call("POST", job_path(name) + ":cancel", body={})
    print(f"Cancellation requested for {name}.")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    """The daemon at a glance: jobs by state, queue, limits, paused creates, last good poll."""
    status = connection_from_args(args).call("GET", STATUS_PATH)
    if args.json:
        print_json(status)
    else:
        show(status_view(status))
    return EXIT_OK
