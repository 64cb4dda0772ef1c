"""The local process node: runs the pods of the Jobs and Deployments in a test's namespace.

Fixture:
    local_node  (function)  a started testenv.local_node.LocalProcessNode
                            watching the `namespace` fixture's namespace

The local control plane has no kubelet and no controllers, so without this nothing ever runs.
At teardown every process the node started is stopped (SIGTERM, then SIGKILL), and the test
fails if the node hit an unexpected error, such as a status update the apiserver rejected.
With USE_EXISTING_CLUSTER=true the tests that need it are skipped: that cluster's own kubelet
and controllers run pods (and would fight the node over the status).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from testenv.control_plane import Cluster, use_existing_cluster
from testenv.local_node import LocalProcessNode


@pytest.fixture
def local_node(kube: Cluster, namespace: str, tmp_path: Path) -> Iterator[LocalProcessNode]:
    if use_existing_cluster():
        pytest.skip("USE_EXISTING_CLUSTER=true: the cluster's own nodes run pods")
    node = LocalProcessNode(kube.kubeconfig, namespace, tmp_path / "local-node")
    node.start()
    try:
        yield node
    finally:
        node.stop()
    assert not node.errors, "the local process node hit errors:\n" + "\n".join(node.errors)
