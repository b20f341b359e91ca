"""Hostile files: no image may run an interpreter, no file may poison its batch, no name
may run as a spreadsheet formula, and nothing crashes or hangs the app.

The suite builds its own hostile-input corpus (:func:`build_corpus`, session-scoped):
PostScript, EPS and PDF files named .png (one writes a marker file, one loops forever),
float TIFFs of NaN and Inf, a truncated PNG, an empty file, decompression-bomb headers
(PNG and GIF), a symlink loop, a FIFO, a directory named x.png, and good digits with
CSV-injection names beside them. It goes through ``mnist-desktop classify`` as a
subprocess (under a timeout, with its own empty TMPDIR) and through the main window's
open path; the batch window's thumbnails, which Qt's TIFF handler used to crash, run in a
child process so that a segfault fails a test instead of killing pytest.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from test_ui_helpers import make_window, settings_store, shared_worker, user_data  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parents[1]
CLI_TIMEOUT = 240

# --------------------------------------------------------------------------- the corpus

EPS_TEMPLATE = """%!PS-Adobe-3.0 EPSF-3.0
%%BoundingBox: 0 0 28 28
({marker}) (w) file closefile
newpath 4 4 moveto 24 24 lineto 4 setlinewidth stroke
showpage
"""
PS_LOOP = "%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\n{} loop\n"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
# Good digits whose names a spreadsheet would run as formulas
INJECTION_NAMES = ['=HYPERLINK("https:example.com","click").png', "+1.png", "-2.png", "@SUM(A1).png",
                   "\tx.png"]


def digit(kind: str, side: int = 28) -> Image.Image:
    """A dark-on-white digit-like drawing: '1' (a bar), '0' (a ring) or '7'."""
    img = Image.new("L", (side, side), 255)
    d = ImageDraw.Draw(img)
    s = side / 28
    w = max(2, round(3 * s))
    if kind == "1":
        d.line([(14 * s, 4 * s), (14 * s, 24 * s)], fill=0, width=w)
    elif kind == "0":
        d.ellipse([8 * s, 4 * s, 20 * s, 24 * s], outline=0, width=w)
    else:
        d.line([(8 * s, 5 * s), (20 * s, 5 * s), (12 * s, 24 * s)], fill=0, width=w)
    return img


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """The header of a ``width`` x ``height`` gray PNG and a few rows of data: a
    decompression bomb's shape (400 megapixels from some bytes)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1) * 4)) + png_chunk(b"IEND", b""))


def huge_gif(side: int = 65535) -> bytes:
    """A GIF whose logical screen is ``side`` x ``side`` around a 1x1 frame."""
    return (b"GIF89a" + struct.pack("<HH", side, side) + b"\x80\x00\x00" + b"\x00\x00\x00\xff\xff\xff"
            + b"," + struct.pack("<HHHH", 0, 0, 1, 1) + b"\x00" + b"\x02\x02\x44\x01\x00" + b";")


def dos_eps(ps: str) -> bytes:
    """A DOS binary EPS (the \\xc5\\xd0\\xd3\\xc6 header) around PostScript ``ps``."""
    body = ps.encode()
    return b"\xc5\xd0\xd3\xc6" + struct.pack("<IIIIIIH", 30, len(body), 0, 0, 0, 0, 0xFFFF) + body


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@dataclass
class Corpus:
    root: Path
    folder: Path                                   # every case and the good files
    good: list[Path] = field(default_factory=list)
    hostile: dict[Path, str] = field(default_factory=dict)   # file -> what its error says (regex)
    folders: list[Path] = field(default_factory=list)        # directories named like images
    markers: list[Path] = field(default_factory=list)        # files that must never appear

    def __len__(self) -> int:
        return len(self.good) + len(self.hostile) + len(self.folders)


