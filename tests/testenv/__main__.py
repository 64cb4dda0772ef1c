"""`python -m testenv up|down|status [--data-dir DIR]`: a local Kubernetes for development.

`up` starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler and the process kubelet
in the background (state in .local-cluster/ by default) and applies crds/; `down` stops them and
deletes the folder. With USE_EXISTING_CLUSTER=true nothing is started or stopped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from testenv.control_plane import (
    CLI,
    DEFAULT_DATA_DIR,
    ControlPlaneError,
    KubectlError,
    LocalControlPlane,
    existing_cluster,
    use_existing_cluster,
)


def _shown(path: Path) -> Path:
    """path relative to the working directory when it lies below it, for copy-paste friendly output."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def _up(data_dir: Path) -> int:
    if use_existing_cluster():
        cluster = existing_cluster()
        crds = cluster.apply_crds()
        print(f"USE_EXISTING_CLUSTER=true: nothing started; {len(crds)} CRDs established via {cluster.kubeconfig}")
        return 0
    plane = LocalControlPlane(data_dir, with_kubelet=True)
    if plane.running():
        print(f"already up: {plane.server}")
    else:
        plane.start(detach=True)
        try:
            crds = plane.apply_crds()
        except BaseException:
            plane.stop()
            raise
        timings = ", ".join(f"{name} ready in {seconds:.1f}s" for name, seconds in plane.startup_seconds.items())
        print(f"up: {plane.server} ({timings}); {len(crds)} CRDs established")
    down = "make cluster-down" if plane.data_dir == DEFAULT_DATA_DIR else f"{CLI} down --data-dir {data_dir}"
    print(f"use it:  export KUBECONFIG={_shown(plane.kubeconfig)}; kubectl get nodes,pods,tributary")
    print(f"logs:    {_shown(plane.data_dir)}/*.log; pod logs under {_shown(plane.data_dir / 'kubelet' / 'pods')}/")
    print(f"stop it: {down}")
    return 0


def _down(data_dir: Path) -> int:
    if use_existing_cluster():
        print("USE_EXISTING_CLUSTER=true: nothing was started, nothing to stop")
        return 0
    plane = LocalControlPlane(data_dir)
    if not plane.state_file.exists():
        print(f"not running (no {_shown(plane.state_file)})")
        return 0
    plane.stop()
    print(f"stopped; removed {_shown(plane.data_dir)}")
    return 0


def _status(data_dir: Path) -> int:
    if use_existing_cluster():
        print(f"USE_EXISTING_CLUSTER=true: using {existing_cluster().kubeconfig}")
        return 0
    plane = LocalControlPlane(data_dir)
    if plane.running():
        pids = ", ".join(f"{p.name} pid {p.pid}" for p in plane.processes)
        print(f"up: {plane.server} ({pids}); kubeconfig {_shown(plane.kubeconfig)}")
        return 0
    dead = ", ".join(p.name for p in plane.dead())
    stale = f" ({dead} exited; run `down`)" if dead else (" (stale state left behind: run `down`)"
                                                          if plane.state_file.exists() else "")
    print(f"down{stale}")
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=CLI, description="A local Kubernetes (etcd, apiserver, controller-manager, scheduler, process kubelet)."
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="state folder (default: %(default)s)")
    args = parser.parse_args(argv)
    commands = {"up": _up, "down": _down, "status": _status}
    try:
        return commands[args.command](args.data_dir)
    except (ControlPlaneError, KubectlError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
