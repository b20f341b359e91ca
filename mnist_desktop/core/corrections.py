"""The corrections folder: the user's own drawings with the label they should have had.

The GUI writes one sample whenever the user corrects a prediction; ``python -m training
--extra-data corrections:`` (or ``--data corrections:DIR``) trains on them. Torch-free.

Format (version 1)
------------------
::

    DIR/corrections.json                       {"format": "mnist-desktop-corrections", "version": 1}
    DIR/<label>/<YYYYmmddTHHMMSSZ>-<id>.png    the 28x28 image the model saw
    DIR/<label>/<YYYYmmddTHHMMSSZ>-<id>.json   optional sidecar (same stem)

* ``<label>`` is the correct class name (a folder per class; moving a file to another
  folder relabels it; the folder wins over any label in the sidecar).
* The PNG is 8-bit grayscale, exactly 28x28, white ink on black: the output of
  :func:`mnist_desktop.core.preprocess.preprocess` *without* blur (``blur_sigma=0``), so a
  recipe's own preprocessing options can be applied on top.
* The sidecar is a JSON object; every key is optional: ``strokes`` (list of strokes, each a
  list of ``[x, y]`` or ``[x, y, pressure]`` canvas points), ``canvas_size`` (``[w, h]``),
  ``label``, ``predicted``, ``confidence``, ``model`` (file name), ``created`` (ISO 8601).
  When ``strokes`` are present, training renders them through the preprocessing path with
  the run's options instead of reading the PNG, so stroke-based options are honoured.
* ``DIR/corrections.json`` marks the folder so ``--data DIR`` recognizes it without the
  ``corrections:`` prefix.
* Both files are written atomically (temporary file, then rename): a crash never leaves a
  half-written sample. :func:`relabel_correction` moves a sample to another class folder
  (and rewrites the sidecar's ``label``); :func:`delete_correction` removes both files.
* :func:`list_corrections` is strict (training refuses a folder with a bad file);
  :func:`scan_corrections` skips bad files and says why (the app's corrections browser and
  "Fine-tune on my handwriting" use it).

The default folder is :func:`mnist_desktop.core.paths.corrections_dir`.
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from mnist_desktop.core.data import DataError

FORMAT = "mnist-desktop-corrections"
VERSION = 1
MANIFEST = "corrections.json"


@dataclass
class CorrectionSample:
    png: Path
    label: str
    sidecar: dict[str, Any]


def is_corrections_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a corrections manifest."""
    manifest = Path(path) / MANIFEST
    if not manifest.is_file():
        return False
    try:
        d = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(d, dict) and d.get("format") == FORMAT


def save_correction(folder: str | os.PathLike, label: str, image: np.ndarray, *,
                    strokes: Sequence[Sequence[Sequence[float]]] | None = None,
                    canvas_size: tuple[int, int] | None = None, predicted: str | None = None,
                    confidence: float | None = None, model: str | None = None) -> Path:
    """Add one corrected sample to ``folder`` (created with its manifest when missing).

    Parameters
    ----------
    image
        The 28x28 [0, 1] float image (ink = 1) that preprocessing produced, without blur.
    strokes, canvas_size
        The pen strokes it came from, when drawn on the canvas.

    Returns
    -------
    Path
        The PNG written. Both files are written atomically.
    """
    from PIL import Image

    from mnist_desktop.core.checkpoint import atomic_write, atomic_write_bytes

    _check_label(label)
    image = np.asarray(image, dtype=np.float32)
    if image.shape != (28, 28):
        raise DataError(f"a correction must be a 28x28 image, got {image.shape}")
    folder = Path(folder)
    if not (folder / MANIFEST).exists():
        atomic_write_bytes(folder / MANIFEST, json.dumps({"format": FORMAT, "version": VERSION}).encode())
    now = datetime.datetime.now(datetime.timezone.utc)
    stem = f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"
    png = folder / label / f"{stem}.png"
    pixels = Image.fromarray(np.clip(np.rint(image * 255), 0, 255).astype(np.uint8), mode="L")
    sidecar: dict[str, Any] = {"label": label, "created": now.isoformat(timespec="seconds")}
    if strokes is not None:
        sidecar["strokes"] = [[[float(v) for v in p] for p in s] for s in strokes]
    if canvas_size is not None:
        sidecar["canvas_size"] = [int(canvas_size[0]), int(canvas_size[1])]
    for key, value in (("predicted", predicted), ("confidence", confidence), ("model", model)):
        if value is not None:
            sidecar[key] = value
    atomic_write(png, lambda tmp: pixels.save(tmp, format="PNG"))
    atomic_write_bytes(png.with_suffix(".json"), json.dumps(sidecar).encode())
    return png


