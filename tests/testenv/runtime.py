"""The process kubelet's container runtime: how one container of a Pod becomes something running.

One small interface (`Runtime.start` -> `Container`) so that a later runtime can run the real
image in a local container engine beside this one. `ProcessRuntime` runs the container's
`command` + `args` as a local process in its own session (signals reach its whole process group,
as a runtime stops a whole container), with paths inside the "container" mapped to per-pod host
paths, because processes share the host's filesystem.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .processes import die_with_parent

EXIT_START_ERROR = 128  # what containerd reports for a container that could not be started


class StartError(Exception):
    """The container cannot be started (kubelet's StartError: no command, not on PATH, not executable)."""


@dataclass(frozen=True)
class ContainerLaunch:
    """Everything a runtime needs to start one container, already resolved by the kubelet."""

    name: str
    image: str
    command: list[str]  # command + args after $(VAR) expansion; empty means the image's entrypoint
    env: dict[str, str]
    log_path: Path  # stdout and stderr go here
    work_dir: Path  # the container's private scratch folder on this machine
    # Container path -> host path (terminationMessagePath, emptyDir mounts), both prepared by the
    # kubelet: processes see the host's filesystem, so the values that name them are rewritten.
    path_map: dict[str, Path] = field(default_factory=dict)


class Container(Protocol):
    """One started container."""

    @property
    def pid(self) -> int | None: ...

    def exit_code(self) -> int | None:
        """None while it runs; then its exit status, 128+N when killed by signal N (as containers report)."""

    def signal(self, sig: int) -> None:
        """Signal the whole container (SIGTERM to stop, SIGKILL when the grace period is over)."""


class Runtime(Protocol):
    name: str  # the containerID scheme in Pod status, e.g. process://

    def start(self, launch: ContainerLaunch) -> Container:
        """Start the container or raise StartError saying why it cannot."""


def map_paths(value: str, path_map: dict[str, Path]) -> str:
    """A value naming a mapped container path (or a path below it) names its host path instead."""
    for inside, outside in path_map.items():
        if value == inside:
            return str(outside)
        if value.startswith(inside.rstrip("/") + "/"):
            return str(outside) + value[len(inside.rstrip("/")):]
    return value


class _Process:
    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self._code: int | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid

    def exit_code(self) -> int | None:
        if self._code is None:
            code = self._popen.poll()
            if code is not None:
                self.signal(signal.SIGKILL)  # what it left behind goes with it, as with a container
                self._code = 128 - code if code < 0 else code
        return self._code

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self._popen.pid, sig)
        except ProcessLookupError:
            pass


class ProcessRuntime:
    """Containers as local processes (TEST INFRASTRUCTURE): no image, no isolation, no user switch.

    The command is looked up on the container's PATH (the kubelet puts the virtualenv first).
    Processes die with the thread that started them (PR_SET_PDEATHSIG), so a killed kubelet
    leaves none behind.
    """

    name = "process"

    def start(self, launch: ContainerLaunch) -> Container:
        if not launch.command:
            raise StartError(f"container {launch.name!r} has no command: the process runtime runs no images, "
                             f"so it cannot fall back to {launch.image}'s entrypoint")
        argv = [map_paths(arg, launch.path_map) for arg in launch.command]
        env = {key: map_paths(value, launch.path_map) for key, value in launch.env.items()}
        executable = argv[0] if os.sep in argv[0] else shutil.which(argv[0], path=env.get("PATH", os.defpath))
        if executable is None:
            raise StartError(f'exec: "{argv[0]}": executable file not found in $PATH')
        launch.work_dir.mkdir(parents=True, exist_ok=True)
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        with launch.log_path.open("ab") as output:
            try:
                popen = subprocess.Popen(
                    [executable, *argv[1:]], cwd=launch.work_dir, env=env, stdin=subprocess.DEVNULL,
                    stdout=output, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent,
                )  # fmt: skip
            except OSError as exc:
                raise StartError(f"exec: {argv[0]!r}: {exc.strerror or exc}") from None
        return _Process(popen)
