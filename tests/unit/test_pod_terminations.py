"""What a finished Job and its pods tell the operator (core.pods): outcome and termination messages."""

from __future__ import annotations

import pytest
from tributary_operator.core.pods import Termination, job_finished, terminations


def job(*conditions: tuple[str, str]) -> dict:
    return {"status": {"conditions": [{"type": t, "status": s} for t, s in conditions]}}


@pytest.mark.parametrize("conditions,expected", [
    ((), (False, False)),
    ((("SuccessCriteriaMet", "True"),), (True, False)),  # before Complete: the outcome is known
    ((("Complete", "True"),), (True, False)),
    ((("FailureTarget", "True"),), (False, True)),
    ((("Failed", "True"),), (False, True)),
    ((("Failed", "False"), ("Complete", "False")), (False, False)),
])
def test_job_finished_reads_the_outcome_conditions(conditions, expected):
    assert job_finished(job(*conditions)) == expected


def pod(created: str, shard: str | None, *states: dict) -> dict:
    meta = {"creationTimestamp": created}
    if shard is not None:
        meta["annotations"] = {"batch.kubernetes.io/job-completion-index": shard}
    return {"metadata": meta, "status": {"containerStatuses": [{"state": s} for s in states]}}


def test_terminations_oldest_pod_first_with_shard_and_exit_code():
    pods = [
        pod("2026-01-01T00:00:02Z", "1", {"terminated": {"exitCode": 0, "message": ' {"ok": true} \n'}}),
        pod("2026-01-01T00:00:01Z", None, {"terminated": {"exitCode": 3, "message": "trace\nboom: bad model"}}),
        pod("2026-01-01T00:00:03Z", "2", {"running": {}}),  # not terminated: left out
    ]
    assert terminations(pods) == [Termination("0", "trace\nboom: bad model", 3), Termination("1", '{"ok": true}', 0)]


@pytest.mark.parametrize("message,code,limit,expected", [
    ("trace\nboom: bad model", 3, 100, "boom: bad model"),  # a log tail ends with the error
    ("", 137, 100, "exit code 137"),
    ("x" * 50, 1, 10, "x" * 10),
])
def test_the_error_line_of_a_termination(message, code, limit, expected):
    assert Termination("0", message, code).error_line(limit) == expected