def list_corrections(folder: str | os.PathLike) -> list[CorrectionSample]:
    """All samples of a corrections folder, in a deterministic order.

    Raises
    ------
    DataError
        When the folder is missing, empty, or a sidecar is not valid JSON.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"corrections folder not found: {folder}")
    out: list[CorrectionSample] = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        for png in sorted(sub.glob("*.png")):
            side = png.with_suffix(".json")
            meta: dict[str, Any] = {}
            if side.exists():
                try:
                    meta = json.loads(side.read_text(encoding="utf-8"))
                except (OSError, ValueError) as e:
                    raise DataError(f"{side}: unreadable sidecar ({str(e).splitlines()[0]})") from None
                if not isinstance(meta, dict):
                    raise DataError(f"{side}: sidecar must be a JSON object")
            out.append(CorrectionSample(png, sub.name, meta))
    if not out:
        raise DataError(f"{folder}: no corrections (expected <label>/<name>.png files)")
    return out


@dataclass
class CorrectionScan:
    """What :func:`scan_corrections` found: the usable samples and, for each skipped file,
    ``"path: why"``."""

    samples: list[CorrectionSample]
    problems: list[str]

    def counts(self) -> dict[str, int]:
        """Samples per label."""
        out: dict[str, int] = {}
        for s in self.samples:
            out[s.label] = out.get(s.label, 0) + 1
        return out


def scan_corrections(folder: str | os.PathLike) -> CorrectionScan:
    """Every readable sample of ``folder``, oldest first within each label; bad files are
    skipped with a message (never raises for the folder's contents).

    A sample is skipped when its PNG cannot be read or is not 28x28, or its sidecar is not
    a JSON object. A missing folder is an empty scan.
    """
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    samples: list[CorrectionSample] = []
    problems: list[str] = []
    try:
        subs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return CorrectionScan([], [])
    for sub in subs:
        try:
            pngs = sorted(sub.glob("*.png"))
        except OSError as e:
            problems.append(f"{sub}: cannot list ({e.strerror or e})")
            continue
        for png in pngs:
            try:
                with Image.open(png) as img:
                    size = img.size
                    img.load()
            except (OSError, UnidentifiedImageError, ValueError) as e:
                why = str(e).splitlines()[0].replace(f"'{png}'", "").replace(str(png), "").strip()
                problems.append(f"{png.name} in {sub.name}: not a readable PNG ({why[:60]})")
                continue
            if size != (28, 28):
                problems.append(f"{png.name} in {sub.name}: {size[0]}x{size[1]}, not 28x28")
                continue
            meta: Any = {}
            side = png.with_suffix(".json")
            if side.exists():
                try:
                    meta = json.loads(side.read_text(encoding="utf-8"))
                except (OSError, ValueError, UnicodeDecodeError):
                    problems.append(f"{side.name} in {sub.name}: unreadable sidecar (not JSON)")
                    continue
                if not isinstance(meta, dict):
                    problems.append(f"{side.name} in {sub.name}: sidecar is not a JSON object")
                    continue
            samples.append(CorrectionSample(png, sub.name, meta))
    return CorrectionScan(samples, problems)


def _check_label(label: str) -> None:
    if not label or label in (".", "..") or label.startswith(".") or any(c in label for c in "/\\\0:"):
        raise DataError(f"cannot use {label!r} as a class folder name")


def relabel_correction(png: str | os.PathLike, label: str) -> Path:
    """Move a sample (PNG and sidecar) to the ``label`` folder of its corrections folder;
    the sidecar's ``label`` is rewritten. Returns the new PNG path.

    Raises
    ------
    DataError
        A bad label name, or a file that cannot be moved (the message names it).
    """
    from mnist_desktop.core.atomic_io import atomic_write_bytes

    _check_label(label)
    png = Path(png)
    root = png.parent.parent
    if png.parent.name == label:
        return png
    dest = root / label / png.name
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        side = png.with_suffix(".json")
        meta: dict[str, Any] = {}
        if side.exists():
            try:
                loaded = json.loads(side.read_text(encoding="utf-8"))
                meta = loaded if isinstance(loaded, dict) else {}
            except (ValueError, UnicodeDecodeError):
                meta = {}
        meta["label"] = label
        # The sidecar first (written whole at its new place), then the PNG: a crash in
        # between leaves a complete sample at one place or the other, never a half one.
        atomic_write_bytes(dest.with_suffix(".json"), json.dumps(meta).encode())
        os.replace(png, dest)
        if side.exists():
            side.unlink()
    except OSError as e:
        raise DataError(f"cannot move {png.name} to {label}: {e.strerror or e}") from None
    return dest


def delete_correction(png: str | os.PathLike) -> None:
    """Remove a sample (PNG and sidecar); a class folder left empty is removed too.

    Raises
    ------
    DataError
        The files could not be removed (the message names them).
    """
    png = Path(png)
    try:
        png.unlink(missing_ok=True)
        png.with_suffix(".json").unlink(missing_ok=True)
    except OSError as e:
        raise DataError(f"cannot delete {png.name}: {e.strerror or e}") from None
    try:
        png.parent.rmdir()   # only when empty
    except OSError:
        pass


def copy_corrections(samples: Sequence[CorrectionSample], folder: str | os.PathLike) -> Path:
    """Copy ``samples`` into a new corrections folder ``folder`` (with its manifest): a
    frozen snapshot a training run reads, so later edits do not change a run's data."""
    import shutil

    from mnist_desktop.core.atomic_io import atomic_write_bytes

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / MANIFEST, json.dumps({"format": FORMAT, "version": VERSION}).encode())
    for s in samples:
        dest = folder / s.label / s.png.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(s.png, dest)
        atomic_write_bytes(dest.with_suffix(".json"), json.dumps({**s.sidecar, "label": s.label}).encode())
    return folder


