"""Intra-op threads follow the container's CPU quota (cgroup v2 cpu.max, v1 cfs files), not the host."""

from __future__ import annotations

from tributary_workers.pipeline.threads import cgroup_cpu_limit, intra_op_threads


def test_cgroup_v2_quota(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None


def test_cgroup_v1_quota_and_unlimited(tmp_path):
    cpu = tmp_path / "cpu"
    cpu.mkdir()
    (cpu / "cpu.cfs_quota_us").write_text("300000\n")
    (cpu / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path) == 3.0
    (cpu / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(tmp_path) is None


def test_no_cgroup_files_or_garbage_mean_unknown(tmp_path):
    assert cgroup_cpu_limit(tmp_path) is None
    (tmp_path / "cpu.max").write_text("lots\n")
    assert cgroup_cpu_limit(tmp_path) is None


def test_threads_round_the_quota_up_and_never_exceed_the_cpus():
    assert intra_op_threads(limit=1.5, cpus=64) == 2
    assert intra_op_threads(limit=0.25, cpus=64) == 1
    assert intra_op_threads(limit=2.0, cpus=64) == 2
    assert intra_op_threads(limit=32.0, cpus=4) == 4
