"""'What the model sees': the 28x28 preprocessed input, scaled up without smoothing."""

from __future__ import annotations

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QImage, QPainter, QPalette, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget


def image28_to_qimage(image) -> QImage:
    """A 28x28 float image in [0, 1] (ink = 1) to an 8-bit grayscale QImage, white ink on
    black as the model sees it."""
    import numpy as np

    arr = np.ascontiguousarray(np.clip(np.asarray(image, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8))
    h, w = arr.shape
    return QImage(arr.data, w, h, arr.strides[0], QImage.Format.Format_Grayscale8).copy()


class ModelInputPreview(QWidget):
    """Shows the model's 28x28 input at an integer scale (nearest neighbour), so every
    input pixel is a crisp square. Subclasses paint over it with :meth:`_paint_over`."""

    SCALE = 4                  # preferred pixels per model pixel
    PLACEHOLDER = "28×28"      # shown when there is nothing to show

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("modelInputPreview")
        self.setAccessibleName("Model input preview")
        self.setAccessibleDescription("The 28 by 28 pixel image the model classifies")
        self.setToolTip("What the model sees: your input after preprocessing (28×28 pixels)")
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self._image: QImage | None = None

    @property
    def image(self) -> QImage | None:
        """The 28x28 QImage shown, or None."""
        return self._image

    def set_image(self, image) -> None:
        """Show a 28x28 array in [0, 1], or nothing for None."""
        self._image = None if image is None else image28_to_qimage(image)
        self.update()

    def sizeHint(self) -> QSize:
        return QSize(28 * self.SCALE + 2, 28 * self.SCALE + 2)

    def minimumSizeHint(self) -> QSize:
        return self.sizeHint()

    def paintEvent(self, ev) -> None:
        p = QPainter(self)
        side = min(self.width(), self.height()) - 2
        scale = max(1, side // 28)
        px = 28 * scale
        rect = QRectF((self.width() - px) / 2, (self.height() - px) / 2, px, px)
        p.fillRect(rect, QColor("#000000"))
        if self._image is not None:
            # No smoothing: each model pixel is a crisp square.
            p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
            p.drawImage(rect, self._image)
        if not self._paint_over(p, rect) and self._image is None:
            p.setPen(QColor("#8a8a8a"))
            p.drawText(rect, Qt.AlignmentFlag.AlignCenter, self.PLACEHOLDER)
        p.setPen(QPen(self.palette().color(QPalette.ColorRole.Mid), 1))
        p.drawRect(rect.adjusted(-0.5, -0.5, 0.5, 0.5))
        p.end()

    def _paint_over(self, p: QPainter, rect: QRectF) -> bool:
        """Paint over the input in ``rect``; True when something was painted."""
        return False