def iter_correction_images(samples: Sequence[CorrectionSample], options) -> Iterator[np.ndarray]:
    """The 28x28 training image of each sample, through the one preprocessing path.

    Raises
    ------
    DataError
        Naming the file, for a corrupt PNG, a PNG that is not 28x28 (mixed sizes), bad
        strokes, or a blank sample.
    """
    from mnist_desktop.core.preprocess import (Drawing, EmptyInputError, ImageReadError, load_image,
                                               preprocess)

    for s in samples:
        try:
            img = load_image(s.png)
        except ImageReadError as e:
            raise DataError(f"{s.png}: {e}") from None
        if img.size != (28, 28):
            raise DataError(f"{s.png}: is {img.width}x{img.height}; corrections must all be 28x28 "
                            f"(mixed image sizes in {s.png.parent.parent})")
        strokes = s.sidecar.get("strokes")
        try:
            if strokes:
                size = s.sidecar.get("canvas_size") or (280, 280)
                source = Drawing.from_lists(strokes, (int(size[0]), int(size[1])))
            else:
                source = img
            yield preprocess(source, options)
        except (EmptyInputError, ImageReadError) as e:   # ImageReadError: NaN/Inf pixels
            raise DataError(f"{s.png}: {e}") from None
        except (ValueError, TypeError, IndexError) as e:
            raise DataError(f"{s.png}: bad strokes in sidecar ({str(e).splitlines()[0]})") from None