def build_corpus(root: Path) -> Corpus:
    """Write the hostile corpus (and good neighbours) under ``root``."""
    folder = root / "in"
    folder.mkdir(parents=True)
    c = Corpus(root, folder)

    def bad(name: str, data: bytes, expect: str) -> None:
        (folder / name).write_bytes(data)
        c.hostile[folder / name] = expect

    # programs and documents named .png: refused by their first bytes, never run
    for name in ("eps.png", "dos_eps.png"):
        marker = root / f"marker-{name}"
        c.markers.append(marker)
        ps = EPS_TEMPLATE.format(marker=marker)
        bad(name, ps.encode() if name == "eps.png" else dos_eps(ps), r"^PostScript \(EPS\) files are not opened")
    bad("loop.png", PS_LOOP.encode(), r"^PostScript \(EPS\) files are not opened")
    bad("document.png", PDF, r"^PDF files are not opened")
    # non-finite float pixels: refused, and the other files of the chunk unaffected
    buf = io.BytesIO()
    Image.fromarray(np.full((28, 28), np.nan, np.float32), mode="F").save(buf, "TIFF")
    bad("nan.tif", buf.getvalue(), r"NaN/Inf")
    inf = np.zeros((28, 28), np.float32)
    inf[6:22, 12:16] = np.inf
    buf = io.BytesIO()
    Image.fromarray(inf, mode="F").save(buf, "TIFF")
    bad("inf.tif", buf.getvalue(), r"NaN/Inf")
    # broken and oversized files
    good_png = png_bytes(digit("7", 120))
    bad("truncated.png", good_png[:len(good_png) // 2], r"truncated|corrupt")
    bad("empty.png", b"", r"empty file")
    bad("bomb.png", bomb_png(), r"too large")
    bad("huge.gif", huge_gif(), r"too large")
    # things that are not regular files
    os.symlink("loop_link.png", folder / "loop_link.png")
    c.hostile[folder / "loop_link.png"] = r"symlink loop"
    os.mkfifo(folder / "fifo.png")
    c.hostile[folder / "fifo.png"] = r"not a regular file"
    (folder / "x.png").mkdir()
    c.folders.append(folder / "x.png")
    # good neighbours: small (stacked) and large (one by one), some with formula names
    for i in range(24):
        p = folder / f"good_{i:02d}.png"
        p.write_bytes(png_bytes(digit("107"[i % 3], 28 if i % 4 else 90)))
        c.good.append(p)
    digit("0", 28).save(folder / "good_tiff.tif")
    c.good.append(folder / "good_tiff.tif")
    for i, name in enumerate(INJECTION_NAMES):
        (folder / name).write_bytes(png_bytes(digit("107"[i % 3])))
        c.good.append(folder / name)
    return c


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Corpus:
    return build_corpus(tmp_path_factory.mktemp("hostile"))


# --------------------------------------------------------------------------- the CLI

def run_cli(args: list[str], tmp: Path, cwd: Path = REPO, timeout: float = CLI_TIMEOUT
            ) -> subprocess.CompletedProcess:
    """``mnist-desktop classify ARGS`` in a child process whose TMPDIR and HOME are the
    empty folders ``tmp`` and ``tmp.parent / "home"`` (user data: the test's own, see
    conftest)."""
    home = tmp.parent / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
    env.update(TMPDIR=str(tmp), HOME=str(home),
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "mnist_desktop", "classify", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, errors="surrogateescape")


def csv_rows(text: str) -> dict[str, dict]:
    return {r["path"]: r for r in csv.DictReader(io.StringIO(text))}


def same_result(a: dict, b: dict) -> bool:
    """Two CSV rows with the same answer (probabilities to 1e-5: the batches differ)."""
    probs = [k for k in a if k.startswith("p_")]
    return a["prediction"] == b["prediction"] and a["error"] == b["error"] and all(
        abs(float(a[k]) - float(b[k])) <= 1e-5 for k in probs)


@pytest.mark.slow
def test_classify_gives_each_hostile_file_its_one_line_error_and_leaves_the_rest_alone(corpus, tmp_path):
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    proc = run_cli(["--workers", "2", str(corpus.folder)], tmp)
    assert proc.returncode == 1, proc.stderr[-3000:]
    rows = csv_rows(proc.stdout)
    # every file has one row (the directory named x.png is a folder: it has none)
    assert len(rows) == len(corpus.good) + len(corpus.hostile), sorted(rows)
    for path, expect in corpus.hostile.items():
        row = rows[str(path)]
        assert re.search(expect, row["error"]), (path.name, row["error"])
        assert "\n" not in row["error"] and len(row["error"]) < 200
        assert row["prediction"] == "" and f"{path}: {row['error']}" in proc.stderr
    for folder in corpus.folders:
        assert str(folder) not in rows
    # the good neighbours: what they get when classified without the others
    alone = run_cli(["--workers", "2", *map(str, corpus.good)], tmp)
    assert alone.returncode == 0, alone.stderr[-3000:]
    alone_rows = csv_rows(alone.stdout)
    for path in corpus.good:
        row = rows[str(path)]
        assert row["error"] == "" and row["prediction"] and same_result(row, alone_rows[str(path)]), path.name
    # nothing ran: no marker file, nothing left in the child's TMPDIR or home
    assert not [m for m in corpus.markers if m.exists()]
    assert list(tmp.iterdir()) == [] and list((tmp_path / "home").iterdir()) == []


def test_csv_escapes_formula_names_and_json_keeps_them_exact(corpus, tmp_path):
    """Relative names start their cell: each that a spreadsheet would run gets a '."""
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    out, js = tmp_path / "results.csv", tmp_path / "results.json"
    proc = run_cli(["--workers", "0", "-o", str(out), "--", *INJECTION_NAMES], tmp, cwd=corpus.folder)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert sorted(r[0] for r in rows[1:]) == sorted("'" + n for n in INJECTION_NAMES)
    for row in rows:
        assert not any(cell[:1] in ("=", "+", "-", "@", "\t", "\r") for cell in row), row
    proc = run_cli(["--workers", "0", "-o", str(js), "--", *INJECTION_NAMES], tmp, cwd=corpus.folder)
    assert proc.returncode == 0, proc.stderr
    assert sorted(r["path"] for r in json.loads(js.read_text())["results"]) == sorted(INJECTION_NAMES)
    assert list(tmp.iterdir()) == []


def test_csv_cells_never_start_a_formula():
    from mnist_desktop.core.batch import FileResult, csv_header, csv_row, csv_text, result_record

    labels = ["+1", "-1", "=2", "@3", "\t4", "\r5", "6"]
    r = FileResult('=HYPERLINK("http://example.com","x").png', labels,
                   probs=np.array([0.7, 0.1, 0.05, 0.05, 0.04, 0.03, 0.03], np.float32),
                   corrected_label="=2")
    row = csv_row(r, corrected=True)
    assert row[0] == "'=HYPERLINK(\"http://example.com\",\"x\").png"
    assert row[1] == "'+1" and row[-1] == "'=2"
    assert csv_header(labels)[5:] == [f"p_{lab}" for lab in labels]   # "p_" is harmless already
    failed = FileResult("-rm.png", labels, error="@error")
    assert csv_row(failed)[0] == "'-rm.png" and csv_row(failed)[4] == "'@error"
    for text in ("1.png", "a=b.png", "/abs/=x.png", ""):
        assert csv_text(text) == text
    # JSON keeps every text exact
    rec = result_record(r)
    assert rec["path"] == r.path and rec["prediction"] == "+1" and rec["corrected_label"] == "=2"


def test_classify_help_says_how_csv_cells_are_escaped():
    from mnist_desktop.cli import CLASSIFY_EPILOG

    text = " ".join(CLASSIFY_EPILOG.split())
    assert "formula" in text and "=, +, -, @" in text and "JSON" in text


# --------------------------------------------------------------------------- the core

def test_postscript_is_never_run_however_it_is_named(corpus, tmp_path):
    """load_image (every open path: classify, the app's open/drop/paste, thumbnails) and
    the batch decoder refuse EPS/PS/PDF by content, whatever the name, and Ghostscript never runs."""
    from mnist_desktop.core.batch import decode_chunk, decode_one
    from mnist_desktop.core.preprocess import ImageReadError, PreprocessOptions, load_image

    cases = [p for p in corpus.hostile if p.name in ("eps.png", "dos_eps.png", "loop.png", "document.png")]
    for p in cases:
        with pytest.raises(ImageReadError, match="are not opened"):
            load_image(p)
        with pytest.raises(ImageReadError, match="are not opened"):
            load_image(io.BytesIO(p.read_bytes()))
        assert "are not opened" in decode_one(str(p), PreprocessOptions())[1]
    _, errors = decode_chunk([str(p) for p in cases], PreprocessOptions())
    assert all("are not opened" in e for e in errors)
    assert not [m for m in corpus.markers if m.exists()]


def test_the_eps_of_the_corpus_would_run_without_the_allow_list(tmp_path):
    """The corpus is not toothless: Pillow left to itself hands the EPS to Ghostscript,
    which writes the marker file (skipped where Ghostscript is not installed)."""
    import shutil

    if shutil.which("gs") is None:
        pytest.skip("Ghostscript is not installed")
    marker = tmp_path / "marker"
    p = tmp_path / "eps.png"
    p.write_text(EPS_TEMPLATE.format(marker=marker))
    with Image.open(p) as im:
        assert im.format == "EPS"
        try:
            im.load()
        except OSError:
            pass
    assert marker.exists()


def test_refused_formats_are_named():
    from mnist_desktop.core.preprocess import IMAGE_FORMATS, refused_format

    assert refused_format(b"%!PS-Adobe-3.0 EPSF").startswith("PostScript (EPS) files are not opened")
    assert refused_format(b"\xc5\xd0\xd3\xc6\x1e\x00").startswith("PostScript (EPS)")
    assert refused_format(b"%PDF-1.7\n").startswith("PDF files")
    assert refused_format(b"8BPS\x00\x01").startswith("PSD images are not opened")
    assert refused_format(b"just some text") is None
    assert "EPS" not in IMAGE_FORMATS and "PDF" not in IMAGE_FORMATS


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".jpeg", ".jfif", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                                    ".pgm", ".ppm", ".pbm", ".pnm", ".ico", ".tga"])
def test_every_listed_image_suffix_still_opens(tmp_path, suffix):
    from mnist_desktop.core.data import IMAGE_SUFFIXES
    from mnist_desktop.core.preprocess import load_image, preprocess

    assert suffix in IMAGE_SUFFIXES
    img = digit("1", 32)
    fmt = {".jfif": "JPEG", ".pnm": "PPM", ".pbm": "PPM"}.get(suffix)
    p = tmp_path / f"digit{suffix}"
    (img.convert("1") if suffix == ".pbm" else img).save(p, fmt)
    out = preprocess(load_image(p))
    assert out.shape == (28, 28) and np.isfinite(out).all() and out.max() > 0.9


