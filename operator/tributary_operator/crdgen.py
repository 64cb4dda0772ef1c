"""Generate the CRD manifests in crds/ from the pydantic models in tributary_operator.api.

    python -m tributary_operator.crdgen crds/           # write the manifests
    python -m tributary_operator.crdgen --check crds/   # exit 1 with a diff if they drifted

The Helm chart installs the same CRDs from its own crds/ folder, so when the output folder sits next
to ``charts/tributary`` (the repository layout) the chart gets identical copies, and ``--check``
checks both: the models stay the one source of truth.

Pydantic emits JSON Schema (2020-12 flavoured); the API server wants a *structural* OpenAPI v3
schema. ``structural_schema`` bridges the two: it inlines every ``$ref``, turns ``Optional[X]``
(``anyOf`` with null) into plain ``X`` (optional simply means "not required"), maps ``int | str``
to ``x-kubernetes-int-or-string`` and free-form ``dict[str, Any]`` to
``x-kubernetes-preserve-unknown-fields``, and drops what Kubernetes rejects or ignores (titles,
``additionalProperties: false``, null defaults). Anything else it does not know raises, so a model
change that would produce an invalid CRD fails here rather than at ``kubectl apply``.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml


class _NoAliasDumper(yaml.SafeDumper):
    """Repeated sub-schemas are written out in full: anchors (&id001) read poorly in a CRD."""

    def ignore_aliases(self, data):
        return True

from tributary_operator.api.v1alpha1 import (
    CATEGORY,
    GROUP,
    RESOURCES,
    VERSION,
    CustomResource,
)

# The chart's CRD folder, relative to the parent of the output folder (the repository root).
CHART_CRDS = Path("charts") / "tributary" / "crds"

# The leading document marker: `helm show crds` joins the chart's CRD files as they are, so without
# it `helm show crds | kubectl apply -f -` would see one document with duplicate keys.
HEADER = (
    "---\n"
    "# Generated from operator/tributary_operator/api/v1alpha1/ by\n"
    "# `python -m tributary_operator.crdgen crds/` (make crds). Do not edit by hand.\n"
)

# The JSONSchemaProps fields the generated schemas may use; anything else is a generator bug.
ALLOWED_KEYS = frozenset(
    {
        "type", "format", "description", "default", "enum", "pattern",
        "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
        "minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties",
        "properties", "required", "items", "additionalProperties",
        "x-kubernetes-validations", "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-int-or-string", "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
        "x-kubernetes-map-type",
    }
)  # fmt: skip


def structural_schema(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Convert one pydantic JSON schema node (and everything below it) to a structural schema.

    ``defs`` are the ``$defs`` of the document the node came from. Keys are sorted for stable
    output, except ``properties``, which keep the model's field order.
    """
    defs = schema.get("$defs", {}) if defs is None else defs
    node = {key: value for key, value in schema.items() if key not in ("$defs", "title")}

    if "$ref" in node:  # the referencing field's own keys (description, default) win
        target = defs[node.pop("$ref").removeprefix("#/$defs/")]
        return structural_schema({**target, **node}, defs)
    if "anyOf" in node:
        return structural_schema(_collapse_union(node), defs)

    if "description" in node:
        node["description"] = _one_line(node["description"])
    if node.get("default", ...) is None:
        del node["default"]
    elif "default" in node:
        node["default"] = _without_nulls(node["default"])

    extra = node.pop("additionalProperties", None)
    if extra is True:
        node["x-kubernetes-preserve-unknown-fields"] = True
    elif isinstance(extra, dict):
        node["additionalProperties"] = structural_schema(extra, defs)

    for bound, inclusive in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(bound), int | float) and not isinstance(node[bound], bool):
            node[inclusive], node[bound] = node[bound], True  # OpenAPI v3.0 form

    if "properties" in node:
        node["properties"] = {
            name: structural_schema(prop, defs) for name, prop in node["properties"].items()
        }
    if "items" in node:
        node["items"] = structural_schema(node["items"], defs)

    unknown = set(node) - ALLOWED_KEYS
    if unknown:
        raise ValueError(f"schema keys not allowed in a CRD: {sorted(unknown)} in {node}")
    return dict(sorted(node.items()))


def _collapse_union(node: dict[str, Any]) -> dict[str, Any]:
    """``X | None`` becomes X; ``int | str`` becomes int-or-string; other unions are refused."""
    branches = [branch for branch in node.pop("anyOf") if branch.get("type") != "null"]
    if len(branches) == 1:
        return {**branches[0], **node}
    if sorted(branch.get("type", "") for branch in branches) == ["integer", "string"]:
        # A string branch's pattern (e.g. a Kubernetes quantity) still applies to string values.
        pattern = next((b["pattern"] for b in branches if b.get("type") == "string" and "pattern" in b), None)
        return {**node, **({"pattern": pattern} if pattern else {}), "x-kubernetes-int-or-string": True}
    raise ValueError(f"unions other than Optional[X] and int | str are not structural: {branches}")


