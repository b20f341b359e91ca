"""Image inputs for the canvas: files (open, drop, paste of copied files) and pixels
(pasted or dropped image data).

Files are decoded by the inference process with the core's ``load_image`` (raster
formats only, EXIF orientation applied), which sends a display copy back; the GUI never decodes
large images itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QMimeData, QUrl
from PySide6.QtGui import QImage

# Pasted images larger than this (longest side) are scaled down before classification:
# a digit is still hundreds of pixels tall, and a 4K screenshot would otherwise take
# tens of milliseconds to cross the pipe.
MAX_PASTE_SIDE = 1024

IMAGE_FILE_FILTER = ("Images (*.png *.jpg *.jpeg *.bmp *.gif *.tif *.tiff *.webp *.ppm *.pgm "
                     "*.pbm *.tga *.ico *.jfif *.heic);;All files (*)")


@dataclass(eq=False)
class ImageSource:
    """An image shown on the canvas.

    Attributes
    ----------
    name
        What the user calls it: the file name, or "Pasted image".
    path
        The file, or None for pixels.
    pixels
        RGBA uint8 array ``(H, W, 4)`` for pasted/dropped image data, else None.
    display
        The QImage to show; for files it arrives with the first result.
    error
        Why the file could not be read, once known.
    """

    name: str
    path: str | None = None
    pixels: object = None
    display: QImage | None = None
    error: str | None = None

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "ImageSource":
        """A file to be decoded by the inference process."""
        return cls(name=Path(path).name, path=str(path))

    @classmethod
    def from_qimage(cls, image: QImage, name: str = "Pasted image") -> "ImageSource":
        """Keep a (possibly downscaled) copy of ``image`` for display and prediction."""
        if max(image.width(), image.height()) > MAX_PASTE_SIDE:
            from PySide6.QtCore import Qt
            image = image.scaled(MAX_PASTE_SIDE, MAX_PASTE_SIDE, Qt.AspectRatioMode.KeepAspectRatio,
                                 Qt.TransformationMode.SmoothTransformation)
        rgba = image.convertToFormat(QImage.Format.Format_RGBA8888)
        return cls(name=name, pixels=qimage_to_rgba(rgba), display=rgba)

    @property
    def request(self) -> tuple[str, object]:
        """``(kind, payload)`` for :meth:`InferenceWorker.submit`."""
        if self.path is not None:
            return "file", self.path
        return "pixels", self.pixels


def qimage_to_rgba(image: QImage):
    """A Format_RGBA8888 QImage to an ``(H, W, 4)`` uint8 numpy array (a copy)."""
    import numpy as np

    if image.format() != QImage.Format.Format_RGBA8888:
        image = image.convertToFormat(QImage.Format.Format_RGBA8888)
    h, w, bpl = image.height(), image.width(), image.bytesPerLine()
    buf = np.frombuffer(image.constBits(), dtype=np.uint8, count=h * bpl)
    return buf.reshape(h, bpl)[:, :w * 4].reshape(h, w, 4).copy()


def local_paths(urls: list[QUrl]) -> list[str]:
    """Local file paths among ``urls`` (remote URLs are skipped)."""
    return [u.toLocalFile() for u in urls if u.isLocalFile() and u.toLocalFile()]


def inputs_from_mime(mime: QMimeData) -> tuple[list[str], QImage | None]:
    """What a drop or paste carries: ``(file paths, image)``; both may be empty.

    Files win over image data: a file manager's copy carries both, and the file is the
    original, not a rendering of its icon.
    """
    if mime is None:
        return [], None
    paths = local_paths(mime.urls()) if mime.hasUrls() else []
    if not paths and mime.hasText():
        text = mime.text().strip()
        if text.startswith("file://"):
            paths = local_paths([QUrl(line.strip()) for line in text.splitlines() if line.strip()])
        elif text and "\n" not in text and len(text) < 4096 and os.path.isfile(text):
            paths = [text]
    if paths:
        return paths, None
    if mime.hasImage():
        image = mime.imageData()
        if isinstance(image, QImage) and not image.isNull():
            return [], image
    return [], None
