"""Run background work (batch decoding workers, training runs) below the GUI's priority.

A batch run keeps every core busy; at the same priority the GUI process gets only its
share of the CPU, so strokes on the canvas arrive late and the live prediction lags.
Processes that call :func:`lower_priority` take only the CPU time the GUI leaves idle.
"""

from __future__ import annotations

import os
import sys

# Windows' SetPriorityClass argument, as "nice 10" (below normal, above idle).
BELOW_NORMAL_PRIORITY_CLASS = 0x4000


def lower_priority(niceness: int = 10) -> tuple[str, ...]:
    """Lower the calling process's CPU scheduling priority; never raises.

    Parameters
    ----------
    niceness
        POSIX: added to the process's nice value, as ``nice -n`` (the OS caps the result
        at 19). On Linux the process also moves to the ``SCHED_BATCH`` policy (the
        scheduler then treats it as CPU-bound and lets interactive processes preempt
        it), or with 19 or more to ``SCHED_IDLE`` (it runs only on CPU time nothing
        else wants: a training run started from the GUI). Windows: any positive value sets ``BELOW_NORMAL_PRIORITY_CLASS``. Zero or
        less changes nothing.

    Returns
    -------
    tuple of str
        What was done, one entry per step, e.g. ``("nice 0 -> 10", "SCHED_BATCH")``;
        empty when nothing could be changed.
    """
    if niceness <= 0:
        return ()
    if sys.platform == "win32":
        return _below_normal_windows()
    done: list[str] = []
    if hasattr(os, "nice"):
        try:
            before = os.nice(0)
            done.append(f"nice {before} -> {os.nice(niceness)}")
        except OSError:
            pass
    policies = [("SCHED_IDLE", "SCHED_BATCH")] if niceness >= 19 else [("SCHED_BATCH",)]
    for name in policies[0]:
        policy = getattr(os, name, None)
        if policy is None or not hasattr(os, "sched_setscheduler"):
            continue
        try:
            os.sched_setscheduler(0, policy, os.sched_param(0))
            done.append(name)
            break
        except (OSError, AttributeError, ValueError):   # e.g. refused inside some containers
            continue
    return tuple(done)


def _below_normal_windows() -> tuple[str, ...]:
    try:
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        if kernel32.SetPriorityClass(kernel32.GetCurrentProcess(), BELOW_NORMAL_PRIORITY_CLASS):
            return ("BELOW_NORMAL_PRIORITY_CLASS",)
    except Exception:   # no ctypes, no kernel32: run at normal priority
        pass
    return ()
