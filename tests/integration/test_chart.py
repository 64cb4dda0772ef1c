"""The Helm chart, rendered by a real helm (built by `make control-plane`): lint, the operator's
Deployment, and RBAC that covers exactly what the operator and the workers call.

The expected permissions are written out below, derived from the Kubernetes calls in
operator/tributary_operator/kube.py (a test parses that file, so a new call without a row here
fails) and from what kopf itself does. tests/e2e/test_chart.py applies the chart to a real API
server and runs the operator with the chart's RBAC.
"""

from __future__ import annotations

import argparse
import ast
import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness.helm import CHART, find, helm_binary, one, render, run_helm
from tributary_operator.core import ingestion
from tributary_operator.options import add_operator_options

ROOT = Path(__file__).resolve().parents[2]
KUBE_PY = ROOT / "operator" / "tributary_operator" / "kube.py"
CHECKPOINT_PY = ROOT / "workers" / "tributary_workers" / "batch" / "checkpoint.py"
KINDS = ("ingestionjobs", "streampipelines", "embeddingindexes")

Permission = tuple[str, str, str]  # (API group, resource, verb)

# Every Kubernetes client method kube.py calls, and the permission it needs.
KUBE_CALLS: dict[str, list[Permission]] = {
    "list_namespaced_job": [("batch", "jobs", "list")],
    "create_namespaced_job": [("batch", "jobs", "create")],
    "patch_namespaced_job": [("batch", "jobs", "patch")],  # suspend / resume a run
    "delete_namespaced_job": [("batch", "jobs", "delete")],
    "create_namespaced_config_map": [("", "configmaps", "create")],
    "read_namespaced_config_map": [("", "configmaps", "get")],
    "delete_namespaced_config_map": [("", "configmaps", "delete")],
    "delete_collection_namespaced_config_map": [("", "configmaps", "deletecollection")],
    "read_namespaced_secret": [("", "secrets", "get")],  # Redis checkpoint URLs; pre-flight key names
    "read_namespaced_service_account": [("", "serviceaccounts", "get")],  # pre-flight
    "list_namespaced_pod": [("", "pods", "list")],  # termination messages of failed shards
    "read_namespaced_lease": [("coordination.k8s.io", "leases", "get")],  # leader election
    "create_namespaced_lease": [("coordination.k8s.io", "leases", "create")],
    "replace_namespaced_lease": [("coordination.k8s.io", "leases", "update")],
    # get_custom(namespace, plural, name): today embeddingindexes (an indexRef), any kind tomorrow.
    "get_namespaced_custom_object": [("tributary.dev", kind, "get") for kind in KINDS],
    # An EmbeddingIndex reads its StreamPipelines' routing and its running IngestionJobs (kopf lists them too).
    "list_namespaced_custom_object": [("tributary.dev", kind, "list") for kind in ("streampipelines", "ingestionjobs")],
    # A StreamPipeline's worker Deployment, and its status written from the autoscaler daemon.
    "create_namespaced_deployment": [("apps", "deployments", "create")],
    "read_namespaced_deployment": [("apps", "deployments", "get")],
    "patch_namespaced_deployment": [("apps", "deployments", "patch")],
    "list_namespaced_horizontal_pod_autoscaler": [("autoscaling", "horizontalpodautoscalers", "list")],
    "patch_namespaced_custom_object_status": [("tributary.dev", f"{kind}/status", "patch") for kind in KINDS],
}

# What kopf does on its own: watch the three kinds, patch them (progress and diff-base annotations,
# the finalizer) and their status, and post Events (kopf.info / kopf.warn, handler failures).
KOPF_NAMESPACED: list[Permission] = [
    *[("tributary.dev", kind, verb) for kind in KINDS for verb in ("list", "watch", "patch")],
    *[("tributary.dev", f"{kind}/status", "patch") for kind in KINDS],
    ("", "events", "create"),
]
# kopf watches CRDs in every mode; with --namespace it also lists and watches namespaces
# (kopf/_core/reactor/observation.py: namespace_observer runs only when not cluster-wide).
KOPF_CLUSTER: list[Permission] = [("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")]
KOPF_NAMESPACES: list[Permission] = [("", "namespaces", "list"), ("", "namespaces", "watch")]

