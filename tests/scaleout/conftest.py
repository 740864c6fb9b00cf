"""The scale-out cluster: started once for the module, repaired before each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.scaleout.cluster import Cluster


@pytest.fixture(scope="module")
def cluster_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("scaleout"))
    try:
        cluster.ensure_up()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster(cluster_processes: Cluster) -> Iterator[Cluster]:
    """Both servers and Redis up; the servers' output of the test is printed afterwards (pytest
    shows it when the test fails)."""
    cluster_processes.ensure_up()
    for server in cluster_processes.servers:
        server.new_output()
    yield cluster_processes
    for server in cluster_processes.servers:
        print(f"---- server {server.name} output ----\n{server.new_output()}")
