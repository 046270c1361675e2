"""Emulator error rules: targeted Google errors by method, project and location (real HTTP)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from emulator_faults_helpers import (
    COLLECTION,
    PARENT,
    call,
    counts,
    job_body,
    set_faults,
)

from tuningd.emulator import Emulator, EmulatorConfig, ErrorRule, Faults, ManualClock

NUMBER = "123456789012"


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorConfig(seed=2, max_concurrent=10),
                        clock=ManualClock()) as emulator:
        yield emulator


def rule(status: int, **fields: Any) -> dict[str, Any]:
    return {"status": status, **fields}


async def create(http: aiohttp.ClientSession, emu: Emulator) -> str:
    code, job = await call(http, emu, "POST", COLLECTION, job_body())
    assert code == 200
    name: str = job["name"]
    return name


def job_path(name: str) -> str:
    """The job's path under my-proj (the name carries the project number)."""
    return "/v1/" + name.replace(f"projects/{NUMBER}", "projects/my-proj")


async def test_403_default_is_iam_permission_denied_per_method(http: aiohttp.ClientSession,
                                                               emu: Emulator) -> None:
    """403 answers Google's IAM text with the method's permission, on the parent for
    create/list and on the job for get/cancel, with an ErrorInfo IAM_PERMISSION_DENIED."""
    name = await create(http, emu)
    job_id = name.rsplit("/", 1)[1]
    await set_faults(http, emu, error_rules=[rule(403)])
    parent_res = "projects/my-proj/locations/us-central1"
    calls = [("create", "POST", COLLECTION, job_body(), parent_res),
             ("list", "GET", COLLECTION, None, parent_res),
             ("get", "GET", job_path(name), None, f"{parent_res}/tuningJobs/{job_id}"),
             ("cancel", "POST", job_path(name) + ":cancel", {},
              f"{parent_res}/tuningJobs/{job_id}")]
    for method, verb, path, body, resource in calls:
        code, answer = await call(http, emu, verb, path, body)
        error = answer["error"]
        assert (code, error["code"], error["status"]) == (403, 403, "PERMISSION_DENIED")
        assert error["message"] == (
            f"Permission 'aiplatform.tuningJobs.{method}' denied on resource "
            f"'//aiplatform.googleapis.com/{resource}' (or it may not exist).")
        assert error["details"] == [{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "IAM_PERMISSION_DENIED", "domain": "aiplatform.googleapis.com",
            "metadata": {"permission": f"aiplatform.tuningJobs.{method}", "resource": resource}}]
        assert counts(emu, method).get("403") == 1
    assert len(emu.state.jobs) == 1
    assert emu.state.jobs[job_id].cancel_s is None


@pytest.mark.parametrize(("reason", "start", "domain"), [
    ("SERVICE_DISABLED", f"Vertex AI API has not been used in project {NUMBER} before or it is "
     f"disabled. Enable it by visiting https://console.developers.google.com/apis/api/"
     f"aiplatform.googleapis.com/overview?project={NUMBER} then retry.", "googleapis.com"),
    ("BILLING_DISABLED", f"This API method requires billing to be enabled. Please enable "
     f"billing on project #{NUMBER} by visiting https://console.developers.google.com/billing/"
     f"enable?project={NUMBER} then retry.", "googleapis.com"),
    ("CONSUMER_INVALID", "Permission denied on resource project my-proj.", "googleapis.com"),
])
async def test_403_reasons_use_googles_texts(http: aiohttp.ClientSession, emu: Emulator,
                                             reason: str, start: str, domain: str) -> None:
    """A 403 reason switches to Google's message and ErrorInfo for that reason."""
    await set_faults(http, emu, error_rules=[rule(403, method="create", reason=reason)])
    code, answer = await call(http, emu, "POST", COLLECTION, job_body())
    error = answer["error"]
    assert (code, error["status"]) == (403, "PERMISSION_DENIED")
    assert error["message"].startswith(start)
    info = error["details"][0]
    assert (info["reason"], info["domain"]) == (reason, domain)
    assert info["metadata"]["service"] == "aiplatform.googleapis.com"
    assert emu.state.jobs == {}


