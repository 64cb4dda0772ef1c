from tributary_operator.core.conditions import (
    ConditionSpec,
    merge_conditions,
    status_patch,
)


def test_transition_time_changes_only_when_status_flips():
    first = merge_conditions(None, [ConditionSpec("Ready", False, "Starting", "booting")], 1, now="T1")
    assert first == [{"type": "Ready", "status": "False", "reason": "Starting", "message": "booting",
                      "lastTransitionTime": "T1", "observedGeneration": 1}]
    reworded = merge_conditions(first, [ConditionSpec("Ready", False, "Waiting", "still booting")], 2, now="T2")
    assert reworded[0]["lastTransitionTime"] == "T1" and reworded[0]["reason"] == "Waiting"
    assert reworded[0]["observedGeneration"] == 2
    flipped = merge_conditions(reworded, [ConditionSpec("Ready", True, "Up")], 2, now="T3")
    assert flipped[0]["lastTransitionTime"] == "T3" and flipped[0]["status"] == "True"


def test_other_condition_types_are_kept_in_order():
    current = [{"type": "A", "status": "True"}, {"type": "B", "status": "False"}]
    merged = merge_conditions(current, [ConditionSpec("C", None, "Unknown"), ConditionSpec("A", True, "x")], 1, "T")
    assert [c["type"] for c in merged] == ["A", "B", "C"]
    assert merged[1] == {"type": "B", "status": "False"}
    assert merged[2]["status"] == "Unknown"


def test_status_patch_skips_no_ops_and_deletes_with_none():
    current = {"phase": "Running", "shards": [{"index": 0, "documentsDone": 3}], "activeRun": "r1"}
    assert status_patch(current, {"phase": "Running", "shards": [{"index": 0, "documentsDone": 3}]}) == {}
    assert status_patch(current, {"phase": "Succeeded", "activeRun": None, "jobName": None}) == {
        "phase": "Succeeded", "activeRun": None}
    assert status_patch(current, {"shards": [{"index": 0, "documentsDone": 4}]}) == {
        "shards": [{"index": 0, "documentsDone": 4}]}
    same_conditions = merge_conditions(None, [ConditionSpec("Ready", True, "Up")], 1, now="T1")
    again = merge_conditions(same_conditions, [ConditionSpec("Ready", True, "Up")], 1, now="T2")
    assert status_patch({"conditions": same_conditions}, {"conditions": again}) == {}