# Granted although no code calls it yet: written out so that any other addition fails this test.
AHEAD_NAMESPACED: list[Permission] = [
    *[("tributary.dev", kind, verb) for kind in KINDS for verb in ("get", "update")],
    *[("tributary.dev", f"{kind}/status", verb) for kind in KINDS for verb in ("get", "update")],
    # blockOwnerDeletion on children, where OwnerReferencesPermissionEnforcement is enabled.
    *[("tributary.dev", f"{kind}/finalizers", "update") for kind in KINDS],
    ("batch", "jobs", "get"), ("batch", "jobs", "watch"),
    ("", "configmaps", "list"), ("", "configmaps", "patch"),
    # StreamPipeline workers: listed, watched and deleted by nothing yet (the GC deletes them).
    *[("apps", "deployments", verb) for verb in ("list", "watch", "delete")],
    ("", "events", "patch"), ("events.k8s.io", "events", "create"), ("events.k8s.io", "events", "patch"),
]  # fmt: skip
AHEAD_CLUSTER: list[Permission] = [("apiextensions.k8s.io", "customresourcedefinitions", "get")]

# The workers' only API calls: their shard's checkpoint in the run's ConfigMap.
CHECKPOINT_CALLS: dict[str, Permission] = {
    "read_namespaced_config_map": ("", "configmaps", "get"),
    "patch_namespaced_config_map": ("", "configmaps", "patch"),
    "create_namespaced_config_map": ("", "configmaps", "create"),
}

NAMESPACED_NEEDS = {p for perms in KUBE_CALLS.values() for p in perms} | set(KOPF_NAMESPACED)


@pytest.fixture(scope="module")
def helm() -> Path:
    return helm_binary()


@pytest.fixture(scope="module")
def values_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("values")


@pytest.fixture(scope="module")
def default(helm) -> list[dict[str, Any]]:
    return render(helm)


@pytest.fixture(scope="module")
def namespaced(helm, values_dir) -> list[dict[str, Any]]:
    return render(helm, values={"watchNamespaces": ["team-a", "team-b"]}, tmp_dir=values_dir)


def grants(rules: list[dict[str, Any]]) -> set[Permission]:
    """Every (group, resource, verb) a list of PolicyRules allows; wildcards are refused outright."""
    allowed = set()
    for rule in rules:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, f"unexpected rule fields: {rule}"
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], f"wildcard in {rule}"
        allowed |= set(itertools.product(rule["apiGroups"], rule["resources"], rule["verbs"]))
    return allowed


def client_calls(path: Path, receiver: str | None = None) -> set[str]:
    """Kubernetes client methods called in a module: on `client.XxxApi(...)`, or on `receiver`."""
    calls = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        target = node.func.value
        on_api = (isinstance(target, ast.Call) and isinstance(target.func, ast.Attribute)
                  and isinstance(target.func.value, ast.Name) and target.func.value.id == "client"
                  and target.func.attr.endswith("Api"))  # fmt: skip
        if on_api or (receiver is not None and ast.unparse(target) == receiver):
            calls.add(node.func.attr)
    return calls


# ------------------------------------------------------------------------------------- lint


@pytest.mark.parametrize(
    "values",
    [{}, {"watchNamespaces": ["team-a"]}, {"metrics": {"serviceMonitor": {"enabled": True}}}],
    ids=["defaults", "watchNamespaces", "serviceMonitor"],
)
def test_lint_is_clean(helm, values_dir, values):
    args = ["lint", "--strict", str(CHART)]
    if values:
        path = values_dir / "lint.yaml"
        path.write_text(yaml.safe_dump(values))
        args += ["--values", str(path)]
    out = run_helm(helm, *args).stdout
    assert "0 chart(s) failed" in out and "[WARNING]" not in out and "[ERROR]" not in out, out


