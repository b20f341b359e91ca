"""'Why did it say that?': the explanation of the prediction on screen.

:class:`Explainer` asks the inference worker (the child process, never the GUI thread)
for an occlusion saliency map of each new prediction and for the nearest training
examples of the predicted class; "why not X?" contrasts the top class with another one
the user picks in the chart. :class:`ExplanationView` shows the map over the 28x28 model
input (red: ink that pushed toward the answer; blue: ink that argued against it) and the
examples as thumbnails with their index in the bundled training subset.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QObject, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QImage, QPainter, QPalette
from PySide6.QtWidgets import QSizePolicy, QWidget

from mnist_desktop.ui.inference import ExplanationResult, InferenceWorker
from mnist_desktop.ui.preview import ModelInputPreview, image28_to_qimage

FOR_COLOR = (220, 38, 38)       # red: pushes toward the class explained
AGAINST_COLOR = (47, 111, 222)  # blue: pushes away (the chart's "why not" outline colour)
MAX_ALPHA = 0.78
#: How many nearest training examples to show.
NEIGHBOURS = 6


def saliency_to_qimage(saliency: np.ndarray) -> QImage:
    """A saliency map to a semi-transparent RGBA QImage of the same size: red where
    positive, blue where negative, opacity growing with ``|value| / max|value|``."""
    s = np.asarray(saliency, dtype=np.float32)
    peak = float(np.abs(s).max()) if s.size else 0.0
    rgba = np.zeros(s.shape + (4,), np.uint8)
    if peak > 0:
        mag = np.clip(np.abs(s) / peak, 0, 1)
        pos = s > 0
        rgba[pos, :3] = FOR_COLOR
        rgba[~pos, :3] = AGAINST_COLOR
        # A square root so that weaker evidence stays visible beside the strongest.
        rgba[..., 3] = np.round(np.sqrt(mag) * MAX_ALPHA * 255).astype(np.uint8)
    rgba = np.ascontiguousarray(rgba)
    h, w = s.shape
    return QImage(rgba.data, w, h, rgba.strides[0], QImage.Format.Format_RGBA8888).copy()


def overlay_rect_for_strokes(strokes, image28: np.ndarray, threshold: float = 0.1) -> QRectF | None:
    """Where the 28x28 model input lies on the canvas (document coordinates), for drawn
    ``strokes`` (canvas strokes with ``bounds`` and ``width``).

    Preprocessing fits the ink's bounding box into the 28x28 field with one scale and
    centres it by mass; matching the input's ink box to the strokes' ink box (uniform
    scale, centres aligned) undoes that to within about a model pixel.
    """
    strokes = [s for s in strokes if s.points]
    img = np.asarray(image28, dtype=np.float32)
    rows = np.flatnonzero(img.max(axis=1) > threshold)
    cols = np.flatnonzero(img.max(axis=0) > threshold)
    if not strokes or rows.size == 0 or cols.size == 0:
        return None
    x0 = min(s.bounds[0] - s.width / 2 for s in strokes)
    y0 = min(s.bounds[1] - s.width / 2 for s in strokes)
    x1 = max(s.bounds[2] + s.width / 2 for s in strokes)
    y1 = max(s.bounds[3] + s.width / 2 for s in strokes)
    pw, ph = cols[-1] + 1 - cols[0], rows[-1] + 1 - rows[0]
    scale = max((x1 - x0) / pw, (y1 - y0) / ph)
    pcx, pcy = (cols[0] + cols[-1] + 1) / 2, (rows[0] + rows[-1] + 1) / 2
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = img.shape[1] * scale
    return QRectF(cx - pcx * scale, cy - pcy * scale, side, img.shape[0] * scale)


def neighbour_qimage(image: np.ndarray) -> QImage:
    """A training example (28x28 uint8, ink 255) as the model sees it: white on black."""
    return image28_to_qimage(np.asarray(image, np.float32) / 255.0)


class Explainer(QObject):
    """Keeps the explanation in step with the prediction on screen.

    Parameters
    ----------
    worker
        The inference worker that computes explanations in its child process.

    Signals
    -------
    explanationChanged(object)
        A core :class:`~mnist_desktop.core.saliency.Explanation` for the current
        prediction, or None (off, no prediction, or it failed).
    contrastChanged(int)
        The "why not?" class index, or -1 for none.
    failed(str)
        Explaining failed: one line.
    """

    explanationChanged = Signal(object)
    contrastChanged = Signal(int)
    failed = Signal(str)

    def __init__(self, worker: InferenceWorker, parent: QObject | None = None):
        super().__init__(parent)
        self.setObjectName("explainer")
        self._worker = worker
        self._enabled = False
        self._prediction = None
        self._contrast = -1
        self._request = 0
        self._explanation = None
        worker.explanationReady.connect(self._on_result)

    @property
    def enabled(self) -> bool:
        return self._enabled

    @property
    def explanation(self):
        """The explanation shown, or None."""
        return self._explanation

    @property
    def contrast(self) -> int:
        """The "why not?" class index, or -1."""
        return self._contrast

    @property
    def prediction(self):
        return self._prediction

    def set_enabled(self, on: bool) -> None:
        """Turn explaining on (the current prediction is explained at once) or off."""
        on = bool(on)
        if on == self._enabled:
            return
        self._enabled = on
        if on:
            self._request_explanation()
        else:
            self._worker.cancel_explanations()
            self._request = 0
            self._set_explanation(None)

    def set_prediction(self, prediction) -> None:
        """The prediction on screen changed (None: nothing shown)."""
        self._prediction = prediction
        if prediction is not None and self._contrast == prediction.index:
            self._set_contrast(-1)   # "why 7 and not 7?" means nothing
        self._request_explanation()

    def toggle_contrast(self, index: int) -> None:
        """Contrast the top class with class ``index`` ("why not ``index``?"); the same
        class again, or the top class itself, goes back to the plain map."""
        p = self._prediction
        if index == self._contrast or (p is not None and index == p.index):
            index = -1
        self._set_contrast(index)
        self._request_explanation()

    def _set_contrast(self, index: int) -> None:
        if index != self._contrast:
            self._contrast = index
            self.contrastChanged.emit(index)

    def _request_explanation(self) -> None:
        p = self._prediction
        if not self._enabled:
            return
        if p is None or p.image is None:
            self._worker.cancel_explanations()
            self._request = 0
            self._set_explanation(None)
            return
        contrast = None if self._contrast < 0 else self._contrast
        self._request = self._worker.explain(p.image, p.index, contrast, NEIGHBOURS)

    def _on_result(self, result: ExplanationResult) -> None:
        if result.request_id != self._request or not self._enabled:
            return  # superseded by a newer prediction or contrast
        if result.status == "ok":
            self._set_explanation(result.explanation)
        else:
            self._set_explanation(None)
            self.failed.emit(result.message)

    def _set_explanation(self, explanation) -> None:
        self._explanation = explanation
        self.explanationChanged.emit(explanation)


class SaliencyView(ModelInputPreview):
    """The saliency map over the 28x28 model input, scaled up: each model pixel a square,
    the heat map smoothed over it."""

    SCALE = 5
    PLACEHOLDER = "Draw a digit"

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("saliencyView")
        self.setAccessibleName("Explanation overlay")
        self.setAccessibleDescription("Red: ink that pushed the model toward its answer; "
                                      "blue: ink that argued against it")
        self.setToolTip("")
        self._overlay: QImage | None = None

    @property
    def overlay(self) -> QImage | None:
        """The 28x28 RGBA overlay painted, or None."""
        return self._overlay

    def set_maps(self, image28, saliency) -> None:
        """Show ``saliency`` over ``image28`` (both 28x28), or nothing for None."""
        self._overlay = None if saliency is None else saliency_to_qimage(saliency)
        self.set_image(image28)

    def _paint_over(self, p: QPainter, rect: QRectF) -> bool:
        if self._overlay is None:
            return False
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        p.drawImage(rect, self._overlay)
        return True


class NeighbourStrip(QWidget):
    """Thumbnails of the nearest training examples, each with its index in the subset."""

    THUMB = 44

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("neighbourStrip")
        self.setAccessibleName("Nearest training examples")
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self._items: list[tuple[QImage, str, str]] = []

    @property
    def captions(self) -> list[str]:
        """The text under each thumbnail (``#index``)."""
        return [c for _, c, _ in self._items]

    def set_neighbours(self, neighbours) -> None:
        """Show core ``Neighbour`` objects (closest first), or nothing."""
        self._items = [(neighbour_qimage(n.image), f"#{n.index}",
                        f"Training example #{n.index} (label {n.label}), similarity {n.similarity:.2f}")
                       for n in (neighbours or [])]
        self.setAccessibleDescription("; ".join(t for _, _, t in self._items) or "none")
        self.setToolTip("\n".join(t for _, _, t in self._items))
        self.update()

    def sizeHint(self) -> QSize:
        return QSize(NEIGHBOURS * (self.THUMB + 6), self.THUMB + self.fontMetrics().height() + 4)

    def minimumSizeHint(self) -> QSize:
        return QSize(self.THUMB * 3, self.sizeHint().height())

    def paintEvent(self, ev) -> None:
        if not self._items:
            return
        p = QPainter(self)
        fm = self.fontMetrics()
        step = min(self.THUMB + 6, self.width() / len(self._items))
        side = int(step - 6)
        faint = self.palette().color(QPalette.ColorRole.PlaceholderText)
        for i, (img, caption, _) in enumerate(self._items):
            r = QRectF(i * step, 0, side, side)
            p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
            p.drawImage(r, img)
            p.setPen(faint)
            p.drawText(QRectF(r.left() - 3, r.bottom() + 2, side + 6, fm.height()),
                       Qt.AlignmentFlag.AlignHCenter, caption)
        p.end()


class ExplanationPanel(QWidget):
    """The saliency map, what it contrasts, and the nearest training examples."""

    def __init__(self, parent: QWidget | None = None):
        from PySide6.QtWidgets import QHBoxLayout, QLabel, QVBoxLayout

        super().__init__(parent)
        self.setObjectName("explanationPanel")
        self.setAccessibleName("Why the model said that")
        self.map = SaliencyView()
        self.title = QLabel()
        self.title.setObjectName("explanationTitle")
        self.title.setAccessibleName("Explanation")
        self.title.setWordWrap(True)
        f = self.title.font()
        f.setBold(True)
        self.title.setFont(f)
        self.legend = QLabel()
        self.legend.setObjectName("explanationLegend")
        self.legend.setWordWrap(True)
        self.legend.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.neighbours_caption = QLabel()
        self.neighbours_caption.setObjectName("neighboursCaption")
        self.neighbours_caption.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.neighbours = NeighbourStrip()
        text = QVBoxLayout()
        text.setSpacing(4)
        text.addWidget(self.title)
        text.addWidget(self.legend)
        text.addStretch(1)
        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        top.setSpacing(12)
        top.addWidget(self.map, 0, Qt.AlignmentFlag.AlignTop)
        top.addLayout(text, 1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(4)
        lay.addLayout(top)
        lay.addWidget(self.neighbours_caption)
        lay.addWidget(self.neighbours)
        self.set_explanation(None, None, "")

    def set_explanation(self, explanation, prediction, status: str = "") -> None:
        """Show ``explanation`` of ``prediction`` (core objects), or ``status`` text when
        there is none yet (e.g. "Explaining…")."""
        if explanation is None or prediction is None:
            self.map.set_maps(None if prediction is None else prediction.image, None)
            self.title.setText(status or "Draw a digit to see why the model says what it says.")
            self.legend.setText("")
            self.neighbours_caption.setText("")
            self.neighbours.set_neighbours([])
            return
        labels = list(prediction.labels)
        target = labels[explanation.target]
        self.map.set_maps(prediction.image, explanation.saliency)
        if explanation.contrast is None:
            self.title.setText(f"Why {target}?")
            self.legend.setText(f"Red: ink that pushed toward {target}; blue: ink against it. "
                                "Click a class in the chart: why not that one?")
        else:
            other = labels[explanation.contrast]
            self.title.setText(f"Why {target} and not {other}?")
            self.legend.setText(f"Red: ink that says {target} rather than {other}; blue: ink that "
                                f"says {other}. Click {other} again for the plain map.")
        if explanation.neighbours:
            self.neighbours_caption.setText(f"Closest training examples of {target}:")
        else:
            self.neighbours_caption.setText("")
        self.neighbours.set_neighbours(explanation.neighbours)
