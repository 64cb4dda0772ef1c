"""The process kubelet's pure parts (tests/testenv): Pod phase, restart back-off, termination
messages, conditions, environment building and path mapping."""

from pathlib import Path

import pytest
from testenv.podenv import ConfigError, command_line, container_env, expand, field_value
from testenv.podstatus import (
    ContainerView,
    backoff_delay,
    pod_conditions,
    pod_phase,
    restart_wanted,
    terminated_reason,
    termination_message,
)
from testenv.runtime import map_paths

RUNNING = ContainerView(running=True, exit_code=None, will_restart=False)
NEVER_RAN = ContainerView(running=False, exit_code=None, will_restart=False)
START_ERROR = ContainerView(running=False, exit_code=128, will_restart=False)
OK = ContainerView(running=False, exit_code=0, will_restart=False)
FAILED = ContainerView(running=False, exit_code=1, will_restart=False)
RESTARTING = ContainerView(running=False, exit_code=1, will_restart=True)


@pytest.mark.parametrize(("containers", "phase"), [
    ([NEVER_RAN], "Pending"),
    ([RUNNING], "Running"),
    ([RESTARTING], "Running"),  # CrashLoopBackOff is still Running
    ([OK], "Succeeded"),
    ([FAILED], "Failed"),
    ([START_ERROR], "Failed"),
    ([OK, RUNNING], "Running"),
    ([OK, FAILED], "Failed"),
    ([OK, NEVER_RAN], "Pending"),  # kubelet: a container not started yet keeps the Pod Pending
])
def test_pod_phase(containers, phase):
    assert pod_phase(containers) == phase


@pytest.mark.parametrize(("policy", "code", "restart"), [
    ("Always", 0, True), ("Always", 1, True), ("OnFailure", 0, False), ("OnFailure", 137, True),
    ("Never", 1, False), ("Never", 0, False),
])
def test_restart_policy(policy, code, restart):
    assert restart_wanted(policy, code) is restart


def test_back_off_is_immediate_then_doubles_from_10_s_to_5_min():
    assert [backoff_delay(n) for n in range(7)] == [0, 10, 20, 40, 80, 160, 300]


@pytest.mark.parametrize(("code", "start_error", "reason"), [(0, False, "Completed"), (2, False, "Error"),
                                                              (137, False, "Error"), (128, True, "StartError")])
def test_terminated_reason(code, start_error, reason):
    assert terminated_reason(code, start_error) == reason


def test_termination_message_from_the_file_or_the_log_tail(tmp_path: Path):
    message, log = tmp_path / "message", tmp_path / "log"
    log.write_text("".join(f"line {i}\n" for i in range(100)) + "error: boom\n")
    message.write_text("")
    assert termination_message(message, log, "File", 1) == ""
    assert termination_message(message, log, "FallbackToLogsOnError", 0) == ""
    fallback = termination_message(message, log, "FallbackToLogsOnError", 1)
    assert fallback.endswith("error: boom") and len(fallback.splitlines()) == 80
    message.write_text("x" * 5000)
    assert termination_message(message, log, "FallbackToLogsOnError", 1) == "x" * 4096


def test_conditions_keep_their_transition_time_while_unchanged():
    first = pod_conditions("Running", True, "t1", [])
    assert {c["type"]: c["status"] for c in first} == {
        "PodReadyToStartContainers": "True", "Initialized": "True", "ContainersReady": "True", "Ready": "True"}
    again = pod_conditions("Running", True, "t2", first)
    assert again == first
    done = {c["type"]: c for c in pod_conditions("Succeeded", False, "t3", first)}
    assert (done["Ready"]["status"], done["Ready"]["lastTransitionTime"], done["Ready"]["reason"]) == (
        "False", "t3", "PodCompleted")
    assert done["Initialized"]["lastTransitionTime"] == "t1"


POD = {"metadata": {"name": "ingest-1-abcde", "namespace": "rag", "uid": "u-1", "labels": {"app": "w"},
                    "annotations": {"batch.kubernetes.io/job-completion-index": "1"}},
       "spec": {"nodeName": "process-kubelet", "serviceAccountName": "tributary-worker"},
       "status": {"podIP": "127.0.0.1"}}


def test_field_refs_resolve_against_the_real_pod():
    assert field_value(POD, "metadata.annotations['batch.kubernetes.io/job-completion-index']") == "1"
    assert field_value(POD, "metadata.labels['app']") == "w"
    assert field_value(POD, "metadata.labels['absent']") == ""
    assert field_value(POD, "spec.serviceAccountName") == "tributary-worker"
    with pytest.raises(ConfigError, match="not supported"):
        field_value(POD, "status.qosClass")


def test_environment_is_built_as_kubelet_builds_it():
    data = {("ConfigMap", "cfg"): {"mode": "fast"}, ("Secret", "creds"): {"token": "s3cret"}}

    def read(kind, name):
        return data.get((kind, name))

    container = {
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"},
                    {"secretRef": {"name": "gone", "optional": True}}],
        "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
                {"name": "ECHO", "value": "$(CFG_mode)-$(UNDEFINED)-$$(CFG_mode)"},
                {"name": "INDEX", "valueFrom": {"fieldRef": {
                    "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}},
                {"name": "ABSENT", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "nope", "optional": True}}}],
        "command": ["worker", "--mode=$(CFG_mode)"], "args": ["$(INDEX)"],
    }
    env = container_env(POD, container, read)
    assert env == {"CFG_mode": "fast", "TOKEN": "s3cret", "ECHO": "fast-$(UNDEFINED)-$(CFG_mode)", "INDEX": "1"}
    assert command_line(container, env) == ["worker", "--mode=fast", "1"]
    with pytest.raises(ConfigError, match='secret "missing" not found'):
        container_env(POD, {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "missing", "key": "k"}}}]},
                      read)
    assert expand("$$", {}) == "$"


def test_container_paths_map_to_per_pod_host_paths():
    path_map = {"/dev/termination-log": Path("/p/0.termination-log"), "/var/lib/tributary": Path("/p/volumes/state")}
    assert map_paths("/dev/termination-log", path_map) == "/p/0.termination-log"
    assert map_paths("/var/lib/tributary/ledger.sqlite", path_map) == "/p/volumes/state/ledger.sqlite"
    assert map_paths("/var/lib/tributary-other", path_map) == "/var/lib/tributary-other"
    assert map_paths("--report-file=/dev/termination-log", path_map) == "--report-file=/dev/termination-log"