@pytest.mark.parametrize(("fields", "status", "name", "message"), [
    ({}, 401, "UNAUTHENTICATED", "Request had invalid authentication credentials. Expected "
     "OAuth 2 access token, login cookie or other valid authentication credential. See "
     "https://developers.google.com/identity/sign-in/web/devconsole-project."),
    ({"reason": "CREDENTIALS_MISSING"}, 401, "UNAUTHENTICATED",
     "Request is missing required authentication credential. Expected OAuth 2 access token, "
     "login cookie or other valid authentication credential. See "
     "https://developers.google.com/identity/sign-in/web/devconsole-project."),
    ({}, 400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
    ({"status_name": "FAILED_PRECONDITION"}, 400, "FAILED_PRECONDITION",
     "Precondition check failed."),
    ({}, 404, "NOT_FOUND", "Requested entity was not found."),
    ({}, 409, "ABORTED", "The operation was aborted."),
    ({"status_name": "ALREADY_EXISTS"}, 409, "ALREADY_EXISTS", "Requested entity already exists."),
    ({}, 429, "RESOURCE_EXHAUSTED", None),
    ({}, 500, "INTERNAL", "Internal error encountered."),
    ({}, 502, "UNAVAILABLE", "Bad Gateway"),
    ({}, 503, "UNAVAILABLE", "The service is currently unavailable."),
    ({}, 504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
])
async def test_each_status_answers_in_googles_envelope(
        http: aiohttp.ClientSession, emu: Emulator, fields: dict[str, Any], status: int,
        name: str, message: str | None) -> None:
    """Every allowed status answers with its canonical name and Google's text, and the create
    it refused does not exist."""
    await set_faults(http, emu, error_rules=[rule(status, method="create", **fields)])
    code, answer = await call(http, emu, "POST", COLLECTION, job_body())
    error = answer["error"]
    assert (code, error["code"], error["status"]) == (status, status, name)
    if message is not None:
        assert error["message"] == message
    if status == 401:
        info = error["details"][0]
        assert info["reason"] == fields.get("reason", "ACCESS_TOKEN_EXPIRED")
        assert info["metadata"]["method"].endswith("GenAiTuningService.CreateTuningJob")
    if status == 429:
        assert error["details"][0]["reason"] == "RATE_LIMIT_EXCEEDED"
    assert emu.state.jobs == {}
    assert counts(emu, "create") == {str(status): 1}


async def test_404_on_get_names_the_job(http: aiohttp.ClientSession, emu: Emulator) -> None:
    """A 404 rule on get answers like a missing job, even though the job exists."""
    name = await create(http, emu)
    await set_faults(http, emu, error_rules=[rule(404, method="get")])
    code, answer = await call(http, emu, "GET", job_path(name))
    assert code == 404
    assert answer["error"]["message"] == f"The TuningJob does not exist: {name}."


async def test_method_project_and_location_must_all_match(http: aiohttp.ClientSession,
                                                          emu: Emulator) -> None:
    """A rule hits only its method, its project spelling (id or number, exactly) and its
    location; other calls run normally."""
    await set_faults(http, emu, error_rules=[
        rule(503, method="list", project=NUMBER, location="europe-west4")])
    number_eu = f"/v1/projects/{NUMBER}/locations/europe-west4/tuningJobs"
    assert (await call(http, emu, "GET", number_eu))[0] == 503
    assert (await call(http, emu, "GET", "/v1/projects/my-proj/locations/europe-west4/"
                       "tuningJobs"))[0] == 200
    assert (await call(http, emu, "GET", f"/v1/projects/{NUMBER}/locations/us-central1/"
                       "tuningJobs"))[0] == 200
    assert (await call(http, emu, "POST", number_eu, job_body()))[0] == 200
    await set_faults(http, emu, error_rules=[rule(403, project="my-proj")])
    assert (await call(http, emu, "GET", COLLECTION))[0] == 403
    assert (await call(http, emu, "GET", f"/v1/projects/{NUMBER}/locations/us-central1/"
                       "tuningJobs"))[0] == 200
    assert (await call(http, emu, "GET", f"/v1beta1/{PARENT}/tuningJobs"))[0] == 403


async def test_rate_zero_never_fires(http: aiohttp.ClientSession, emu: Emulator) -> None:
    """A rule with rate 0 matches but never answers, however often it is asked."""
    await set_faults(http, emu, error_rules=[rule(403, rate=0.0)])
    codes = {(await call(http, emu, "GET", COLLECTION))[0] for _ in range(30)}
    assert codes == {200}


async def test_first_matching_rule_that_hits_wins(http: aiohttp.ClientSession,
                                                  emu: Emulator) -> None:
    """Rules are tried in order: the first that matches and hits answers; a matching rule
    whose roll misses (rate 0) hands over to the next."""
    await set_faults(http, emu, error_rules=[
        rule(404, method="get"), rule(401, method="list", rate=0.0), rule(403)])
    assert (await call(http, emu, "GET", f"{COLLECTION}/1234567890123456789"))[0] == 404
    assert (await call(http, emu, "GET", COLLECTION))[0] == 403
    assert (await call(http, emu, "POST", COLLECTION, job_body()))[0] == 403


async def test_injected_error_changes_nothing(http: aiohttp.ClientSession,
                                              emu: Emulator) -> None:
    """A rule on cancel leaves the job running; the same cancel works once the rule is gone."""
    name = await create(http, emu)
    emu.advance(10)
    await set_faults(http, emu, error_rules=[rule(500, method="cancel")])
    code, _ = await call(http, emu, "POST", job_path(name) + ":cancel", {})
    assert code == 500
    assert (await call(http, emu, "GET", job_path(name)))[1]["state"] == "JOB_STATE_RUNNING"
    await set_faults(http, emu)
    assert (await call(http, emu, "POST", job_path(name) + ":cancel", {}))[0] == 200
    assert counts(emu, "cancel") == {"500": 1, "200": 1}


async def test_partial_rate_is_seeded_and_leaves_other_dice_alone(
        http: aiohttp.ClientSession) -> None:
    """The same seed gives the same hits; rules that never match roll no dice, so adding one
    does not change another fault's sequence."""
    async def run(faults: Faults) -> list[int]:
        async with Emulator(EmulatorConfig(seed=9, faults=faults), clock=ManualClock()) as emu:
            return [(await call(http, emu, "GET", COLLECTION))[0] for _ in range(24)]

    partial = Faults(error_rules=(ErrorRule(503, method="list", rate=0.5),))
    first, again = await run(partial), await run(partial)
    assert first == again and set(first) == {200, 503}
    base = Faults(error_rates={"list": 0.5})
    with_idle_rules = Faults(error_rates={"list": 0.5}, error_rules=(
        ErrorRule(403, method="create", rate=0.5), ErrorRule(403, project="other", rate=0.5)),
        malformed_rates={"create": 0.5}, late_create_rate=0.0)
    assert await run(base) == await run(with_idle_rules)


async def test_rules_come_after_auth_and_rate_limits(http: aiohttp.ClientSession) -> None:
    """The per-minute request limit is checked before the rules: over the limit a call gets
    429, not the rule's error."""
    faults = Faults(error_rules=(ErrorRule(403),))
    async with Emulator(EmulatorConfig(requests_per_minute=1, faults=faults),
                        clock=ManualClock()) as emu:
        assert (await call(http, emu, "GET", COLLECTION))[0] == 403
        assert (await call(http, emu, "GET", COLLECTION))[0] == 429