def test_the_chart_packages(helm, tmp_path):
    run_helm(helm, "package", str(CHART), "--destination", str(tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == ["tributary-0.1.0.tgz"]


# --------------------------------------------------------------------------- what is rendered


def test_default_objects(default):
    names = sorted((o["kind"], o["metadata"]["name"], o["metadata"].get("namespace", "")) for o in default)
    assert names == [
        ("ClusterRole", "tributary-operator", ""),
        ("ClusterRole", "tributary-worker", ""),
        ("ClusterRoleBinding", "tributary-operator", ""),
        ("Deployment", "tributary-operator", "tributary-system"),
        ("RoleBinding", "tributary-worker", "tributary-system"),
        ("Service", "tributary-operator-metrics", "tributary-system"),
        ("ServiceAccount", "tributary-operator", "tributary-system"),
        ("ServiceAccount", "tributary-worker", "tributary-system"),
    ]


@pytest.mark.parametrize("which", ["default", "namespaced"])
def test_every_object_is_labelled_and_placed(request, which):
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding"}
    for obj in request.getfixturevalue(which):
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "tributary", obj["metadata"]
        assert labels["app.kubernetes.io/instance"] == "tributary"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["helm.sh/chart"] == "tributary-0.1.0"
        assert labels["app.kubernetes.io/component"] in {"operator", "worker"}
        # An explicit namespace, so `helm template | kubectl apply` (GitOps) lands objects right.
        assert ("namespace" in obj["metadata"]) == (obj["kind"] not in cluster_scoped), obj["metadata"]


def test_operator_deployment(default):
    deployment = one(default, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert pod["serviceAccountName"] == one(default, "ServiceAccount", "tributary-operator")["metadata"]["name"]
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/tributary-dev/tributary:0.1.0"
    assert container["command"] == ["tributary-operator"]
    assert container["args"] == ["--metrics-port", "9090", "--liveness", "http://0.0.0.0:8080/healthz",
                                 "--log-format", "json"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"metrics": 9090, "health": 8080}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
    }  # fmt: skip
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    # The workers run the operator's own image, as the ServiceAccount the chart creates for them.
    assert env["TRIBUTARY_WORKER_IMAGE"] == container["image"] == ingestion.OperatorDefaults.worker_image
    assert env["TRIBUTARY_WORKER_SERVICE_ACCOUNT"] == ingestion.OperatorDefaults.service_account
    assert one(default, "ServiceAccount", env["TRIBUTARY_WORKER_SERVICE_ACCOUNT"], "tributary-system")
    assert env["TRIBUTARY_RESYNC_SECONDS"] == "10"


def test_deployment_args_are_what_tributary_operator_accepts(default, namespaced):
    parser = add_operator_options(argparse.ArgumentParser(exit_on_error=False))
    for objects, namespaces in ((default, []), (namespaced, ["team-a", "team-b"])):
        args = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
        options = parser.parse_args(args)
        assert (options.namespace, options.metrics_port, options.log_format) == (namespaces, 9090, "json")
        assert options.liveness == "http://0.0.0.0:8080/healthz"


def test_options_reach_the_pod(helm, values_dir):
    objects = render(helm, tmp_dir=values_dir, values={
        "image": {"repository": "registry.example/tributary", "tag": "1.2.3"},
        "imagePullSecrets": [{"name": "registry"}],
        "worker": {"image": {"repository": "registry.example/tributary-gpu", "tag": "1.2.3-cuda"}},
        "operator": {"verbose": True, "logFormat": "plain", "nodeSelector": {"pool": "system"},
                     "tolerations": [{"key": "system", "operator": "Exists"}],
                     "podAnnotations": {"example.com/team": "search"}},
    })  # fmt: skip
    template = one(objects, "Deployment")["spec"]["template"]
    pod = template["spec"]
    container = pod["containers"][0]
    assert container["image"] == "registry.example/tributary:1.2.3"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TRIBUTARY_WORKER_IMAGE"] == "registry.example/tributary-gpu:1.2.3-cuda"
    assert container["args"][-3:] == ["--log-format", "plain", "--verbose"]
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert pod["nodeSelector"] == {"pool": "system"} and pod["tolerations"][0]["key"] == "system"
    assert template["metadata"]["annotations"] == {"example.com/team": "search"}
    # Worker pods name no pull secret; their ServiceAccount carries it.
    assert one(objects, "ServiceAccount", "tributary-worker")["imagePullSecrets"] == [{"name": "registry"}]

    digest = "sha256:" + "a" * 64
    objects = render(helm, tmp_dir=values_dir, values={"image": {"digest": digest}})
    container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"ghcr.io/tributary-dev/tributary@{digest}"
    assert {"name": "TRIBUTARY_WORKER_IMAGE", "value": container["image"]} in container["env"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"metrics": {"prot": 9090}}, "additional properties 'prot' not allowed"),
        ({"watchNamespaces": ["Team_A"]}, "does not match pattern"),
        ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"operator": {"logFormat": "xml"}}, "logFormat"),
        ({"metrics": {"port": 8080}}, "metrics.port and operator.healthPort must differ"),
        ({"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}},
         "needs metrics.service.enabled"),
        ({"serviceAccount": {"create": False}}, "serviceAccount.name is required"),
    ],
)
def test_bad_values_are_refused(helm, values_dir, values, message):
    path = values_dir / "bad.yaml"
    path.write_text(yaml.safe_dump(values))
    result = run_helm(helm, "template", "tributary", str(CHART), "--values", str(path), check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr


# ------------------------------------------------------------------------------------- RBAC


def test_every_kube_call_has_its_permission_written_down():
    calls = client_calls(KUBE_PY)
    assert calls, "no Kubernetes client calls found in kube.py: the parser is broken"
    assert calls == set(KUBE_CALLS), "kube.py's calls changed: update KUBE_CALLS and the chart's RBAC"


def test_cluster_wide_operator_rbac_is_exactly_what_it_needs(default):
    role = one(default, "ClusterRole", "tributary-operator")
    granted = grants(role["rules"])
    assert NAMESPACED_NEEDS <= granted, f"missing: {sorted(NAMESPACED_NEEDS - granted)}"
    assert set(KOPF_CLUSTER) <= granted
    # Watching the whole cluster, kopf never lists namespaces: not granted.
    expected = NAMESPACED_NEEDS | set(AHEAD_NAMESPACED) | set(KOPF_CLUSTER) | set(AHEAD_CLUSTER)
    assert granted == expected, f"not expected: {sorted(granted - expected)}"
    assert not find(default, "Role")

    binding = one(default, "ClusterRoleBinding", "tributary-operator")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": "tributary-operator"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "tributary-operator",
                                    "namespace": "tributary-system"}]


