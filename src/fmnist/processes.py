"""Processes on this machine, named by their PIDs."""

from __future__ import annotations

import os


def running(pid: int) -> bool:
    """Whether a process with this PID is running on this machine, whoever owns it.

    A number no process can have is not running: 0 and negative numbers, which `os.kill` reads
    as process groups, and numbers too large for the system's PIDs.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0 sends nothing: it only checks that the process exists
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's process
        return True
    return True
