"""The augmentation preview: a grid of training samples as the chosen augmentation
presents them, computed by a child process (``mnist-desktop train --config FILE
--preview-augment PNG``) so torch never loads in the GUI process and the GUI thread never
waits for it."""

from __future__ import annotations

import os
import tempfile

from PySide6.QtCore import QObject, QProcess, Signal
from PySide6.QtGui import QPixmap

from mnist_desktop.core.app_command import app_command


class AugmentPreview(QObject):
    """Signals: ``ready(QPixmap)`` with the grid, ``failed(str)`` with a one-line reason."""

    ready = Signal(object)
    failed = Signal(str)

    def __init__(self, parent: QObject | None = None, command=app_command):
        super().__init__(parent)
        self._command = command
        self._proc: QProcess | None = None
        self._files: tuple[str, str] | None = None
        self._again: str | None = None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.state() != QProcess.ProcessState.NotRunning

    def request(self, config_json: str) -> None:
        """Preview this config (a newer request replaces one still being computed)."""
        if self.is_running():
            self._again = config_json
            self._proc.kill()
            return
        fd, cfg_path = tempfile.mkstemp(prefix="mnist-preview-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(config_json)
        png = cfg_path[:-5] + ".png"
        self._files = (cfg_path, png)
        argv = self._command("train", "--config", cfg_path, "--preview-augment", png)
        proc = QProcess(self)
        proc.finished.connect(self._finished)
        proc.errorOccurred.connect(self._error)
        self._proc = proc
        proc.start(argv[0], argv[1:])

    def _error(self, error) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self.failed.emit(f"could not start the preview: {self._proc.errorString()}")
            self._cleanup()

    def _finished(self, code: int, status) -> None:
        again, self._again = self._again, None
        if again is not None:
            self._cleanup()
            self._proc = None
            self.request(again)
            return
        cfg_path, png = self._files or ("", "")
        if code == 0 and status == QProcess.ExitStatus.NormalExit and os.path.exists(png):
            pix = QPixmap(png)
            if not pix.isNull():
                self.ready.emit(pix)
            else:
                self.failed.emit("the preview image could not be read")
        else:
            err = bytes(self._proc.readAllStandardError()).decode("utf-8", "replace").strip().splitlines()
            self.failed.emit((err[-1] if err else f"the preview process exited with code {code}")
                             .removeprefix("training: error: "))
        self._cleanup()

    def _cleanup(self) -> None:
        for p in self._files or ():
            try:
                os.unlink(p)
            except OSError:
                pass
        self._files = None

    def stop(self) -> None:
        self._again = None
        if self.is_running():
            self._proc.kill()
            self._proc.waitForFinished(2000)
