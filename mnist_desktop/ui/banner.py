"""An inline, non-blocking message bar (never a modal dialog): bad files, device
fallbacks, corrupt settings. Info messages hide themselves; warnings and errors stay until
closed or replaced."""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QSizePolicy, QToolButton

LEVEL_COLORS = {"info": QColor("#2f6fdb"), "warning": QColor("#d9822b"), "error": QColor("#d64545")}
INFO_TIMEOUT_MS = 8000


class MessageBanner(QFrame):
    """A tinted bar with a message and a close button.

    Signals
    -------
    messageShown(str, str)
        ``(level, text)`` each time a message is shown.
    """

    messageShown = Signal(str, str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("messageBanner")
        self.setAccessibleName("Message")
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setAutoFillBackground(True)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        self._icon = QLabel(self)
        self._icon.setObjectName("messageLevel")
        self._text = QLabel(self)
        self._text.setObjectName("messageText")
        self._text.setAccessibleName("Message text")
        self._text.setWordWrap(True)
        self._text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._close = QToolButton(self)
        self._close.setObjectName("messageClose")
        self._close.setAccessibleName("Dismiss message")
        self._close.setToolTip("Dismiss this message")
        self._close.setText("✕")
        self._close.setAutoRaise(True)
        self._close.clicked.connect(self.dismiss)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(12, 6, 6, 6)
        lay.setSpacing(8)
        lay.addWidget(self._icon)
        lay.addWidget(self._text, 1)
        lay.addWidget(self._close)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.dismiss)
        self._level = "info"
        self.hide()

    @property
    def text(self) -> str:
        return self._text.text()

    @property
    def level(self) -> str:
        return self._level

    def show_message(self, text: str, level: str = "info") -> None:
        """Show ``text``; ``level`` is ``info``, ``warning`` or ``error``."""
        self._level = level if level in LEVEL_COLORS else "info"
        self._text.setText(text)
        self._icon.setText({"info": "ℹ", "warning": "⚠", "error": "⛔"}[self._level])
        self._apply_colors()
        self.show()
        self._timer.stop()
        if self._level == "info":
            self._timer.start(INFO_TIMEOUT_MS)
        self.messageShown.emit(self._level, text)

    def dismiss(self) -> None:
        self._timer.stop()
        self.hide()

    def _apply_colors(self) -> None:
        base = self.parentWidget().palette() if self.parentWidget() else self.palette()
        window = base.color(QPalette.ColorRole.Window)
        accent = LEVEL_COLORS[self._level]
        # A light tint of the level colour over the window colour reads in both themes.
        t = 0.18
        bg = QColor(int(window.red() * (1 - t) + accent.red() * t),
                    int(window.green() * (1 - t) + accent.green() * t),
                    int(window.blue() * (1 - t) + accent.blue() * t))
        pal = QPalette()  # only Window is set; every other role follows the theme
        pal.setColor(QPalette.ColorRole.Window, bg)
        self.setPalette(pal)
        self._icon.setStyleSheet(f"color: {accent.name()}; font-weight: bold;")

    def changeEvent(self, ev) -> None:
        from PySide6.QtCore import QEvent
        if ev.type() == QEvent.Type.ParentChange or ev.type() == QEvent.Type.ApplicationPaletteChange:
            if self.isVisible():
                self._apply_colors()
        super().changeEvent(ev)
