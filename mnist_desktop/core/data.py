"""Reading labelled data: IDX files (MNIST format) and labelled image folders.

Qt-free and torch-free: everything here returns numpy arrays or path lists.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm",
                  ".ppm", ".pbm", ".pnm", ".ico", ".tga", ".jfif", ".heic"}

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataError(ValueError):
    """A data file or folder is unusable. The message says which and why, in one line."""


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) with full validation."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path.name}: cannot read ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path.name}: not an IDX file (bad magic number)")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code not in _IDX_DTYPES or not 1 <= ndim <= 4:
        raise DataError(f"{path.name}: unsupported IDX type 0x{dtype_code:02x} / {ndim} dims")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path.name}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[dtype_code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"{path.name}: IDX size mismatch (header says {shape}, "
                        f"{len(raw) - header} data bytes instead of {expected})")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


@dataclass
class IdxSplit:
    name: str
    images: np.ndarray  # (N, 28, 28) uint8
    labels: np.ndarray  # (N,) int64
    images_path: Path
    labels_path: Path


def find_idx_splits(folder: str | os.PathLike) -> dict[str, tuple[Path, Path]]:
    """Pairs of ``<prefix>-images-idx3-ubyte[.gz]`` / ``<prefix>-labels-idx1-ubyte[.gz]``
    files in ``folder``, keyed by a split name: ``train``, ``test`` (``t10k``), or the
    prefix itself (e.g. ``train-5k``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"not a folder: {folder}")
    pat = re.compile(r"^(?P<prefix>.+?)[-.]images[-.]idx3[-.]ubyte(\.gz)?$")
    out: dict[str, tuple[Path, Path]] = {}
    for img in sorted(folder.iterdir()):
        m = pat.match(img.name)
        if not m:
            continue
        prefix = m.group("prefix")
        candidates = [folder / img.name.replace("images", "labels").replace("idx3", "idx1")]
        lab = next((c for c in candidates if c.exists()), None)
        if lab is None:
            continue
        key = "test" if prefix in ("t10k", "test") else prefix
        out[key] = (img, lab)
    return out


def load_idx_split(images_path: Path, labels_path: Path, name: str = "") -> IdxSplit:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{images_path.name}: expected N x 28 x 28 images, got {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{labels_path.name}: {len(labels)} labels for {len(images)} images")
    if images.dtype != np.uint8:
        images = np.clip(images, 0, 255).astype(np.uint8)
    return IdxSplit(name or images_path.name, images, labels.astype(np.int64), images_path, labels_path)


def load_idx_folder(folder: str | os.PathLike, split: str = "test") -> IdxSplit:
    """Load one split (``test``, ``train``, ``train-5k``...) from an IDX folder."""
    splits = find_idx_splits(folder)
    if not splits:
        raise DataError(f"{folder}: no IDX image/label file pairs found")
    if split not in splits:
        raise DataError(f"{folder}: no {split!r} split (found: {', '.join(sorted(splits))})")
    img, lab = splits[split]
    return load_idx_split(img, lab, split)


def fingerprint_arrays(*arrays: np.ndarray) -> str:
    """A short content hash identifying a dataset (stored in checkpoints)."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return "sha256:" + h.hexdigest()[:16]


# --------------------------------------------------------------------------- image files

def is_image_name(name: str | os.PathLike) -> bool:
    """Whether a file name has an image suffix (string work only: called per listed file)."""
    return os.path.splitext(os.fspath(name))[1].lower() in IMAGE_SUFFIXES


def iter_image_files(paths, recursive: bool = True,
                     errors: list[tuple[str, str]] | None = None) -> Iterator[Path]:
    """Image files under ``paths`` (files or folders) in a deterministic order.

    Symlink loops are detected (each real folder is visited once); unreadable folders and
    missing paths are reported into ``errors`` as ``(path, reason)`` and skipped.
    """
    return (Path(p) for p in iter_image_paths(paths, recursive, errors))


def iter_image_paths(paths, recursive: bool = True,
                     errors: list[tuple[str, str]] | None = None) -> Iterator[str]:
    """:func:`iter_image_files` as ``str`` paths: listing 200,000 files builds no ``Path``."""
    seen_dirs: set[tuple[int, int]] = set()
    for p in paths:
        p = str(Path(p))   # as before: "in/" and "./in" list as "in/..."
        if os.path.isdir(p):
            yield from _walk(p, recursive, seen_dirs, errors)
        elif os.path.lexists(p):
            yield p
        elif errors is not None:
            errors.append((p, "file not found"))


def _walk(folder: str, recursive: bool, seen: set, errors) -> Iterator[str]:
    try:
        st = os.stat(folder)
    except OSError as e:
        if errors is not None:
            errors.append((folder, f"cannot open folder ({e.strerror or e})"))
        return
    key = (st.st_dev, st.st_ino)
    if key in seen:
        if errors is not None:
            errors.append((folder, "symlink loop (folder already visited)"))
        return
    seen.add(key)
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:
        if errors is not None:
            errors.append((folder, f"cannot list folder ({e.strerror or e})"))
        return
    subdirs = []
    for entry in entries:
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        if is_dir:
            subdirs.append(entry.path)
        elif is_image_name(entry.name):
            yield entry.path
    if recursive:
        for d in subdirs:
            yield from _walk(d, recursive, seen, errors)


def label_from_parent(path: Path, labels: list[str]) -> str | None:
    """The class label a file's parent folder names, if it names one of ``labels``."""
    name = path.parent.name
    return name if name in labels else None


def labelled_image_folder(root: str | os.PathLike) -> tuple[list[Path], list[str]]:
    """``root/<label>/*.png`` -> (files, label per file). Raises DataError when empty."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"not a folder: {root}")
    files, labels = [], []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in iter_image_files([sub], recursive=True):
            files.append(f)
            labels.append(sub.name)
    if not files:
        raise DataError(f"{root}: no labelled images (expected one sub-folder per class)")
    return files, labels
