"""Toolbar and menu icons drawn as vectors by a QIconEngine: painted on demand at the
exact size and device pixel ratio (crisp on high-DPI screens), in the current palette's
button-text colour (so they follow the light/dark theme), without image files."""

from __future__ import annotations

from PySide6.QtCore import QPoint, QPointF, QRect, QRectF, QSize, Qt
from PySide6.QtGui import (QColor, QGuiApplication, QIcon, QIconEngine, QPainter, QPainterPath, QPalette,
                           QPen, QPixmap)


class VectorIconEngine(QIconEngine):
    """Paints the icon ``name`` (see ``_DRAW``) on a 24x24 design grid."""

    def __init__(self, name: str):
        super().__init__()
        self._name = name

    def paint(self, painter: QPainter, rect: QRect, mode: QIcon.Mode, state: QIcon.State) -> None:
        group = QPalette.ColorGroup.Disabled if mode == QIcon.Mode.Disabled else QPalette.ColorGroup.Normal
        color = QGuiApplication.palette().color(group, QPalette.ColorRole.ButtonText)
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.translate(rect.topLeft())
        painter.scale(rect.width() / 24.0, rect.height() / 24.0)
        painter.setPen(QPen(color, 1.8, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap, Qt.PenJoinStyle.RoundJoin))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        _DRAW[self._name](painter, color)
        painter.restore()

    def pixmap(self, size: QSize, mode: QIcon.Mode, state: QIcon.State) -> QPixmap:
        return self.scaledPixmap(size, mode, state, 1.0)

    def scaledPixmap(self, size: QSize, mode: QIcon.Mode, state: QIcon.State, scale: float) -> QPixmap:
        pm = QPixmap(size * scale)
        pm.setDevicePixelRatio(scale)
        pm.fill(Qt.GlobalColor.transparent)
        p = QPainter(pm)
        self.paint(p, QRect(QPoint(0, 0), size), mode, state)
        p.end()
        return pm

    def clone(self) -> "VectorIconEngine":
        return VectorIconEngine(self._name)

    def key(self) -> str:
        return "mnist-desktop-vector"


def make_icon(name: str) -> QIcon:
    """The icon called ``name``; one of :data:`NAMES`."""
    if name not in _DRAW:
        raise KeyError(f"no icon named {name!r}")
    return QIcon(VectorIconEngine(name))


def _pen(p: QPainter, c: QColor) -> None:
    path = QPainterPath(QPointF(4, 20))
    path.lineTo(5, 15.5)
    path.lineTo(15.5, 5)
    path.lineTo(19, 8.5)
    path.lineTo(8.5, 19)
    path.closeSubpath()
    p.drawPath(path)
    p.drawLine(QPointF(13.5, 7), QPointF(17, 10.5))


def _eraser(p: QPainter, c: QColor) -> None:
    p.save()
    p.translate(12, 11)
    p.rotate(-45)
    p.drawRoundedRect(QRectF(-8, -4.5, 16, 9), 1.5, 1.5)
    p.drawLine(QPointF(-2, -4.5), QPointF(-2, 4.5))
    p.restore()
    p.drawLine(QPointF(9, 20), QPointF(20, 20))


def _arrow(p: QPainter, mirror: bool) -> None:
    p.save()
    if mirror:
        p.translate(24, 0)
        p.scale(-1, 1)
    path = QPainterPath(QPointF(5, 10))
    path.lineTo(15, 10)
    path.cubicTo(22, 10, 22, 19, 15, 19)
    path.lineTo(10, 19)
    p.drawPath(path)
    p.drawLine(QPointF(5, 10), QPointF(9, 6))
    p.drawLine(QPointF(5, 10), QPointF(9, 14))
    p.restore()


def _trash(p: QPainter, c: QColor) -> None:
    p.drawLine(QPointF(4.5, 6.5), QPointF(19.5, 6.5))
    p.drawLine(QPointF(9.5, 6.5), QPointF(10, 4))
    p.drawLine(QPointF(10, 4), QPointF(14, 4))
    p.drawLine(QPointF(14, 4), QPointF(14.5, 6.5))
    path = QPainterPath(QPointF(6.5, 6.5))
    path.lineTo(7.5, 20)
    path.lineTo(16.5, 20)
    path.lineTo(17.5, 6.5)
    p.drawPath(path)
    p.drawLine(QPointF(10.5, 10), QPointF(10.5, 16.5))
    p.drawLine(QPointF(13.5, 10), QPointF(13.5, 16.5))