def _one_line(text: str) -> str:
    """Docstrings wrap; kubectl explain re-wraps anyway, so store descriptions as one line."""
    return " ".join(text.split())


def _without_nulls(value: Any) -> Any:
    """Drop unset (None) fields from a default object: a CRD default may not contain nulls."""
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    return value


def openapi_schema(resource: type[CustomResource]) -> dict[str, Any]:
    """The openAPIV3Schema of one kind: the standard envelope plus the model's spec and status."""
    schema = resource.model_json_schema(by_alias=True)
    props = schema["properties"]

    def described(name: str, type_: str) -> dict[str, Any]:
        return {"description": _one_line(props[name]["description"]), "type": type_}

    root = {
        "description": _one_line(schema["description"]),
        "properties": {
            "apiVersion": described("apiVersion", "string"),
            "kind": described("kind", "string"),
            "metadata": {"type": "object"},  # the API server allows nothing more on metadata
            "spec": structural_schema(props["spec"], schema["$defs"]),
            "status": structural_schema(props["status"], schema["$defs"]),
        },
        "required": ["spec"],
        "type": "object",
    }
    if "x-kubernetes-validations" in schema:  # rules on the whole object, e.g. metadata.name's length
        root["x-kubernetes-validations"] = schema["x-kubernetes-validations"]
    return root


def crd_manifest(resource: type[CustomResource]) -> dict[str, Any]:
    names = resource.crd
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": names.crd_name,
            "labels": {"app.kubernetes.io/part-of": "tributary"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": names.kind,
                "listKind": f"{names.kind}List",
                "plural": names.plural,
                "singular": names.singular,
                "shortNames": list(names.short_names),
                "categories": [CATEGORY],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {
                            "name": column.name,
                            "type": column.type,
                            "jsonPath": column.json_path,
                            "description": column.description,
                            **({"priority": column.priority} if column.priority else {}),
                        }
                        for column in names.printer_columns
                    ],
                    "schema": {"openAPIV3Schema": openapi_schema(resource)},
                }
            ],
        },
    }


def render(resource: type[CustomResource]) -> str:
    body = yaml.dump(crd_manifest(resource), Dumper=_NoAliasDumper, sort_keys=False, width=100, allow_unicode=True)
    return HEADER + body


def manifests() -> dict[str, str]:
    """File name to YAML text, for every kind."""
    return {f"{resource.crd.crd_name}.yaml": render(resource) for resource in RESOURCES}


def drift(out_dir: Path) -> list[str]:
    """Unified diffs between the committed files in ``out_dir`` and freshly generated ones."""
    wanted = manifests()
    diffs = []
    for name, text in wanted.items():
        path = out_dir / name
        current = path.read_text() if path.exists() else ""
        if current != text:
            diffs.append(
                "".join(
                    difflib.unified_diff(
                        current.splitlines(keepends=True),
                        text.splitlines(keepends=True),
                        fromfile=str(path),
                        tofile=f"{path} (generated)",
                    )
                )
            )
    for stale in sorted(out_dir.glob(f"*.{GROUP}.yaml")):
        if stale.name not in wanted:
            diffs.append(f"{stale}: no model generates this file any more\n")
    return diffs


def chart_crds(out_dir: Path) -> Path | None:
    """The chart's crds/ folder next to ``out_dir``, when there is a chart (its Chart.yaml) there."""
    folder = out_dir.resolve().parent / CHART_CRDS
    return folder if (folder.parent / "Chart.yaml").is_file() else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tributary_operator.crdgen", description=__doc__.splitlines()[0]
    )
    parser.add_argument("out_dir", nargs="?", default="crds", type=Path, help="CRD folder")
    parser.add_argument("--check", action="store_true", help="exit 1 with a diff on drift")
    args = parser.parse_args(argv)
    folders = [args.out_dir, *filter(None, [chart_crds(args.out_dir)])]

    if args.check:
        stale = [(folder, diffs) for folder in folders if (diffs := drift(folder))]
        for folder, diffs in stale:
            sys.stdout.write("".join(diffs))
            print(f"CRDs in {folder} are out of date: run `make crds`.", file=sys.stderr)
        return 1 if stale else 0

    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in manifests().items():
            (folder / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
