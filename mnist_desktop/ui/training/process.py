"""A training run as a child process of the app itself (``mnist-desktop train ...``).

The child is started through :func:`~mnist_desktop.core.app_command.app_command`, so the
packaged program (which has no system Python) trains by running itself. It prints one JSON
event per line on stdout (``--progress-json``, protocol in :mod:`training.events`) and
reads ``cancel`` on stdin (``--control-stdin``). It runs below the GUI's CPU priority
(``--nice``) with one torch thread fewer than the machine has, so the live canvas keeps
a core. Whatever the child does — crash, NaN, out of memory, killed — the app only
sees signals.
"""

from __future__ import annotations

import json
import os

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal

from mnist_desktop.core.app_command import app_command

_NOT_RUNNING = QProcess.ProcessState.NotRunning
_CRASH = QProcess.ExitStatus.CrashExit
_STDERR_KEEP = 16_000     # the tail of the child's stderr kept for the failure message
KILL_AFTER_MS = 5000      # a cancelled child that has not exited by then is killed


def training_threads() -> int:
    """torch threads for a run started from the GUI: all cores but one (the canvas's)."""
    return max(1, (os.cpu_count() or 1) - 1)


class TrainingProcess(QObject):
    """One ``mnist-desktop train`` child. Signals:

    * ``event(dict)`` — each parsed JSON-lines event, in order;
    * ``output(str)`` — a stdout line that is not an event (shown in a log);
    * ``failed(str)`` — the child died without a ``finished``/``cancelled``/``failed``
      event (crash, killed, could not start); the message ends with its stderr tail;
    * ``finished(int)`` — the exit code, always last (also after ``failed``).
    """

    event = Signal(object)
    output = Signal(str)
    failed = Signal(str)
    finished = Signal(int)

    def __init__(self, parent: QObject | None = None, command=app_command) -> None:
        super().__init__(parent)
        self._command = command
        self._proc: QProcess | None = None
        self._buf = b""
        self._stderr = b""
        self._ended = False          # a terminal event arrived
        self._cancelling = False
        self._kill_timer = QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.timeout.connect(self._kill)

    # ------------------------------------------------------------------ control
    def start(self, train_args: list[str], *, threads: int | None = None, nice: int = 10) -> None:
        if self.is_running():
            raise RuntimeError("a training run is already running")
        args = list(train_args) + ["--progress-json", "--control-stdin"]
        if "--threads" not in args:
            args += ["--threads", str(threads or training_threads())]
        if nice > 0 and "--nice" not in args:
            args += ["--nice", str(nice)]
        argv = self._command("train", *args)
        proc = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        proc.setProcessEnvironment(env)
        proc.readyReadStandardOutput.connect(self._read_stdout)
        proc.readyReadStandardError.connect(self._read_stderr)
        proc.finished.connect(self._on_finished)
        proc.errorOccurred.connect(self._on_error)
        self._proc, self._buf, self._stderr = proc, b"", b""
        self._ended = self._cancelling = False
        proc.start(argv[0], argv[1:])

    def cancel(self) -> None:
        """Ask the run to stop now (it saves its state and best checkpoint, then exits);
        a child that does not exit within :data:`KILL_AFTER_MS` is killed."""
        proc = self._proc
        if proc is None or proc.state() == _NOT_RUNNING:
            return
        self._cancelling = True
        proc.write(b"cancel\n")
        self._kill_timer.start(KILL_AFTER_MS)

    def kill(self) -> None:
        self._kill()

    def pid(self) -> int:
        """The child's process id (0 when none runs)."""
        return int(self._proc.processId()) if self.is_running() else 0

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.state() != _NOT_RUNNING

    def wait(self, msecs: int = 30000) -> bool:
        """Block until the child exits (tests, app shutdown)."""
        return self._proc is None or self._proc.waitForFinished(msecs)

    # ------------------------------------------------------------------ child output
    def _read_stdout(self) -> None:
        self._buf += bytes(self._proc.readAllStandardOutput())
        *lines, self._buf = self._buf.split(b"\n")
        for raw in lines:
            self._line(raw)

    def _line(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").strip()
        if not text:
            return
        try:
            ev = json.loads(text)
        except ValueError:
            self.output.emit(text)
            return
        if not isinstance(ev, dict) or "type" not in ev:
            self.output.emit(text)
            return
        if ev["type"] in ("finished", "cancelled", "failed"):
            self._ended = True
        self.event.emit(ev)

    def _read_stderr(self) -> None:
        self._stderr = (self._stderr + bytes(self._proc.readAllStandardError()))[-_STDERR_KEEP:]

    def _stderr_tail(self, lines: int = 6) -> str:
        tail = self._stderr.decode("utf-8", "replace").strip().splitlines()[-lines:]
        return "\n".join(tail)

    def _on_error(self, error) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self._ended = True
            self.failed.emit(f"could not start the training process: {self._proc.errorString()}")
            self.finished.emit(-1)

    def _on_finished(self, code: int, status) -> None:
        self._kill_timer.stop()
        if self._buf:
            self._line(self._buf)
            self._buf = b""
        if self._proc is not None:
            self._stderr = (self._stderr + bytes(self._proc.readAllStandardError()))[-_STDERR_KEEP:]
        if not self._ended:
            if status == _CRASH or code < 0:
                why = "the training process was killed" if self._cancelling else "the training process crashed"
            else:
                why = f"the training process exited with code {code} without a result"
            tail = self._stderr_tail()
            self.failed.emit(why + (f":\n{tail}" if tail else ""))
        self.finished.emit(code if status != _CRASH else -1)

    def _kill(self) -> None:
        if self._proc is not None and self._proc.state() != _NOT_RUNNING:
            self._proc.kill()