def _folder(p: QPainter, c: QColor) -> None:
    path = QPainterPath(QPointF(3.5, 18.5))
    path.lineTo(3.5, 5.5)
    path.lineTo(9, 5.5)
    path.lineTo(11, 7.5)
    path.lineTo(20.5, 7.5)
    path.lineTo(20.5, 18.5)
    path.closeSubpath()
    p.drawPath(path)
    p.drawLine(QPointF(3.5, 10.5), QPointF(20.5, 10.5))


def _paste(p: QPainter, c: QColor) -> None:
    p.drawRoundedRect(QRectF(5, 5, 14, 16), 2, 2)
    p.setBrush(c)
    p.drawRoundedRect(QRectF(9, 3, 6, 4), 1, 1)
    p.setBrush(Qt.BrushStyle.NoBrush)
    p.drawLine(QPointF(8.5, 12), QPointF(15.5, 12))
    p.drawLine(QPointF(8.5, 16), QPointF(13.5, 16))


def _chevron(p: QPainter, right: bool) -> None:
    x0, x1 = (9.5, 15) if right else (14.5, 9)
    p.drawLine(QPointF(x0, 6), QPointF(x1, 12))
    p.drawLine(QPointF(x1, 12), QPointF(x0, 18))


def _width(p: QPainter, c: QColor) -> None:
    for i, w in enumerate((1.2, 2.4, 4.0)):
        p.setPen(QPen(c, w, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap))
        y = 6.5 + i * 5.5
        p.drawLine(QPointF(4, y), QPointF(20, y))


def _close(p: QPainter, c: QColor) -> None:
    p.drawLine(QPointF(7, 7), QPointF(17, 17))
    p.drawLine(QPointF(17, 7), QPointF(7, 17))


def _badge(p: QPainter, color: QColor, mark: str) -> None:
    """A filled circle in ``color`` with a white "!" or "i" (message levels)."""
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(color)
    p.drawEllipse(QRectF(2, 2, 20, 20))
    p.setPen(QPen(QColor("#ffffff"), 2.4, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap))
    if mark == "!":
        p.drawLine(QPointF(12, 7), QPointF(12, 13.5))
        p.drawPoint(QPointF(12, 17.2))
    else:
        p.drawPoint(QPointF(12, 7.3))
        p.drawLine(QPointF(12, 11), QPointF(12, 17))


def badge_pixmap(color: QColor, mark: str, size: int, dpr: float) -> QPixmap:
    """A message-level badge (``mark`` "!" or "i") as a pixmap."""
    pm = QPixmap(int(size * dpr), int(size * dpr))
    pm.setDevicePixelRatio(dpr)
    pm.fill(Qt.GlobalColor.transparent)
    p = QPainter(pm)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.scale(size / 24.0, size / 24.0)
    _badge(p, color, mark)
    p.end()
    return pm


def _app(p: QPainter, c: QColor) -> None:
    """The window icon: a digit "7" on an accent-coloured tile (fixed colours)."""
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(QColor("#2f6fdb"))
    p.drawRoundedRect(QRectF(1, 1, 22, 22), 5, 5)
    p.setPen(QPen(QColor("#ffffff"), 2.6, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap, Qt.PenJoinStyle.RoundJoin))
    path = QPainterPath(QPointF(7, 6.5))
    path.lineTo(17, 6.5)
    path.lineTo(10.5, 18.5)
    p.drawPath(path)


def _number(p: QPainter, c: QColor) -> None:
    """Number mode: a "1" and a "2", each in its own (segmentation) box."""
    p.drawLine(QPointF(6.5, 8), QPointF(6.5, 17))
    p.drawLine(QPointF(4.8, 9.6), QPointF(6.5, 8))
    path = QPainterPath(QPointF(14.3, 9.6))
    path.cubicTo(QPointF(15.5, 7.2), QPointF(20.5, 7.6), QPointF(19.2, 11))
    path.lineTo(14.3, 17)
    path.lineTo(19.7, 17)
    p.drawPath(path)
    p.setPen(QPen(c, 1.0, Qt.PenStyle.DotLine))
    p.drawRoundedRect(QRectF(2.5, 5, 8, 14.5), 1.5, 1.5)
    p.drawRoundedRect(QRectF(12.5, 5, 9, 14.5), 1.5, 1.5)


_DRAW = {
    "app": _app,
    "number": _number,
    "close": _close,
    "pen": _pen,
    "eraser": _eraser,
    "undo": lambda p, c: _arrow(p, False),
    "redo": lambda p, c: _arrow(p, True),
    "clear": _trash,
    "open": _folder,
    "paste": _paste,
    "previous": lambda p, c: _chevron(p, False),
    "next": lambda p, c: _chevron(p, True),
    "width": _width,
}
NAMES = tuple(_DRAW)