def test_watch_namespaces_grants_roles_there_only(namespaced):
    # Cluster-wide: only kopf's discovery (CRDs) and namespace matching.
    cluster = grants(one(namespaced, "ClusterRole", "tributary-operator")["rules"])
    assert cluster == set(KOPF_CLUSTER) | set(AHEAD_CLUSTER) | set(KOPF_NAMESPACES)
    one(namespaced, "ClusterRoleBinding", "tributary-operator")

    for namespace in ("team-a", "team-b"):
        role = one(namespaced, "Role", "tributary-operator", namespace)
        granted, expected = grants(role["rules"]), NAMESPACED_NEEDS | set(AHEAD_NAMESPACED)
        assert granted == expected, sorted(granted ^ expected)
        binding = one(namespaced, "RoleBinding", "tributary-operator", namespace)
        assert binding["roleRef"]["kind"] == "Role" and binding["roleRef"]["name"] == "tributary-operator"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "tributary-operator",
                                        "namespace": "tributary-system"}]
    assert {r["metadata"]["namespace"] for r in find(namespaced, "Role")} == {"team-a", "team-b"}


def test_nothing_grants_secrets_beyond_get_by_name(default, namespaced):
    for objects in (default, namespaced):
        for role in find(objects, "ClusterRole") + find(objects, "Role"):
            secret_verbs = {verb for group, resource, verb in grants(role["rules"]) if resource == "secrets"}
            assert secret_verbs <= {"get"}, role["metadata"]["name"]
            # Reading pods (termination messages) and ServiceAccounts (pre-flight) is fine; creating or
            # changing them, or roles, would let the operator grant itself more.
            writes = {"create", "update", "patch", "delete", "deletecollection", "impersonate", "bind", "escalate"}
            forbidden = {("", "pods"), ("rbac.authorization.k8s.io", "roles"), ("", "serviceaccounts")}
            assert not {(g, r) for g, r, v in grants(role["rules"]) if v in writes} & forbidden


