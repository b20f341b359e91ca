"""An inline, non-blocking message bar (never a modal dialog): bad files, device
fallbacks, corrupt settings. Info messages hide themselves; warnings and errors stay until
closed or replaced."""

from __future__ import annotations

from PySide6.QtCore import QRectF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QPainter, QPalette
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QSizePolicy, QToolButton

from mnist_desktop.ui.icons import badge_pixmap, make_icon

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
        self._close.setIcon(make_icon("close"))
        self._close.setIconSize(QSize(16, 16))
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
        accent = LEVEL_COLORS[self._level]
        self._icon.setPixmap(badge_pixmap(accent, "i" if self._level == "info" else "!", 18,
                                          self.devicePixelRatioF()))
        self.update()

    def paintEvent(self, ev) -> None:
        # The tint is computed from the current palette at each paint, so it follows a
        # theme switch without any bookkeeping.
        window = self.palette().color(QPalette.ColorRole.Window)
        accent = LEVEL_COLORS[self._level]
        t = 0.24 if window.lightness() < 128 else 0.15
        bg = QColor(int(window.red() * (1 - t) + accent.red() * t),
                    int(window.green() * (1 - t) + accent.green() * t),
                    int(window.blue() * (1 - t) + accent.blue() * t))
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(bg)
        p.drawRoundedRect(QRectF(self.rect()), 6, 6)
        p.fillRect(QRectF(0, 0, 4, self.height()), accent)
        p.end()
