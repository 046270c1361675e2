"""The live client commands against a real daemon and emulator: submit -q/--wait, wait's exit
codes, id prefixes, list without a project and across projects, and watch piped and on a
pseudo-terminal."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import re
import signal
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    EXAMPLES,
    REPO,
    DaemonProc,
    EmulatorProc,
    Processes,
    http,
    job_body,
    ok_json,
    run_cli,
    tuningd_argv,
    wait_until,
)

from tests.integration.store_jobs import insert_job, make_job
from tuningd.adapters.sqlite.store import Store
from tuningd.core.model import LocalState

pytestmark = pytest.mark.acceptance

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
SEEDED = ("abcd0001-0000-4000-8000-000000000001", "abcd0002-0000-4000-8000-000000000002")
GOOD_LINES = (EXAMPLES / "train-sample.jsonl").read_text().splitlines()[:4]
# Vertex refuses creates in this project (API disabled): its jobs stay queued until cancelled.
HOLD = "hold-proj"


@dataclass
class World:
    """One emulator that fails jobs whose dataset is bad, and one daemon in front of it."""

    emulator: EmulatorProc
    daemon: DaemonProc
    files: Path

    def env(self, **extra: str) -> dict[str, str]:
        """The CLI's environment: this daemon, and no project unless given."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("TUNINGD_", "GOOGLE_CLOUD_"))}
        return {**env, "TUNINGD_URL": self.daemon.url, **extra}

    def cli(self, *args: str, timeout_s: float = 60.0,
            **env: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, env=self.env(**env), timeout_s=timeout_s)

    def job_file(self, name: str, *, dataset: str = "train.jsonl") -> str:
        path = self.files / f"{name}.json"
        path.write_text(json.dumps(job_body(name, supervisedTuningSpec={
            "trainingDatasetUri": f"gs://acc-bucket/{dataset}"})))
        return str(path)

    def submit(self, project: str, name: str, *extra: str, dataset: str = "train.jsonl") -> str:
        """A job queued with `submit -q`; its id."""
        done = self.cli("submit", self.job_file(name, dataset=dataset), "--project", project,
                        "-q", *extra)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()


