"""The client CLI commands against a real aiohttp server on loopback with a fake Engine."""

from __future__ import annotations

import asyncio
import io
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestServer
from test_api import VALID_JOB, FakeEngine

from tuningd import client
from tuningd.client.details import format_job_details
from tuningd.core.model import LocalState
from tuningd.http.api import make_api_app

TOKEN = "cli-test-token"


class Server:
    """A running API server and the fake engine behind it."""

    def __init__(self, server: TestServer, engine: FakeEngine) -> None:
        self.server = server
        self.engine = engine

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    """The API without a token on 127.0.0.1, port chosen by the OS."""
    engine = FakeEngine()
    test_server = TestServer(make_api_app(engine), host="127.0.0.1")
    await test_server.start_server()
    yield Server(test_server, engine)
    await test_server.close()


@pytest.fixture
async def secured() -> AsyncIterator[Server]:
    """The API with a bearer token required."""
    engine = FakeEngine()
    test_server = TestServer(make_api_app(engine, token=TOKEN), host="127.0.0.1")
    await test_server.start_server()
    yield Server(test_server, engine)
    await test_server.close()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Isolate the tests from the caller's environment and keep server logs off stdout."""
    for name in ("TUNINGD_URL", "TUNINGD_TOKEN_FILE", "GOOGLE_CLOUD_PROJECT",
                 "GOOGLE_CLOUD_LOCATION", "TUNINGD_PROJECT", "TUNINGD_LOCATION"):
        monkeypatch.delenv(name, raising=False)
    with structlog.testing.capture_logs():
        yield


async def run(*argv: str) -> int:
    """Run the client in a worker thread: it blocks on urllib while the loop serves it."""
    return await asyncio.to_thread(client.main, list(argv))


@pytest.fixture
def job_file(tmp_path: Path) -> Path:
    """A valid TuningJob create body on disk."""
    path = tmp_path / "job.json"
    path.write_text(json.dumps(VALID_JOB))
    return path


# --------------------------------------------------------------------------------------------
# submit


async def test_submit_prints_table(server: Server, job_file: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """submit queues the file's job and prints a table row with exit code 0."""
    code = await run("submit", str(job_file), "--server", server.url, "--project", "proj-a",
                     "--priority", "4", "--request-id", "req-1")
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0].split() == ["ID", "STATE", "SUB-STATE", "PRIORITY", "QUEUE", "AGE", "DISPLAY",
                              "NAME", "REASON"]
    assert out[1].split()[:5] == ["job-0001", "queued", "-", "4", "1"]
    assert out[1].split()[6] == "sentiment-v3"
    submit = server.engine.submits[0]
    assert (submit["project"], submit["location"]) == ("proj-a", "us-central1")
    assert (submit["priority"], submit["request_id"]) == (4, "req-1")


async def test_submit_json_from_stdin_with_env(server: Server, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """submit - reads stdin, takes server and project from the environment and prints JSON."""
    monkeypatch.setenv("TUNINGD_URL", server.url)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "proj-env")
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(VALID_JOB)))
    code = await run("submit", "-", "--location", "europe-west4", "--json")
    assert code == 0
    job = json.loads(capsys.readouterr().out)
    assert job["name"] == "projects/proj-env/locations/europe-west4/tuningJobs/job-0001"
    assert job["tuningd"]["state"] == "queued"


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", None], ids=["bad-json", "array",
                                                                        "missing"])