def test_one_non_finite_image_fails_alone_among_300(tmp_path):
    """300 PNGs, a NaN float TIFF and an Inf one: exactly those two fail, with a clear
    message, and every other file decodes exactly as it does alone."""
    from mnist_desktop.core.batch import decode_chunk, decode_one
    from mnist_desktop.core.preprocess import PreprocessOptions

    rng = np.random.default_rng(7)
    paths = []
    for i in range(300):
        a = np.zeros((28, 28), np.uint8)
        a[5 + i % 4:22, 9:17 + i % 5] = rng.integers(90, 256, (17 - i % 4, 8 + i % 5))
        p = tmp_path / f"g{i:03d}.png"
        Image.fromarray(a).save(p)
        paths.append(str(p))
    nan, inf = tmp_path / "nan.tif", tmp_path / "inf.tif"
    Image.fromarray(np.full((28, 28), np.nan, np.float32), mode="F").save(nan)
    a = np.zeros((28, 28), np.float32)
    a[4:24, 10:18] = np.inf
    Image.fromarray(a, mode="F").save(inf)
    paths[100:100] = [str(nan)]
    paths[250:250] = [str(inf)]
    opts = PreprocessOptions()
    images, errors = decode_chunk(paths, opts)
    assert [i for i, e in enumerate(errors) if e] == [100, 250]
    assert errors[100] == errors[250] == "image has NaN/Inf pixels"
    assert np.isfinite(images).all() and len(images) == 300
    alone = [decode_one(p, opts)[0] for p in paths if p not in (str(nan), str(inf))]
    np.testing.assert_array_equal(images, np.stack(alone))


