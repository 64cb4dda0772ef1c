"""The Helm chart's static parts, without helm: Chart.yaml, values.yaml against values.schema.json,
and the CRD copies. Rendering, lint and RBAC are in tests/integration/test_chart.py (real helm)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml
from tributary_operator import crdgen
from tributary_operator.core import ingestion

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "tributary"


def values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def validator() -> jsonschema.Draft7Validator:
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_chart_metadata():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert (chart["apiVersion"], chart["name"], chart["type"]) == ("v2", "tributary", "application")
    assert chart["version"] == chart["appVersion"] == "0.1.0"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"], "the chart's appVersion follows the project's version"


def test_default_image_is_the_operators_default_worker_image():
    image = values()["image"]
    assert f"{image['repository']}:0.1.0" == ingestion.OperatorDefaults.worker_image
    assert values()["worker"]["serviceAccount"]["name"] == ingestion.OperatorDefaults.service_account
    assert values()["metrics"]["port"] == ingestion.OperatorDefaults.metrics_port


def test_default_values_match_the_schema():
    validator().validate(values())


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("watchNamespaces", ["Not_A_Namespace"]),
        ("watchNamespaces", ["a", "a"]),
        ("metrics.port", 0),
        ("metrics.serviceMonitor.interval", "often"),
        ("operator.logFormat", "xml"),
        ("operator.typo", True),
        ("image.digest", "latest"),
        ("worker.serviceAccount.name", ""),
    ],
)
def test_schema_refuses(path, value):
    doc = values()
    *parents, leaf = path.split(".")
    node = doc
    for key in parents:
        node = node[key]
    node[leaf] = value
    with pytest.raises(jsonschema.ValidationError):
        validator().validate(doc)


def test_every_setting_is_commented():
    """values.yaml is the chart's reference: each top-level and first-level key has a comment above
    it, or follows a documented sibling (one comment may cover a group). Deeper keys are the
    Kubernetes fields of their parent (resources, securityContext, ...)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    key = re.compile(r"^( *)([A-Za-z]\w*):")

    def indent(line: str) -> int:
        return len(line) - len(line.lstrip())

    def documented(number: int) -> bool:
        own = indent(lines[number])
        for above in range(number - 1, -1, -1):
            previous = lines[above]
            if not previous.strip() or indent(previous) > own:
                continue  # blank, or a child of the sibling above
            if previous.lstrip().startswith("#"):
                return True
            if indent(previous) == own and key.match(previous) and not previous.rstrip().endswith(":"):
                return documented(above)  # a one-line sibling: its comment covers both
            return False
        return False

    undocumented = [
        line.strip() for number, line in enumerate(lines)
        if (match := key.match(line)) and len(match.group(1)) <= 2 and not documented(number)
    ]  # fmt: skip
    assert not undocumented, f"values.yaml keys without a comment: {undocumented}"


def test_chart_crds_are_identical_to_crds():
    chart_crds = {p.name: p.read_text() for p in (CHART / "crds").iterdir()}
    assert chart_crds == {p.name: p.read_text() for p in (ROOT / "crds").glob("*.yaml")}
    assert chart_crds == crdgen.manifests()
    # helm show crds concatenates the files as they are: each must open its own YAML document.
    assert all(text.startswith("---\n") for text in chart_crds.values())
