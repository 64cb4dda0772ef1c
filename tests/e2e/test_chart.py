"""The Helm chart against a real kube-apiserver: every rendered object is accepted, the chart's CRDs
become Established, RBAC allows what the operator and the workers need and denies the rest
(`kubectl auth can-i` impersonating their ServiceAccounts), and the operator itself runs with
nothing but the chart's RBAC (a ServiceAccount token) through a whole IngestionJob lifecycle.

`helm template` + `kubectl apply` stands in for `helm install`, the way GitOps tools apply a chart;
helm itself needs no cluster for this. Each test uses its own release name, so the cluster-scoped
ClusterRoles never collide, and deletes them at teardown (the namespace fixture cannot).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness.helm import CHART, helm_binary, render
from harness.waiting import wait_for
from testenv.kubelet import NODE_NAME
from tributary_workers.localservers import stop

ROOT = Path(__file__).resolve().parents[2]
WORKER_SA = "tributary-worker"


@pytest.fixture(scope="module")
def helm() -> Path:
    return helm_binary()


@pytest.fixture
def release(kube) -> Iterator[str]:
    """A release name of its own; its cluster-scoped objects are deleted afterwards."""
    name = f"trib-{secrets.token_hex(3)}"
    yield name
    selector = f"app.kubernetes.io/instance={name}"
    kube.kubectl("delete", "clusterrolebindings,clusterroles", "-l", selector, "--ignore-not-found", "--wait=false")


@pytest.fixture
def other_namespace(kube, namespace) -> Iterator[str]:
    name = f"{namespace}-w"
    kube.kubectl("create", "namespace", name)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


def install(kube, helm: Path, release: str, namespace: str, tmp_path: Path,
            values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Apply the rendered chart: its CRDs first (server-side, as Helm would from crds/), then the rest."""
    objects = render(helm, release, namespace, values, extra=["--include-crds"], tmp_dir=tmp_path)
    crds = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
    rest = [o for o in objects if o["kind"] != "CustomResourceDefinition"]
    assert len(crds) == 3
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=_dump(crds))
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                 *(f"crd/{c['metadata']['name']}" for c in crds), timeout=70)
    kube.kubectl("apply", "-f", "-", input=_dump(rest))
    return rest


def _dump(objects: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False)


def can_i(kube, account: str, verb: str, resource: str, *where: str) -> bool:
    """`kubectl auth can-i` as a ServiceAccount ("namespace:name")."""
    result = kube.kubectl("auth", "can-i", verb, resource, f"--as=system:serviceaccount:{account}", *where,
                          check=False)
    assert result.stdout.strip() in {"yes", "no"}, result.stderr
    return result.stdout.strip() == "yes"


def check_access(kube, account: str, allowed: list[tuple[str, ...]], denied: list[tuple[str, ...]]) -> None:
    wrong = [("should be allowed", *c) for c in allowed if not can_i(kube, account, *c)]
    wrong += [("should be denied", *c) for c in denied if can_i(kube, account, *c)]
    assert not wrong, f"{account}: {wrong}"


def test_cluster_wide_install(kube, helm, namespace, release, tmp_path):
    objects = install(kube, helm, release, namespace, tmp_path)
    # Every rendered object was accepted and stored as rendered.
    stored = kube.kubectl("get", "-f", "-", "-o", "json", input=_dump(objects)).stdout
    items = json.loads(stored).get("items") or [json.loads(stored)]
    assert sorted((o["kind"], o["metadata"]["name"]) for o in items) == sorted(
        (o["kind"], o["metadata"]["name"]) for o in objects)
    for crd in ("ingestionjobs", "streampipelines", "embeddingindexes"):
        status = kube.kubectl("get", f"crd/{crd}.tributary.dev", "-o",
                              "jsonpath={.status.conditions[?(@.type=='Established')].status}").stdout
        assert status == "True", crd

    operator = f"{namespace}:{release}-tributary-operator"
    elsewhere = ("-n", "default")
    check_access(kube, operator, allowed=[
        ("create", "jobs.batch", "-n", namespace),
        ("delete", "jobs.batch", *elsewhere),           # cluster-wide: every namespace
        ("patch", "jobs.batch", "-n", namespace),
        ("list", "ingestionjobs.tributary.dev", "--all-namespaces"),
        ("watch", "embeddingindexes.tributary.dev", "--all-namespaces"),
        ("patch", "ingestionjobs.tributary.dev", "--subresource=status", "-n", namespace),
        ("create", "configmaps", "-n", namespace),
        ("deletecollection", "configmaps", "-n", namespace),
        ("get", "secrets", "-n", namespace),
        ("create", "events", "-n", namespace),
        ("create", "deployments.apps", "-n", namespace),
        ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
    ], denied=[
        ("delete", "secrets", "-n", namespace),
        ("list", "secrets", "-n", namespace),         # read by name only: no enumerating Secrets
        ("create", "pods", "-n", namespace),
        ("delete", "ingestionjobs.tributary.dev", "-n", namespace),
        ("update", "customresourcedefinitions.apiextensions.k8s.io"),
        ("list", "namespaces"),                       # kopf needs it with --namespace only
        ("create", "rolebindings.rbac.authorization.k8s.io", "-n", namespace),
        ("impersonate", "serviceaccounts", "-n", namespace),
    ])  # fmt: skip

    worker = f"{namespace}:{WORKER_SA}"
    check_access(kube, worker, allowed=[
        ("get", "configmaps", "-n", namespace),
        ("create", "configmaps", "-n", namespace),
        ("patch", "configmaps", "-n", namespace),
    ], denied=[
        ("delete", "configmaps", "-n", namespace),
        ("patch", "configmaps", *elsewhere),          # bound in its own namespace only
        ("get", "secrets", "-n", namespace),
        ("create", "jobs.batch", "-n", namespace),
        ("list", "ingestionjobs.tributary.dev", "-n", namespace),
    ])  # fmt: skip

    # The examples are served by the chart's CRDs.
    kube.kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples"))
    names = kube.kubectl("get", "tributary", "-n", namespace, "-o", "name").stdout.split()
    assert len(names) == 3, names