def test_preprocess_output_is_always_finite():
    from mnist_desktop.core.preprocess import ImageReadError, preprocess, preprocess_small_batch

    a = np.zeros((28, 28), np.float32)
    a[5:20, 12:16] = 1.0
    for bad in (np.nan, np.inf, -np.inf):
        b = a.copy()
        b[10, 13] = bad
        with pytest.raises(ImageReadError, match="NaN/Inf"):
            preprocess(b)
        with pytest.raises(ImageReadError, match="NaN/Inf"):
            preprocess(Image.fromarray(b, mode="F"))
    with pytest.raises(ImageReadError):
        preprocess(np.full((28, 28), 1e300))   # overflows float32 on the way in
    out = preprocess_small_batch(np.stack([a, np.where(a > 0, np.nan, 0).astype(np.float32), a]))
    assert isinstance(out[1], ImageReadError)
    np.testing.assert_array_equal(out[0], preprocess(a))
    np.testing.assert_array_equal(out[2], preprocess(a))


# --------------------------------------------------------------------------- the app

@pytest.mark.gui
def test_the_app_gives_each_hostile_file_a_one_line_notice(corpus, make_window, shared_worker, qtbot):
    """The main window's open path (File > Open, drop and paste of files all end in
    open_files): one notice per hostile file, no crash, and the app still classifies."""
    from test_ui_helpers import RESULT_TIMEOUT_MS

    w = make_window(worker=shared_worker)
    seen = {}
    for path in [*corpus.hostile, *corpus.folders]:
        with qtbot.waitSignal(w.banner.messageShown, timeout=RESULT_TIMEOUT_MS) as blocker:
            w.open_files([path])
        level, text = blocker.args
        seen[path.name] = text
        assert level == "error" and path.name in text and "\n" not in text, (path.name, text)
    assert "PostScript" in seen["eps.png"] and "PDF" in seen["document.png"]
    assert "NaN/Inf" in seen["nan.tif"] and "too large" in seen["bomb.png"]
    assert not [m for m in corpus.markers if m.exists()]
    with qtbot.waitSignal(w.live.settled, timeout=RESULT_TIMEOUT_MS) as blocker:
        w.open_files([corpus.good[0]])
    assert blocker.args[0] is not None and blocker.args[0].label == "1"


