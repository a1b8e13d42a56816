"""Whether a process named by its PID is running on this machine."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from fmnist import processes


def test_this_process_is_running_and_a_finished_one_is_not():
    assert processes.running(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    assert child.wait() == 0  # reaped: its PID names no process now
    assert not processes.running(child.pid)


@pytest.mark.parametrize("pid", [0, -1, "this process's group", 2**31, 10**12])
def test_a_number_no_process_can_have_is_not_running(pid):
    # 0 and negative numbers would name process groups (this one's among them); the large
    # ones do not fit the system's PIDs.
    if pid == "this process's group":
        pid = -os.getpgid(0)
    assert not processes.running(pid)


def test_a_process_started_after_the_time_given_only_reuses_the_pid():
    before = time.time()
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as child:
        try:
            start = processes.start_time(child.pid)
            assert before - 0.1 <= start <= time.time()
            assert processes.running(child.pid, started_by=time.time())
            # Whatever left that PID behind ran before this child started: not the same process.
            assert not processes.running(child.pid, started_by=before - 60)
            assert processes.running(child.pid)  # without a time, the PID alone
        finally:
            child.kill()
    assert processes.start_time(child.pid) is None  # reaped: no such process
