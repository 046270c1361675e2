"""wire.check_parent: which projects and locations Vertex takes in a path, and its 400 answers."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tuningd.core.errors import InvalidArgument
from tuningd.vertex import wire

GOOD_PROJECTS = [
    "my-proj", "abcdef", "a" + "b" * 28 + "1", "proj-2024-x",
    "example.com:my-project", "google.com:cloudsdktool", "corp.example.co.uk:team-a",
    "123456789012", "1", "9" * 19,
]
BAD_PROJECTS = [
    "", "p", "abcde", "a" * 31, "My-Proj", "MY-PROJ", "my proj", " my-proj", "my-proj ",
    "my_proj", "my.proj", "my-proj-", "1abcdef", "-my-proj", "my/proj", "9" * 20,
    "example.com:", ":my-project", "example..com:my-project", "example.com:My-Project",
    "example.com:my-project-", "Example.com:my-project", "a:b:c", "my-proj\n", "mý-proj",
    ("a" * 60 + ".") * 5 + "com:my-project",  # domain over 253 characters
]
GOOD_LOCATIONS = ["us-central1", "europe-west4", "global", "us", "eu", "asia-northeast3",
                  "northamerica-northeast2", "us-east5", "a" * 52]
BAD_LOCATIONS = ["", "u", "US-Central1", "us-Central1", "us/central1", "us central1",
                 "us_central1", "us.central1", "us-", "-us", "1us", "a" * 53, "us-central1\n",
                 "üs-central1"]


@pytest.mark.parametrize("project", GOOD_PROJECTS)
def test_valid_projects_pass(project: str) -> None:
    """Project ids, domain-scoped legacy ids and project numbers are accepted."""
    wire.check_parent(project, "us-central1")


@pytest.mark.parametrize("location", GOOD_LOCATIONS)
def test_valid_locations_pass(location: str) -> None:
    """Region-like locations pass without an allow-list, up to 52 characters."""
    wire.check_parent("my-proj", location)


@pytest.mark.parametrize("project", BAD_PROJECTS)
def test_invalid_project_is_googles_resource_project_invalid(project: str) -> None:
    """A malformed project gets the front end's 400 with ErrorInfo RESOURCE_PROJECT_INVALID."""
    with pytest.raises(InvalidArgument) as caught:
        wire.check_parent(project, "us-central1")
    err = caught.value
    assert (err.http_status, err.status) == (400, "INVALID_ARGUMENT")
    assert err.message == "Invalid resource field value in the request."
    assert err.details == [{
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "RESOURCE_PROJECT_INVALID",
        "domain": "googleapis.com",
        "metadata": {"service": "aiplatform.googleapis.com"},
    }]


@pytest.mark.parametrize("location", BAD_LOCATIONS)
@pytest.mark.parametrize("field", ["parent", "name"])
def test_invalid_location_is_vertex_field_violation(location: str, field: str) -> None:
    """A malformed location gets Vertex's "List of found errors" 400 naming the request field."""
    with pytest.raises(InvalidArgument) as caught:
        wire.check_parent("my-proj", location, field=field)
    err = caught.value
    assert err.http_status == 400
    assert err.message == (f"List of found errors:\t1.Field: {field}; "
                           "Message: The provided location ID is not valid.\t")
    assert err.details == [{
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": [{"field": field,
                             "description": "The provided location ID is not valid."}],
    }]


def test_project_is_checked_before_location() -> None:
    """With both parts bad, the project error wins (Google's front end resolves it first)."""
    with pytest.raises(InvalidArgument) as caught:
        wire.check_parent("My Proj", "US")
    assert caught.value.message == wire.INVALID_PROJECT_MESSAGE


def test_openapi_patterns_agree_with_the_check() -> None:
    """The exported patterns (used in the OpenAPI document) accept exactly the checked forms."""
    project = re.compile(wire.PROJECT_PATTERN)
    location = re.compile(wire.LOCATION_PATTERN)
    assert all(project.fullmatch(p) for p in GOOD_PROJECTS)
    # The domain length cap is the only rule the pattern cannot say.
    assert [p for p in BAD_PROJECTS if project.fullmatch(p) and len(p) < 254] == []
    assert all(location.fullmatch(loc) for loc in GOOD_LOCATIONS)
    assert not any(location.fullmatch(loc) for loc in BAD_LOCATIONS)


@given(st.text(max_size=70), st.text(max_size=70))
def test_accepted_parents_are_safe_in_urls_and_hosts(project: str, location: str) -> None:
    """Whatever is accepted needs no escaping in a path and makes a valid Vertex host label."""
    try:
        wire.check_parent(project, location)
    except InvalidArgument:
        return
    assert re.fullmatch(r"[a-z0-9.:-]+", project)
    host_label = f"{location}-aiplatform"
    assert len(host_label) <= 63 and re.fullmatch(r"[a-z]([a-z0-9-]*[a-z0-9])?", host_label)