# --------------------------------------------------------------------------- batch thumbnails

CHILD = "MNIST_DESKTOP_HOSTILE_CHILD"


@pytest.mark.gui
@pytest.mark.slow
def test_batch_window_shows_every_format_its_file_dialog_offers(tmp_path):
    """Qt's TIFF handler crashed the app (a QBuffer freed before its reader): the batch
    window classifies one file of every format its Open dialog offers, plus hostile ones,
    and draws their thumbnails, in a child process, so that a segfault fails this test."""
    env = dict(os.environ, **{CHILD: str(tmp_path)},
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore",
                           f"{__file__}::test_child_batch_window_formats"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT)
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
    assert "1 passed" in proc.stdout


@pytest.mark.gui
@pytest.mark.skipif(not os.environ.get(CHILD), reason="runs in a child process: "
                    "test_batch_window_shows_every_format_its_file_dialog_offers")
def test_child_batch_window_formats(qtbot, monkeypatch, default_model):
    from PySide6.QtWidgets import QFileDialog, QMessageBox

    from mnist_desktop.core.torch_predictor import TorchPredictor
    from mnist_desktop.ui.batch import BatchWindow

    folder = Path(os.environ[CHILD]) / "formats"
    folder.mkdir()
    offered: list[str] = []

    def open_files_dialog(parent, caption, directory, filter_text, *args, **kwargs):
        # the user picks one image of every type the dialog's first filter offers
        offered.extend(re.findall(r"\*\.(\w+)", filter_text.split(";;")[0]))
        files = []
        for ext in offered:
            p = folder / f"digit.{ext}"
            img = digit("7", 40)
            img.convert("L" if ext == "pgm" else "RGB").save(p)
            files.append(str(p))
        a = np.asarray(digit("1", 40))   # TIFF variants: 16-bit, float, LZW-compressed
        Image.fromarray(a.astype(np.uint16) * 257).save(folder / "digit16.tif")
        Image.fromarray(a.astype(np.float32) / 255).save(folder / "float.tif")
        digit("0", 40).save(folder / "lzw.tiff", compression="tiff_lzw")
        files += [str(folder / n) for n in ("digit16.tif", "float.tif", "lzw.tiff")]
        nan = folder / "nan.tif"
        Image.fromarray(np.full((28, 28), np.nan, np.float32), mode="F").save(nan)
        eps = folder / "eps.png"
        eps.write_text(EPS_TEMPLATE.format(marker=folder / "marker"))
        return files + [str(nan), str(eps)], filter_text

    monkeypatch.setattr(QFileDialog, "getOpenFileNames", open_files_dialog)
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.Yes)
    w = BatchWindow(TorchPredictor.from_file(default_model, "cpu"), "cpu", workers=0)
    qtbot.addWidget(w)
    w.show()
    with qtbot.waitSignal(w.runFinished, timeout=120_000):
        w.open_files_action.trigger()
    assert {"png", "jpg", "tif", "tiff", "webp"} <= set(offered)
    store = w.store
    n = len(store)
    assert n == len(offered) + 5
    by_name = {Path(store.path(i)).name: i for i in range(n)}
    assert store.error(by_name["nan.tif"]) == "image has NaN/Inf pixels"
    assert "PostScript" in store.error(by_name["eps.png"])
    assert store.failed == 2
    # every thumbnail, as the grid asks for them while the user scrolls
    for i in range(n):
        w.loader.icon(i, store.path(i))
    qtbot.waitUntil(lambda: all(i in w.loader._cache for i in range(n)), timeout=60_000)
    broken = {Path(store.path(i)).name for i in range(n) if w.loader._cache[i] is w.loader.broken_pixmap}
    assert broken == {"nan.tif", "eps.png"}
    assert not (folder / "marker").exists()