async def test_submit_bad_file_is_exit_2(server: Server, tmp_path: Path, content: str | None,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """An unreadable, non-JSON or non-object file exits 2 and sends nothing."""
    path = tmp_path / "job.json"
    if content is not None:
        path.write_text(content)
    code = await run("submit", str(path), "--server", server.url, "--project", "p")
    assert code == 2
    assert "tuningd: error:" in capsys.readouterr().err
    assert server.engine.submits == []


async def test_submit_without_project_is_exit_2(server: Server, job_file: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Without --project or $GOOGLE_CLOUD_PROJECT submit is a usage error."""
    assert await run("submit", str(job_file), "--server", server.url) == 2
    assert "GOOGLE_CLOUD_PROJECT" in capsys.readouterr().err


async def test_submit_rejected_by_server_is_exit_1(server: Server, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A 400 from the server exits 1 and prints Google's status and message on stderr."""
    path = tmp_path / "job.json"
    path.write_text(json.dumps({**VALID_JOB, "tunedModelDisplayName": "x" * 129}))
    code = await run("submit", str(path), "--server", server.url, "--project", "proj-a")
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.startswith("tuningd: error: 400 INVALID_ARGUMENT: ")
    assert captured.out == ""


async def test_bad_request_id_is_exit_1(server: Server, job_file: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The server's requestId check reaches the user as exit 1 with the message."""
    code = await run("submit", str(job_file), "--server", server.url, "--project", "proj-a",
                     "--request-id", "not valid!")
    assert code == 1
    assert "request_id" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# list


async def test_list_follows_all_pages(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    """list walks every page (more jobs than the maximum page size) and prints one row each."""
    ids = [server.engine.add().id for _ in range(client.LIST_PAGE_SIZE + 5)]
    code = await run("list", "--server", server.url, "--project", "proj-a", "--json")
    assert code == 0
    jobs = json.loads(capsys.readouterr().out)
    assert [j["name"].rsplit("/", 1)[-1] for j in jobs] == list(reversed(ids))
    code = await run("list", "--server", server.url, "--project", "proj-a")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + len(ids)


async def test_list_state_filter(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    """--state accepts local names and JOB_STATE_* names."""
    server.engine.add()
    done = server.engine.add(state=LocalState.SUCCEEDED, remote_state="JOB_STATE_SUCCEEDED")
    for state in ("succeeded", "JOB_STATE_SUCCEEDED"):
        assert await run("list", "--server", server.url, "--project", "proj-a",
                         "--state", state) == 0
        rows = capsys.readouterr().out.splitlines()[1:]
        assert [r.split()[0] for r in rows] == [done.id]
        assert rows[0].split()[1] == "succeeded"


async def test_list_empty_and_bad_filter(server: Server,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """An empty list says so; an unparseable --filter exits 1."""
    assert await run("list", "--server", server.url, "--project", "proj-a") == 0
    assert capsys.readouterr().out.strip() == "No tuning jobs."
    assert await run("list", "--server", server.url, "--project", "proj-a",
                     "--filter", "state==") == 1
    assert "400 INVALID_ARGUMENT" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# show and cancel


async def test_show_by_id_and_by_name(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    """show accepts a bare id or the full name and prints details with the history."""
    job = server.engine.add(project="proj-q", location="asia-east1", priority=3)
    assert await run("show", job.id, "--server", server.url) == 0
    out = capsys.readouterr().out
    assert f"projects/proj-q/locations/asia-east1/tuningJobs/{job.id}" in out
    assert "queued (JOB_STATE_QUEUED)" in out
    assert "priority:" in out and "HISTORY" in out and "submitted" in out
    name = f"projects/proj-q/locations/asia-east1/tuningJobs/{job.id}"
    assert await run("show", name, "--server", server.url, "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["name"] == name
    assert shown["tuningd"]["history"][0]["to"] == "queued"


@pytest.mark.parametrize("ident", ["job-9999",
                                   "projects/proj-a/locations/us-central1/tuningJobs/job-9999"])
async def test_show_unknown_is_exit_1(server: Server, ident: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown job exits 1 with 404 NOT_FOUND on stderr."""
    assert await run("show", ident, "--server", server.url) == 1
    assert "404 NOT_FOUND" in capsys.readouterr().err


async def test_show_malformed_id_is_exit_2(server: Server) -> None:
    """A job reference that is neither an id nor a name is a usage error."""
    assert await run("show", "projects/p/x", "--server", server.url) == 2


@pytest.mark.parametrize("by_name", [False, True], ids=["bare-id", "full-name"])
async def test_cancel(server: Server, by_name: bool, capsys: pytest.CaptureFixture[str]) -> None:
    """cancel by id or name cancels the job; cancelling it again exits 1 FAILED_PRECONDITION."""
    job = server.engine.add(project="proj-c", location="us-east5")
    name = f"projects/proj-c/locations/us-east5/tuningJobs/{job.id}"
    ident = name if by_name else job.id
    assert await run("cancel", ident, "--server", server.url) == 0
    assert capsys.readouterr().out.strip() == f"Cancellation requested for {name}."
    assert server.engine.jobs[job.id].state is LocalState.CANCELLED
    assert await run("cancel", ident, "--server", server.url) == 1
    assert "400 FAILED_PRECONDITION" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Connection and token


async def test_cannot_connect_is_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    """A server that is not listening exits 3."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert await run("list", "--server", f"http://127.0.0.1:{port}", "--project", "p") == 3
    assert "cannot connect" in capsys.readouterr().err


async def test_bad_server_url_is_exit_2() -> None:
    """A --server that is not http(s) is a usage error."""
    assert await run("list", "--server", "ftp://x", "--project", "p") == 2


async def test_token_file(secured: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
    """The token from --token-file or $TUNINGD_TOKEN_FILE is sent; without it the server says
    401 (exit 1); an unreadable token file exits 2; the token is never printed."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    args = ["list", "--server", secured.url, "--project", "proj-a"]
    assert await run(*args) == 1
    assert "401 UNAUTHENTICATED" in capsys.readouterr().err
    assert await run(*args, "--token-file", str(token_file)) == 0
    monkeypatch.setenv("TUNINGD_TOKEN_FILE", str(token_file))
    assert await run(*args) == 0
    assert await run(*args, "--token-file", str(tmp_path / "absent")) == 2
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
async def test_exposed_token_file_is_refused(secured: Server, tmp_path: Path, mode: int,
                                             job_file: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A token file group or others can access exits 2 with the chmod that fixes it, before
    anything is sent, and without printing the token."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(mode)
    args = ["submit", str(job_file), "--server", secured.url, "--project", "proj-a",
            "--token-file", str(token_file)]
    assert await run(*args) == 2
    captured = capsys.readouterr()
    assert f"chmod 600 {token_file}" in captured.err
    assert f"mode {mode:04o}" in captured.err
    assert TOKEN not in captured.out + captured.err
    assert secured.engine.submits == []
    token_file.chmod(0o600)
    assert await run(*args) == 0
    assert len(secured.engine.submits) == 1


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """argparse usage errors (unknown command, missing argument, bad int) exit 2."""
    for argv in (["frobnicate"], ["show"], ["submit", "f.json", "--priority", "high"]):
        with pytest.raises(SystemExit) as exc:
            client.main(argv)
        assert exc.value.code == 2


def test_state_filter_and_job_path() -> None:
    """--state values and job references map to the right filter clause and API path."""
    assert client.state_filter("running") == "state=JOB_STATE_RUNNING"
    assert client.state_filter("JOB_STATE_FAILED") == "state=JOB_STATE_FAILED"
    assert client.state_filter("expired") == "state=JOB_STATE_EXPIRED"
    assert client.job_path("abc") == "/v1/tuningd/jobs/abc"
    assert client.job_path("projects/p/locations/l/tuningJobs/abc") == (
        "/v1/projects/p/locations/l/tuningJobs/abc")
    with pytest.raises(client.UsageError):
        client.state_filter("not a state!")


def _details(**job: Any) -> str:
    return format_job_details(job)


def test_details_of_a_finished_job() -> None:
    """Details show the tuned model, the error and remote state when present."""
    text = _details(name="projects/p/locations/l/tuningJobs/j1", state="JOB_STATE_FAILED",
                    error={"code": 3, "message": "Invalid dataset."},
                    tunedModel={"model": "projects/1/locations/l/models/9@1"},
                    tuningd={"state": "failed", "remoteState": "JOB_STATE_FAILED",
                             "remoteSubstate": "TUNING_JOB_STATE_TUNING"})
    assert "failed (JOB_STATE_FAILED)" in text
    assert "error:" in text and "code 3: Invalid dataset." in text
    assert "JOB_STATE_FAILED / TUNING_JOB_STATE_TUNING" in text
    assert "projects/1/locations/l/models/9@1" in text


def test_details_name_the_tuning_kind_and_its_dataset() -> None:
    """Details of a non-supervised job name its kind and the dataset of its own spec."""
    text = _details(name="projects/p/locations/l/tuningJobs/j2", state="JOB_STATE_QUEUED",
                    baseModel="gemini-2.5-flash",
                    distillationSpec={"promptDatasetUri": "gs://b/prompts.jsonl"})
    assert "tuning kind:" in text and "distillation" in text
    assert "gs://b/prompts.jsonl" in text
    text = _details(name="projects/p/locations/l/tuningJobs/j3", state="JOB_STATE_QUEUED",
                    preferenceOptimizationSpec={"trainingDatasetUri": "gs://b/pref.jsonl"},
                    preTunedModel={"tunedModelName": "projects/p/locations/l/models/7"})
    assert "preferenceOptimization" in text and "gs://b/pref.jsonl" in text
    assert "projects/p/locations/l/models/7" in text


# --------------------------------------------------------------------------------------------
# status (GET /v1/tuningd/status is served by another part of the daemon: a fixture here)


async def test_status_reads_the_status_route(capsys: pytest.CaptureFixture[str]) -> None:
    """`status` asks GET /v1/tuningd/status and prints it as text, or the JSON as it came with
    --json."""
    from aiohttp import web

    document = json.loads((Path(__file__).resolve().parents[1] / "fixtures" /
                           "status.json").read_text())
    async def status(request: web.Request) -> web.Response:
        return web.json_response(document)

    app = web.Application()
    app.router.add_get("/v1/tuningd/status", status)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        url = str(server.make_url("")).rstrip("/")
        assert await run("status", "--server", url) == 0
        out = capsys.readouterr().out
        assert "0.1.0, leader (runs the queue)" in out and "PERMISSION_DENIED" in out
        assert await run("status", "--server", url, "--json") == 0
        assert json.loads(capsys.readouterr().out) == document
    finally:
        await server.close()