def test_watch_namespaces_install(kube, helm, namespace, other_namespace, release, tmp_path):
    install(kube, helm, release, namespace, tmp_path, values={"watchNamespaces": [other_namespace]})
    operator = f"{namespace}:{release}-tributary-operator"
    check_access(kube, operator, allowed=[
        ("create", "jobs.batch", "-n", other_namespace),
        ("patch", "streampipelines.tributary.dev", "--subresource=status", "-n", other_namespace),
        ("get", "secrets", "-n", other_namespace),
        ("list", "namespaces"),
        ("watch", "namespaces"),
        ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
    ], denied=[
        ("create", "jobs.batch", "-n", namespace),      # the release namespace is not watched
        ("create", "jobs.batch", "-n", "default"),
        ("list", "ingestionjobs.tributary.dev", "--all-namespaces"),
        ("get", "secrets", "-n", namespace),
    ])  # fmt: skip
    # The workers' ServiceAccount lives where the IngestionJobs run.
    assert can_i(kube, f"{other_namespace}:{WORKER_SA}", "patch", "configmaps", "-n", other_namespace)
    missing = kube.kubectl("get", "serviceaccount", WORKER_SA, "-n", namespace, check=False)
    assert missing.returncode != 0 and "NotFound" in missing.stderr


def test_helm_install_upgrade_uninstall(kube, helm, namespace, release, tmp_path, process_kubelet):
    """The real thing: helm talks to the API server (release Secret, CRDs from crds/, hooks-free).

    The operator's pod is scheduled to the process kubelet but never run: this namespace is not
    handed to it (harness/node.py), so it cannot reconcile other tests' objects or bind 8080/9090."""
    env = dict(os.environ, KUBECONFIG=str(kube.kubeconfig), HELM_CACHE_HOME=str(tmp_path / "cache"),
               HELM_CONFIG_HOME=str(tmp_path / "config"), HELM_DATA_HOME=str(tmp_path / "data"))

    def run(*args: str) -> str:
        result = subprocess.run([str(helm), *args], env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stderr}"
        return result.stdout

    run("install", release, str(CHART), "--namespace", namespace)
    assert "STATUS: deployed" in run("status", release, "--namespace", namespace)
    deployment = get_json(kube, namespace, "deployment", f"{release}-tributary-operator")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["command"] == ["tributary-operator"]
    operator_pod = wait_for(lambda: [p for p in get_json(kube, namespace, "pods")["items"]
                                     if p["spec"].get("nodeName") == NODE_NAME], timeout=60,
                            message="the operator's pod bound to the process kubelet")[0]
    process_kubelet.wait_polls(2)
    status = get_json(kube, namespace, "pod", operator_pod["metadata"]["name"])["status"]
    assert status["phase"] == "Pending" and "containerStatuses" not in status, status
    assert process_kubelet.pods(namespace) == []

    run("upgrade", release, str(CHART), "--namespace", namespace, "--set", f"watchNamespaces={{{namespace}}}")
    args = get_json(kube, namespace, "deployment", f"{release}-tributary-operator")[
        "spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-2:] == ["--namespace", namespace]
    assert get_json(kube, namespace, "role", f"{release}-tributary-operator")["rules"]

    run("uninstall", release, "--namespace", namespace)
    left = kube.kubectl("get", "clusterroles,clusterrolebindings", "-l", f"app.kubernetes.io/instance={release}",
                        "-o", "name").stdout
    assert left == "", left
    # Helm never deletes CRDs (they would take every custom resource with them).
    kube.kubectl("get", "crd", "ingestionjobs.tributary.dev")


def token_kubeconfig(kube, namespace: str, account: str, path: Path) -> Path:
    """The test cluster's kubeconfig, authenticated as a ServiceAccount (a bound token) instead of admin."""
    token = kube.kubectl("create", "token", account, "-n", namespace, "--duration=1h").stdout.strip()
    config = yaml.safe_load(kube.kubeconfig.read_text())
    for user in config["users"]:
        user["user"] = {"token": token}
    path.write_text(yaml.safe_dump(config))
    return path


def get_json(kube, namespace: str, *what: str) -> dict[str, Any]:
    return json.loads(kube.kubectl("-n", namespace, "get", *what, "-o", "json").stdout)


def test_the_operator_runs_with_only_the_charts_rbac(kube, helm, namespace, release, tmp_path, redis_server,
                                                     request):
    install(kube, helm, release, namespace, tmp_path, values={"watchNamespaces": [namespace]})
    kubeconfig = token_kubeconfig(kube, namespace, f"{release}-tributary-operator", tmp_path / "operator.kubeconfig")
    kube.kubectl("-n", namespace, "create", "secret", "generic", "checkpoints",
                 f"--from-literal=url={redis_server.url}")
    log = tmp_path / "operator.log"
    env = dict(os.environ, KUBECONFIG=str(kubeconfig), TRIBUTARY_RESYNC_SECONDS="1")
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "tributary-operator"), "--namespace", namespace,
             "--metrics-port", "0", "--liveness", "", "--log-format", "plain", "--verbose"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _ingestion_job_lifecycle(kube, namespace)
        # kopf degrades quietly without some permissions (a warning, then a fallback): look for it.
        denied = re.findall(r'.*(?:HTTP/1\.1" 403|Forbidden|Not enough permissions).*', log.read_text(errors="replace"))
        assert not denied, "the operator was denied:\n" + "\n".join(denied[:10])
    except BaseException:
        print(f"--- operator log ({log}) ---\n{log.read_text(errors='replace')[-20000:]}")
        raise
    finally:
        stop(proc)