async def _seed(db: Path) -> None:
    # Ended a minute ago: retention (90 days) leaves them be.
    at = time.time() - 60
    async with await Store.open(db) as store:
        for n, job_id in enumerate(SEEDED):
            await insert_job(store, make_job(n, id=job_id, project="seed-proj",
                                             state=LocalState.SUCCEEDED, created_at=at + n,
                                             updated_at=at + n, ended_at=at + n))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Emulated jobs of about 3 s read their dataset under a local GCS root (bad.jsonl fails
    them), creates in HOLD are refused; the daemon's store starts with two ended jobs whose ids
    share a prefix."""
    tmp = tmp_path_factory.mktemp("cli-live")
    bucket = tmp / "gcs" / "acc-bucket"
    bucket.mkdir(parents=True)
    (bucket / "train.jsonl").write_text("\n".join(GOOD_LINES) + "\n")
    (bucket / "bad.jsonl").write_text("{oops\n")
    asyncio.run(_seed(tmp / "tuningd.db"))
    procs = Processes(tmp)
    try:
        emulator = procs.emulator(job_seconds=3.0, pending_seconds=0.3, max_concurrent=8,
                                  extra=["--gcs-root", str(tmp / "gcs"),
                                         "--error-rule", f"create:{HOLD}:403:1:SERVICE_DISABLED"])
        daemon = procs.daemon(emulator.url, {"limits": {"max_active": 8}})
        yield World(emulator, daemon, tmp)
    finally:
        procs.close()


class Output:
    """What a child process writes to one pipe or terminal, collected by a thread."""

    def __init__(self, read: Any) -> None:
        self._read = read
        self._chunks: list[bytes] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        while True:
            try:
                chunk = self._read()
            except OSError:  # a terminal's master reads EIO once the child has gone
                return
            if not chunk:
                return
            with self._lock:
                self._chunks.append(chunk)

    def text(self) -> str:
        with self._lock:
            return b"".join(self._chunks).decode("utf-8", "replace")

    def plain(self) -> str:
        """The text without terminal control sequences (colours, cursor moves)."""
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", self.text())

    def until(self, pattern: str, timeout_s: float = 60.0) -> re.Match[str]:
        """The first match of a regular expression in the plain output, once it is there."""
        match: re.Match[str] = wait_until(lambda: re.search(pattern, self.plain(), re.S),
                                          timeout_s, message=lambda: f"{pattern!r} in:\n"
                                          f"{self.plain()[-3000:]}")
        return match

    def close(self) -> None:
        self._thread.join(timeout=10)


def _interrupt(proc: subprocess.Popen[bytes]) -> int:
    """Ctrl-C as a terminal sends it; the exit code."""
    proc.send_signal(signal.SIGINT)
    return proc.wait(timeout=20)


# --------------------------------------------------------------------------------------------
# submit and wait


def test_submit_quiet_prints_only_the_id_and_wait_exits_by_outcome(world: World) -> None:
    """submit -q prints the job id alone; wait exits 6 when --max-wait passes first, then 0 for
    a success, 4 for a failure, 5 for a cancellation (failed before cancelled when several);
    wait -q prints nothing and a prefix names a job as well as its id."""
    done = world.cli("submit", world.job_file("good"), "--project", "wait-proj", "-q")
    assert done.returncode == 0 and UUID.fullmatch(done.stdout.rstrip("\n")), done
    assert done.stdout.count("\n") == 1 and done.stderr == ""
    good = done.stdout.strip()
    bad = world.submit("wait-proj", "bad", dataset="bad.jsonl")
    held = world.submit(HOLD, "held")

    assert world.cli("wait", held, "--max-wait", "0.3", "-q").returncode == 6
    assert world.cli("cancel", held[:8]).returncode == 0
    waited = world.cli("wait", good[:8], "--interval", "0.2")
    assert waited.returncode == 0, waited
    assert re.search(rf"{good[:8]}\s+.*succeeded", waited.stdout), waited.stdout
    quiet = world.cli("wait", bad, "-q", "--interval", "0.2")
    assert (quiet.returncode, quiet.stdout) == (4, "")
    assert world.cli("wait", held[:6], "-q").returncode == 5
    assert world.cli("wait", good, held, "-q").returncode == 5
    assert world.cli("wait", good, bad, held, "-q").returncode == 4


def test_submit_wait_follows_the_job_to_its_end(world: World) -> None:
    """submit --wait prints the queued job, then each change until it ends, and exits by the
    outcome; with -q it prints the id alone and still exits by the outcome."""
    done = world.cli("submit", world.job_file("followed"), "--project", "follow-proj", "--wait",
                     "--interval", "0.2")
    assert done.returncode == 0, done
    lines = done.stdout.splitlines()
    assert lines[0].split()[:2] == ["ID", "STATE"] and lines[1].split()[1] == "queued"
    short = lines[1].split()[0]
    changes = [line.split("  ", 1)[1] for line in lines[2:]]
    assert changes and all(c.startswith(short) for c in changes), lines
    assert "-> running" in done.stdout and "-> succeeded  followed" in changes[-1], lines
    failed = world.cli("submit", world.job_file("fails", dataset="bad.jsonl"), "--project",
                       "follow-proj", "--wait", "-q", "--interval", "0.2")
    assert failed.returncode == 4 and UUID.fullmatch(failed.stdout.strip()), failed


# --------------------------------------------------------------------------------------------
# id prefixes and the project default


def test_id_prefixes_unique_ambiguous_and_unknown(world: World) -> None:
    """A unique prefix names a job in show, cancel, wait and watch; an ambiguous one is refused
    (exit 1, 400 INVALID_ARGUMENT naming the jobs); an unknown one is 404 NOT_FOUND."""
    shown = world.cli("show", "abcd0001")
    assert shown.returncode == 0, shown
    assert f"projects/seed-proj/locations/us-central1/tuningJobs/{SEEDED[0]}" in shown.stdout
    for command in ("show", "cancel", "wait", "watch"):
        ambiguous = world.cli(command, "abcd")
        assert ambiguous.returncode == 1, (command, ambiguous)
        assert "400 INVALID_ARGUMENT" in ambiguous.stderr and "ambiguous" in ambiguous.stderr
        assert SEEDED[0] in ambiguous.stderr and SEEDED[1] in ambiguous.stderr
    for command in ("show", "wait"):
        unknown = world.cli(command, "ffff0000")
        assert unknown.returncode == 1 and "404 NOT_FOUND" in unknown.stderr, (command, unknown)
    assert world.cli("wait", "abcd0002", "-q").returncode == 0
    watched = world.cli("watch", "abcd0002")
    assert watched.returncode == 0 and "abcd0002  succeeded" in watched.stdout, watched
    queued = world.submit(HOLD, "to-cancel")
    cancelled = world.cli("cancel", queued[:10])
    assert cancelled.returncode == 0, cancelled
    assert cancelled.stdout.strip() == (f"Cancellation requested for projects/{HOLD}/"
                                        f"locations/us-central1/tuningJobs/{queued}.")


def _ids(listing: str) -> set[str]:
    return {line.split()[0] for line in listing.splitlines()[1:]}


def test_list_needs_no_project_and_spans_projects(world: World) -> None:
    """list without any project set lists every project's jobs (with their place); a project
    from $TUNINGD_PROJECT (or --project) lists that one; --all-projects lists every one even
    when a project is set, and excludes --project."""
    one = world.submit("list-one", "in-one")
    two = world.submit("list-two", "in-two")
    everything = world.cli("list")
    assert everything.returncode == 0, everything
    assert {one[:8], two[:8], SEEDED[0][:8]} <= _ids(everything.stdout)
    assert "PROJECT/LOCATION" in everything.stdout
    assert re.search(rf"{one[:8]}.*list-one/us-central1", everything.stdout)
    only_one = world.cli("list", TUNINGD_PROJECT="list-one")
    assert _ids(only_one.stdout) == {one[:8]} and "PROJECT/LOCATION" not in only_one.stdout
    assert _ids(world.cli("list", "--project", "list-two").stdout) == {two[:8]}
    across = world.cli("list", "--all-projects", "--json", GOOGLE_CLOUD_PROJECT="list-one")
    names = {j["name"] for j in json.loads(across.stdout)}
    assert {f"projects/list-one/locations/us-central1/tuningJobs/{one}",
            f"projects/list-two/locations/us-central1/tuningJobs/{two}"} <= names
    assert world.cli("list", "--all-projects", "--project", "list-one").returncode == 2


# --------------------------------------------------------------------------------------------
# watch


def _watch(world: World, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(tuningd_argv("watch", "--interval", "0.2", *args), cwd=str(REPO),
                            env=world.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)


def test_watch_piped_prints_a_line_per_change(world: World) -> None:
    """watch into a pipe prints plain lines: the job first seen, then each change, running
    before succeeded; Ctrl-C ends it with exit 0 and no traceback."""
    proc = _watch(world, "--project", "watch-proj")
    assert proc.stdout is not None
    out = Output(lambda: os.read(proc.stdout.fileno(), 65536))  # type: ignore[union-attr]
    try:
        job = world.submit("watch-proj", "watched")
        short = job[:8]
        out.until(rf"Z  {short}  \S+ -> succeeded  watched\n")
        assert _interrupt(proc) == 0
    finally:
        proc.kill()
        proc.wait()
    out.close()
    lines = [line for line in out.text().splitlines() if f"  {short}  " in line]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ  \S+  .+", line) for line in lines)
    states = [line.split("  ")[2].split(" -> ")[-1] for line in lines]
    running = next(i for i, s in enumerate(states) if s.startswith("running"))
    assert states[-1] == "succeeded" and running < len(states) - 1, lines
    assert "\x1b" not in out.text() and "Traceback" not in out.text()


def test_watch_on_a_terminal_redraws_the_table_in_place(world: World) -> None:
    """watch on a (pseudo-)terminal draws one table and redraws it in place (cursor moves, no
    lines of change), shows the job running then succeeded, and on Ctrl-C exits 0 with the
    cursor shown again."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 200, 0, 0))
    env = {**world.env(TERM="xterm-256color")}
    for name in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS",
                 "LINES"):
        env.pop(name, None)
    proc = subprocess.Popen(tuningd_argv("watch", "--interval", "0.2", "--project", "pty-proj"),
                            cwd=str(REPO), env=env, stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True)
    os.close(slave)
    out = Output(lambda: os.read(master, 65536))
    try:
        out.until("tuningd watch .*no active jobs")
        job = world.submit("pty-proj", "on-a-tty")
        short = job[:8]
        out.until(rf"{short}\S*\s+running")
        out.until(rf"{short}\S*\s+succeeded")
        before = len(out.text())
        assert _interrupt(proc) == 0
    finally:
        proc.kill()
        proc.wait()
        out.close()
        os.close(master)
    text = out.text()
    assert "\x1b[?25l" in text and "\x1b[?25h" in text[before:]  # cursor hidden, then shown
    assert re.search(r"\x1b\[\d*A", text) and "\x1b[2K" in text  # up, and erase: in place
    assert text.count("tuningd watch") > 3  # redrawn at every look...
    assert " -> " not in text and "Traceback" not in text  # ...not appended as lines