def test_worker_rbac_covers_the_checkpoint_store(default, namespaced):
    assert client_calls(CHECKPOINT_PY, receiver="self.api") == set(CHECKPOINT_CALLS)
    for objects, namespaces in ((default, ["tributary-system"]), (namespaced, ["team-a", "team-b"])):
        role = one(objects, "ClusterRole", "tributary-worker")
        assert grants(role["rules"]) == set(CHECKPOINT_CALLS.values())
        # Bound per namespace only: the ClusterRole never reaches beyond a RoleBinding's namespace.
        assert not [b for b in find(objects, "ClusterRoleBinding") if b["roleRef"]["name"] == "tributary-worker"]
        for namespace in namespaces:
            one(objects, "ServiceAccount", "tributary-worker", namespace)
            binding = one(objects, "RoleBinding", "tributary-worker", namespace)
            assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                          "name": "tributary-worker"}
            assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "tributary-worker",
                                            "namespace": namespace}]
        assert len(find(objects, "RoleBinding")) - len(find(objects, "Role")) == len(namespaces)


def test_worker_namespaces_can_be_listed(helm, values_dir):
    objects = render(helm, tmp_dir=values_dir, values={"worker": {"namespaces": ["ingest", "tributary-system"]}})
    accounts = {sa["metadata"]["namespace"] for sa in find(objects, "ServiceAccount", "tributary-worker")}
    assert accounts == {"ingest", "tributary-system"}


def test_rbac_can_be_left_to_the_platform_team(helm, values_dir):
    objects = render(helm, tmp_dir=values_dir, values={"rbac": {"create": False}})
    assert not [o for o in objects if o["apiVersion"].startswith("rbac.authorization.k8s.io/")]
    assert one(objects, "ServiceAccount", "tributary-worker")


# ---------------------------------------------------------------------------------- metrics


def test_metrics_service_and_service_monitor(helm, values_dir, default):
    assert not find(default, "ServiceMonitor")
    objects = render(helm, tmp_dir=values_dir,
                     values={"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}}})
    service = one(objects, "Service", "tributary-operator-metrics")
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]

    monitor = one(objects, "ServiceMonitor", "tributary-operator")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["tributary-system"]}
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s",
                                             "scrapeTimeout": "10s"}]


# ------------------------------------------------------------------------------------- CRDs


def test_the_chart_installs_the_generated_crds(helm):
    crds = [o for o in render(helm, extra=["--include-crds"]) if o["kind"] == "CustomResourceDefinition"]
    generated = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "crds").glob("*.yaml"))]
    assert sorted(crds, key=lambda c: c["metadata"]["name"]) == generated
    shown = [doc for doc in yaml.safe_load_all(run_helm(helm, "show", "crds", str(CHART)).stdout) if doc]
    assert len(shown) == 3