def _ingestion_job_lifecycle(kube, namespace: str) -> None:
    manifest = {
        "apiVersion": "tributary.dev/v1alpha1",
        "kind": "IngestionJob",
        "metadata": {"name": "docs"},
        "spec": {
            "source": {"type": "local", "uri": "/data/docs"},
            "target": {"inline": {"milvusUri": "http://milvus:19530", "collection": "docs",
                                  "model": {"name": "sentence-transformers/all-MiniLM-L6-v2", "dimension": 384}}},
            "checkpoint": {"backend": "redis", "redisSecretRef": {"name": "checkpoints"}},  # a Secret read
            "parallelism": 2,
        },
    }  # fmt: skip
    kube.kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump(manifest))

    # create: a Job and its checkpoint ConfigMap; patch: the finalizer, annotations and status.
    job = wait_for(lambda: get_json(kube, namespace, "jobs")["items"], timeout=60, message="the run's Job")[0]
    assert job["metadata"]["ownerReferences"][0]["name"] == "docs"
    run = job["metadata"]["name"]
    get_json(kube, namespace, "configmap", f"{run}-checkpoints")
    ij = wait_for(lambda: (ij := get_json(kube, namespace, "ij", "docs")).get("status", {}).get("phase") and ij,
                  timeout=30, message="a status written by the operator")
    assert "tributary.dev/finalizer" in ij["metadata"]["finalizers"]
    events = kube.kubectl("-n", namespace, "get", "events", "--field-selector", "involvedObject.name=docs").stdout
    assert "RunStarted" in events

    # patch: suspend follows the spec.
    kube.kubectl("-n", namespace, "patch", "ij", "docs", "--type=merge", "-p", '{"spec": {"suspend": true}}')
    wait_for(lambda: get_json(kube, namespace, "job", run)["spec"]["suspend"] is True, timeout=30,
             message="the Job suspended")

    # delete + deletecollection, then the finalizer is removed (a patch) and the object goes.
    kube.kubectl("-n", namespace, "delete", "ij", "docs", "--wait=true", "--timeout=60s", timeout=70)
    assert get_json(kube, namespace, "jobs")["items"] == []
    assert not [c for c in get_json(kube, namespace, "configmaps")["items"] if c["metadata"]["name"].startswith(run)]