def test_wait_rides_out_a_daemon_restart(procs: Processes) -> None:
    """wait keeps polling while the daemon is down and restarts, and still exits by the job's
    outcome (the emulator's clock is manual: the job ends only when the test moves it)."""
    emulator = procs.emulator(job_seconds=5.0, pending_seconds=1.0, extra=["--manual-clock"])
    daemon = procs.daemon(emulator.url)
    job = daemon.submit(job_body("through-a-restart"))["name"].rsplit("/", 1)[-1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNINGD_")}
    proc = subprocess.Popen(tuningd_argv("wait", job, "--interval", "0.2", "--server",
                                         daemon.url), cwd=str(REPO), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    out = Output(lambda: os.read(proc.stdout.fileno(), 65536))  # type: ignore[union-attr]
    try:
        out.until(rf"Z  {job[:8]}  ")  # its first look is done
        daemon.kill()
        daemon.start()
        assert proc.poll() is None, out.text()
        wait_until(lambda: "remoteState" in daemon.job(job)["tuningd"], 30,
                   message="the job to reach Vertex")
        ok_json(http("POST", emulator.url + "/emulator/advance", body={"seconds": 30}))
        assert proc.wait(timeout=60) == 0, out.text()
    finally:
        proc.kill()
        proc.wait()
        out.close()
    assert "-> succeeded" in out.text() and "Traceback" not in out.text()


def test_status_reads_the_daemons_status(world: World) -> None:
    """`tuningd status` reads the daemon's GET /v1/tuningd/status: its role, jobs by state, the
    queue, every limit and the last good poll as text, the agreed document with --json."""
    world.submit("status-proj", "for-status")
    done = world.cli("status")
    assert done.returncode == 0, done
    lines = done.stdout.splitlines()
    assert re.fullmatch(r"tuningd\s+\S+, single instance", lines[0]), lines
    counts = lines[1].split()
    assert counts[:2] == ["jobs", "queued"] and counts[2].isdigit(), lines
    assert lines[2].startswith("queue ") and lines[3].startswith("last good poll ")
    assert any(line.split()[:1] == ["global"] for line in lines), lines
    as_json = json.loads(world.cli("status", "--json").stdout)
    assert {"version", "role", "counts", "queue", "limits", "pausedCreates",
            "lastSuccessfulPollTime"} <= set(as_json)

