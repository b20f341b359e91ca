"""Background loading of thumbnails and of the model's 28x28 input for one file.

Both run on a small QThreadPool and come back through signals; the GUI thread only turns
finished QImages into pixmaps. Files are read through Python (``open`` works for every
name, including bytes that are not valid UTF-8, which a QString cannot hold) and decoded
by Pillow, exactly as classification decodes them.
"""

from __future__ import annotations

import collections
import io
import os
import stat

import numpy as np
from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, Signal, Slot
from PySide6.QtGui import QColor, QIcon, QImage, QPainter, QPixmap

THUMB = 64
MAX_THUMB_FILE_BYTES = 32 * 1024 * 1024


def read_thumbnail(path: str, size: int = THUMB) -> QImage:
    """A QImage of at most ``size`` x ``size`` for ``path``; null on any failure.

    Decoded by Pillow through the core's :func:`~mnist_desktop.core.preprocess.load_image`,
    as for classification: the same raster formats only (a PostScript file named .png is
    never run), its decompression-bomb limits, EXIF orientation. Not Qt's image plugins:
    Qt's TIFF handler closed a QBuffer freed before it and crashed the app, and Qt would
    open formats (PDF, SVG) that the classifier refuses.
    """
    from mnist_desktop.core.preprocess import image_to_gray, load_image

    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or not 0 < st.st_size <= MAX_THUMB_FILE_BYTES:
            return QImage()  # a FIFO named *.png would block open() forever
        # O_NONBLOCK: should the file have become a FIFO since the stat, read at once
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        try:
            data = os.read(fd, MAX_THUMB_FILE_BYTES + 1)
        finally:
            os.close(fd)
        if not data or len(data) > MAX_THUMB_FILE_BYTES:
            return QImage()
        img = load_image(io.BytesIO(data))
        img.thumbnail((size, size))
        if img.mode in ("F", "I") or img.mode.startswith("I;16"):
            gray = image_to_gray(img)[0]   # scaled to the image's range, as preprocessing reads it
            rgba = np.repeat(np.clip(gray * 255 + 0.5, 0, 255).astype(np.uint8)[:, :, None], 4, axis=2)
            rgba[:, :, 3] = 255
        else:
            rgba = np.asarray(img.convert("RGBA"), dtype=np.uint8)
    except Exception:  # any decoding failure: the broken-file icon, never a crash
        return QImage()
    rgba = np.ascontiguousarray(rgba)
    h, w = rgba.shape[:2]
    qimg = QImage(rgba.data, w, h, 4 * w, QImage.Format_RGBA8888).copy()
    if w < size and h < size:
        # MNIST-sized files: enlarge so the digit is legible in the grid
        qimg = qimg.scaled(size, size, Qt.KeepAspectRatio, Qt.SmoothTransformation)
    return qimg


def array_to_qimage(image28: np.ndarray) -> QImage:
    """A float [0, 1] image (ink = 1) as an 8-bit grayscale QImage, white ink on black
    as the model sees it."""
    a = np.ascontiguousarray(np.clip(image28 * 255.0 + 0.5, 0, 255).astype(np.uint8))
    h, w = a.shape
    return QImage(a.data, w, h, w, QImage.Format_Grayscale8).copy()


class _Signals(QObject):
    thumbnail = Signal(int, int, QImage)          # generation, store row, image
    preview = Signal(int, int, object, str)       # generation, store row, array or None, error


class _ThumbJob(QRunnable):
    def __init__(self, signals, gen, row, path):
        super().__init__()
        self.signals, self.gen, self.row, self.path = signals, gen, row, path

    def run(self):
        image = read_thumbnail(self.path)
        try:
            self.signals.thumbnail.emit(self.gen, self.row, image)
        except RuntimeError:
            pass   # the window closed meanwhile


