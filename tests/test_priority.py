"""lower_priority(): background processes run below the GUI's priority and say what they did."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not hasattr(os, "nice"), reason="nice values are POSIX")
def test_lower_priority_nices_the_calling_process():
    # In a child: lowering this test process's priority could not be undone.
    code = ("import json, os\n"
            "from mnist_desktop.core.priority import lower_priority\n"
            "before = os.nice(0)\n"
            "none = lower_priority(0)\n"
            "unchanged = os.nice(0)\n"
            "done = lower_priority(3)\n"
            "policy = os.sched_getscheduler(0) if hasattr(os, 'sched_getscheduler') else None\n"
            "print(json.dumps([before, none, unchanged, done, os.nice(0), policy]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    before, none, unchanged, done, after, policy = json.loads(out.stdout)
    assert none == [] and unchanged == before
    assert after == min(19, before + 3)
    assert done[0] == f"nice {before} -> {after}"
    if hasattr(os, "SCHED_BATCH"):
        assert policy == os.SCHED_BATCH and done[1:] == ["SCHED_BATCH"]


@pytest.mark.skipif(sys.platform == "win32", reason="the POSIX calls")
def test_lower_priority_never_raises(monkeypatch):
    from mnist_desktop.core import priority

    def refused(*args):
        raise PermissionError("not allowed")

    monkeypatch.setattr(os, "nice", refused, raising=False)
    monkeypatch.setattr(os, "sched_setscheduler", refused, raising=False)
    assert priority.lower_priority(10) == ()


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
def test_lowest_priority_is_sched_idle():
    # A training run started from the GUI (--nice 19) only gets CPU time nothing else wants.
    code = ("import json, os\n"
            "from mnist_desktop.core.priority import lower_priority\n"
            "done = lower_priority(19)\n"
            "print(json.dumps([done, os.sched_getscheduler(0), os.nice(0)]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    done, policy, nice = json.loads(out.stdout)
    assert nice == 19 and policy == os.SCHED_IDLE and done[-1] == "SCHED_IDLE"
