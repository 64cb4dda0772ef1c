"""A container's environment as kubelet builds it: envFrom, env (value with $(VAR) expansion,
secretKeyRef, configMapKeyRef, fieldRef against the real Pod), and $(VAR) in command and args.

Pure but for `read`, which fetches a Secret's or ConfigMap's data (None when it does not exist).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Reader = Callable[[str, str], "dict[str, str] | None"]  # (kind, name) -> data
_REFERENCE = re.compile(r"\$\$|\$\(([^)]*)\)")
_SUBSCRIPTED_FIELD = re.compile(r"metadata\.(labels|annotations)\['(.+)'\]")


class ConfigError(Exception):
    """kubelet's CreateContainerConfigError: a Secret, ConfigMap or key is missing (retried), or a
    reference is one the process kubelet does not support."""


def expand(text: str, variables: dict[str, str]) -> str:
    """kubelet's $(VAR) expansion: defined names are replaced, unknown ones kept, $$ escapes a $."""

    def replace(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        return variables.get(match[1], match[0])

    return _REFERENCE.sub(replace, text)


def field_value(pod: dict[str, Any], path: str) -> str:
    """A fieldRef, resolved against the Pod object itself (the Job controller's
    JOB_COMPLETION_INDEX is one: an annotation fieldRef; resolving it wrong makes every shard 0)."""
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
    subscripted = _SUBSCRIPTED_FIELD.fullmatch(path)
    if subscripted:
        values = meta.get(subscripted[1]) or {}
        return values.get(subscripted[2], "")
    known = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta["uid"],
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": status.get("podIP", "127.0.0.1"),
        "status.hostIP": status.get("hostIP", "127.0.0.1"),
        "status.podIPs": status.get("podIP", "127.0.0.1"),
        "status.hostIPs": status.get("hostIP", "127.0.0.1"),
    }
    if path not in known:
        raise ConfigError(f"fieldRef {path!r} is not supported by the process kubelet")
    return known[path]


def container_env(pod: dict[str, Any], container: dict[str, Any], read: Reader) -> dict[str, str]:
    """envFrom first, then env in order, each value's $(VAR) expanded with the variables before it."""
    variables: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        kind, ref = ("Secret", source["secretRef"]) if "secretRef" in source else ("ConfigMap", source["configMapRef"])
        data = read(kind, ref["name"])
        if data is None:
            if ref.get("optional"):
                continue
            raise ConfigError(f'{kind.lower()} "{ref["name"]}" not found')
        variables.update({source.get("prefix", "") + key: value for key, value in data.items()})
    for var in container.get("env") or []:
        if "valueFrom" in var:
            value = _value_from(var["valueFrom"], pod, read)
            if value is None:  # an optional reference to something missing: left unset
                continue
        else:
            value = expand(var.get("value", ""), variables)
        variables[var["name"]] = value
    return variables


def command_line(container: dict[str, Any], variables: dict[str, str]) -> list[str]:
    """command + args with $(VAR) expanded; empty when the container relies on its image's entrypoint."""
    return [expand(arg, variables) for arg in [*(container.get("command") or []), *(container.get("args") or [])]]


def _value_from(source: dict[str, Any], pod: dict[str, Any], read: Reader) -> str | None:
    if "fieldRef" in source:
        return field_value(pod, source["fieldRef"]["fieldPath"])
    for key, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
        if key in source:
            ref = source[key]
            data = read(kind, ref["name"])
            if data is not None and ref["key"] in data:
                return data[ref["key"]]
            if ref.get("optional"):
                return None
            if data is None:
                raise ConfigError(f'{kind.lower()} "{ref["name"]}" not found')
            raise ConfigError(f"couldn't find key {ref['key']} in {kind} {pod['metadata']['namespace']}/{ref['name']}")
    raise ConfigError(f"valueFrom {', '.join(source)} is not supported by the process kubelet")
