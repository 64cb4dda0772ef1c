"""The few Kubernetes API calls the handlers make, idempotent and returning plain dicts."""

from __future__ import annotations

import base64
import json
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tributary_operator.api.v1alpha1 import GROUP, VERSION

_api: client.ApiClient | None = None


def load_config() -> None:
    global _api
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    _api = client.ApiClient()


def api() -> client.ApiClient:
    if _api is None:
        load_config()
    return _api


def _plain(obj: Any) -> dict[str, Any]:
    return api().sanitize_for_serialization(obj)


def list_jobs(namespace: str, selector: str) -> list[dict[str, Any]]:
    jobs = client.BatchV1Api(api()).list_namespaced_job(namespace, label_selector=selector)
    return [_plain(job) for job in jobs.items]


def list_pods(namespace: str, selector: str) -> list[dict[str, Any]]:
    pods = client.CoreV1Api(api()).list_namespaced_pod(namespace, label_selector=selector)
    return [_plain(pod) for pod in pods.items]


def create_if_absent(manifest: dict[str, Any]) -> bool:
    """Create an object; False when it already exists (a reconcile may run twice)."""
    namespace = manifest["metadata"]["namespace"]
    try:
        if manifest["kind"] == "Job":
            client.BatchV1Api(api()).create_namespaced_job(namespace, manifest)
        elif manifest["kind"] == "ConfigMap":
            client.CoreV1Api(api()).create_namespaced_config_map(namespace, manifest)
        elif manifest["kind"] == "Deployment":
            client.AppsV1Api(api()).create_namespaced_deployment(namespace, manifest)
        else:
            raise ValueError(f"unsupported kind {manifest['kind']}")
    except ApiException as exc:
        if exc.status == 409:
            return False
        raise
    return True


MERGE_PATCH = "application/merge-patch+json"  # lists replaced whole: a removed env entry goes


def get_deployment(namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return _plain(client.AppsV1Api(api()).read_namespaced_deployment(name, namespace))
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def patch_deployment(namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
    return _plain(client.AppsV1Api(api()).patch_namespaced_deployment(name, namespace, patch,
                                                                      _content_type=MERGE_PATCH))


def autoscalers_of(namespace: str, kind: str, name: str) -> list[str]:
    """Names of the HorizontalPodAutoscalers whose scaleTargetRef is this object."""
    hpas = client.AutoscalingV2Api(api()).list_namespaced_horizontal_pod_autoscaler(namespace)
    return [h.metadata.name for h in hpas.items
            if h.spec.scale_target_ref.kind == kind and h.spec.scale_target_ref.name == name]


def patch_custom_status(namespace: str, plural: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
    """Merge-patch the status subresource (for writers outside a kopf handler's patch: daemons)."""
    return client.CustomObjectsApi(api()).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, plural, name, {"status": status}, _content_type=MERGE_PATCH)


def delete_job(namespace: str, name: str) -> None:
    # Background propagation: the Job goes now, its pods right after (the GC's work on a cluster).
    try:
        client.BatchV1Api(api()).delete_namespaced_job(name, namespace, propagation_policy="Background")
    except ApiException as exc:
        if exc.status != 404:
            raise


def set_job_suspended(namespace: str, name: str, suspended: bool) -> None:
    client.BatchV1Api(api()).patch_namespaced_job(name, namespace, {"spec": {"suspend": suspended}})


def delete_configmap(namespace: str, name: str) -> None:
    try:
        client.CoreV1Api(api()).delete_namespaced_config_map(name, namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise


def delete_configmaps(namespace: str, selector: str) -> None:
    client.CoreV1Api(api()).delete_collection_namespaced_config_map(namespace, label_selector=selector)


def read_configmap_data(namespace: str, name: str) -> dict[str, str]:
    try:
        return client.CoreV1Api(api()).read_namespaced_config_map(name, namespace).data or {}
    except ApiException as exc:
        if exc.status == 404:
            return {}
        raise


def read_secret_key(namespace: str, name: str, key: str) -> str | None:
    try:
        secret = client.CoreV1Api(api()).read_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    value = (secret.data or {}).get(key)
    return base64.b64decode(value).decode() if value is not None else None


def secret_keys(namespace: str, name: str) -> frozenset[str] | None:
    """The key names of a Secret (never its values), or None when it does not exist."""
    try:
        secret = client.CoreV1Api(api()).read_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return frozenset(secret.data or {}) | frozenset(secret.string_data or {})


def service_account_exists(namespace: str, name: str) -> bool:
    try:
        client.CoreV1Api(api()).read_namespaced_service_account(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def rejection(exc: BaseException) -> str | None:
    """The API server's message when it refused an object as invalid (400/422), else None."""
    if not isinstance(exc, ApiException) or exc.status not in (400, 422):
        return None
    return _server_message(exc)


def _server_message(exc: ApiException) -> str:
    try:
        return json.loads(exc.body).get("message") or str(exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason)


def error_text(exc: BaseException) -> str:
    """One line for any error; an API error as its status and the server's message, not an HTTP dump."""
    if isinstance(exc, ApiException):
        return f"Kubernetes API {exc.status} {exc.reason}: {_server_message(exc)}"
    return " ".join(str(exc).split()) or type(exc).__name__


def read_lease(namespace: str, name: str) -> tuple[dict[str, Any] | None, str | None]:
    """(spec, resourceVersion) of a Lease, or (None, None) when it does not exist."""
    try:
        lease = client.CoordinationV1Api(api()).read_namespaced_lease(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None, None
        raise
    return _plain(lease).get("spec") or {}, lease.metadata.resource_version


def write_lease(namespace: str, name: str, spec: dict[str, Any], resource_version: str | None) -> bool:
    """Create the Lease, or replace it at the version read (compare-and-swap); False when another
    instance wrote it first."""
    body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": spec,
            "metadata": {"name": name, "namespace": namespace,
                         **({"resourceVersion": resource_version} if resource_version else {})}}
    try:
        if resource_version is None:
            client.CoordinationV1Api(api()).create_namespaced_lease(namespace, body)
        else:
            client.CoordinationV1Api(api()).replace_namespaced_lease(name, namespace, body)
    except ApiException as exc:
        if exc.status == 409:
            return False
        raise
    return True


def get_custom(namespace: str, plural: str, name: str) -> dict[str, Any] | None:
    try:
        return client.CustomObjectsApi(api()).get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def list_custom(namespace: str, plural: str) -> list[dict[str, Any]]:
    found = client.CustomObjectsApi(api()).list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
    return list(found.get("items") or [])