class _PreviewJob(QRunnable):
    def __init__(self, signals, gen, row, path, options):
        super().__init__()
        self.signals, self.gen, self.row, self.path, self.options = signals, gen, row, path, options

    def run(self):
        from mnist_desktop.core.batch import decode_one

        img, err = decode_one(self.path, self.options)
        try:
            self.signals.preview.emit(self.gen, self.row, img, err or "")
        except RuntimeError:
            pass   # the window closed meanwhile


class ImageLoader(QObject):
    """Lazy thumbnails (an LRU of pixmaps) and on-demand previews of the model input.

    :meth:`pixmap` (the grid) and :meth:`icon` (the table) return a placeholder at once
    and queue the load; only rows a view paints are ever decoded. When it finishes,
    :attr:`thumbnailReady` names the store row so the model can refresh it. Bumping
    :meth:`reset` discards everything in flight (a new run).
    """

    thumbnailReady = Signal(int)                 # store row
    previewReady = Signal(int, object, str)      # store row, 28x28 array or None, error

    def __init__(self, parent=None, capacity: int = 1500, threads: int = 2):
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(threads)
        self._signals = _Signals()
        self._signals.thumbnail.connect(self._on_thumbnail)
        self._signals.preview.connect(self._on_preview)
        self._cache: collections.OrderedDict[int, QPixmap] = collections.OrderedDict()
        self._pending: set[int] = set()
        self._capacity = capacity
        self._gen = 0
        self._closed = False
        self._placeholder = self._make_placeholder(QColor("#d0d0d0"))
        self._broken = self._make_placeholder(QColor("#e8a0a0"))
        self._placeholder_icon, self._broken_icon = QIcon(self._placeholder), QIcon(self._broken)

    @staticmethod
    def _make_placeholder(color: QColor) -> QPixmap:
        pm = QPixmap(THUMB, THUMB)
        pm.fill(Qt.transparent)
        p = QPainter(pm)
        p.fillRect(8, 8, THUMB - 16, THUMB - 16, color)
        p.end()
        return pm

    def reset(self) -> None:
        self._gen += 1
        self._pool.clear()
        self._cache.clear()
        self._pending.clear()

    @property
    def broken_icon(self) -> QIcon:
        return self._broken_icon

    @property
    def broken_pixmap(self) -> QPixmap:
        return self._broken

    def pixmap(self, row: int, path: str) -> QPixmap:
        """The thumbnail of store row ``row``, or a placeholder while it loads."""
        pm = self._cache.get(row)
        if pm is not None:
            self._cache.move_to_end(row)
            return pm
        if row not in self._pending and not self._closed:
            self._pending.add(row)
            self._pool.start(_ThumbJob(self._signals, self._gen, row, path))
        return self._placeholder

    def icon(self, row: int, path: str) -> QIcon:
        pm = self.pixmap(row, path)
        return self._placeholder_icon if pm is self._placeholder else QIcon(pm)

    def request_preview(self, row: int, path: str, options) -> None:
        if self._closed:
            return
        self._pool.start(_PreviewJob(self._signals, self._gen, row, path, options), priority=1)

    @Slot(int, int, QImage)
    def _on_thumbnail(self, gen: int, row: int, image: QImage) -> None:
        if gen != self._gen:
            return
        self._pending.discard(row)
        self._cache[row] = QPixmap.fromImage(image) if not image.isNull() else self._broken
        while len(self._cache) > self._capacity:
            self._cache.popitem(last=False)
        self.thumbnailReady.emit(row)

    @Slot(int, int, object, str)
    def _on_preview(self, gen: int, row: int, image, error: str) -> None:
        if gen == self._gen:
            self.previewReady.emit(row, image, error)

    def shutdown(self) -> None:
        self._closed = True   # a repaint while the window closes must not queue more
        self._gen += 1
        self._pool.clear()
        self._pool.waitForDone()

    def wait_idle(self, ms: int = -1) -> bool:
        return self._pool.waitForDone(ms)
