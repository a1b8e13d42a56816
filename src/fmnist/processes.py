"""Processes on this machine, named by their PIDs.

A PID is reused once its process is gone: a number recorded by a writer that was killed can name
an unrelated process started later. Where the caller knows a time by which its process had
started (a file it wrote, a trial it began), `running` uses the process's start time to tell
the two apart; that needs Linux's /proc, and elsewhere a reused PID still reads as running,
which keeps what it guards (a partial write, a trial) rather than losing it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

# The start time is read against the clock, to within a clock tick or two (10-20 ms); a start
# this close after `started_by` is not taken as proof of another process.
START_SLACK_S = 1.0


def start_time(pid: int) -> float | None:
    """When the process `pid` started, in seconds since the epoch, or None where /proc cannot
    say (no such process, or not Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        # The fields after the command name, which is in parentheses and may itself hold spaces
        # and parentheses: the 22nd field of the line, the start in clock ticks since boot, is
        # the 20th of these.
        ticks = int(stat.rpartition(")")[2].split()[19])
    except (OSError, IndexError, ValueError):
        return None
    # /proc/stat's boot time is whole seconds; now minus the uptime is the boot to the tick.
    return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")


def running(pid: int, *, started_by: float | None = None) -> bool:
    """Whether a process with this PID is running on this machine, whoever owns it.

    With `started_by` (seconds since the epoch), only a process that had started by then counts:
    one started later has only inherited the number. A number no process can have is not
    running: 0 and negative numbers, which `os.kill` reads as process groups, and numbers too
    large for the system's PIDs.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0 sends nothing: it only checks that the process exists
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's process
        pass
    if started_by is not None:
        start = start_time(pid)
        if start is not None and start > started_by + START_SLACK_S:
            return False
    return True
