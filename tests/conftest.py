"""Fixtures every test directory shares: a throwaway PostgreSQL cluster and a database per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pg import Cluster, create_database, drop_database, running_cluster


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """One PostgreSQL server for the whole session, started on first use."""
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> Iterator[str]:
    """The URL of a fresh, empty database of the session's cluster (dropped afterwards).

    Synchronous, so async fixtures can ask for it with request.getfixturevalue."""
    name = create_database(pg_cluster)
    try:
        yield pg_cluster.url(name)
    finally:
        drop_database(pg_cluster, name)
