"""Batch engine, export, sort-into-folders and ``classify`` CLI on a folder of good and
broken files (corrupt, truncated, empty, not an image, decompression bomb, symlink loops,
unreadable, a FIFO, non-UTF-8 and unicode names)."""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_desktop.core.batch import (BatchProgress, FileResult, ProgressMeter, ResultStore, classify_chunks,
                                      classify_files, collect_files, decode_one, display_path, write_results)
from mnist_desktop.core.preprocess import PreprocessOptions, load_image, preprocess

NON_UTF8 = b"caf\xe9_7.png"          # Latin-1 bytes: not valid UTF-8
UNICODE = "Ziffer_✓_数字.png"


# --------------------------------------------------------------------------- fixtures

def tiny_bomb_png() -> bytes:
    """A 60-byte PNG whose header claims 100,000 x 100,000 pixels."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def png_bytes(arr: np.ndarray, size: int | None = None) -> bytes:
    img = Image.fromarray(arr)
    if size:
        img = img.resize((size, size), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def linked_pngs(tmp_path: Path, image: np.ndarray, size: int, n: int) -> Path:
    """``tmp_path/many`` with ``n`` hard links to one ``size`` x ``size`` PNG of ``image``:
    a long run (for cancelling) that costs one file's worth of disk."""
    src = tmp_path / "one.png"
    src.write_bytes(png_bytes(image, size))
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(n):
        os.link(src, folder / f"{i:05d}.png")
    return folder


def make_mixed_folder(root: Path, mnist_test, n_good: int = 12) -> dict[str, str]:
    """Good digits in labelled sub-folders plus one file of every broken kind.

    Returns ``{file name: expected reason fragment}`` for the broken files; good files
    map to ``""``.
    """
    expect: dict[str, str] = {}
    for i in range(n_good):
        d = root / str(mnist_test.labels[i])
        d.mkdir(parents=True, exist_ok=True)
        (d / f"img_{i:03d}.png").write_bytes(png_bytes(mnist_test.images[i]))
        expect[f"img_{i:03d}.png"] = ""
    bad = root / "broken"
    bad.mkdir()
    good = png_bytes(mnist_test.images[0], 120)
    files = {
        "corrupt.png": (b"\x89PNG\r\n\x1a\n" + os.urandom(200), "image"),
        "truncated.png": (good[: len(good) // 2], "truncated"),
        "empty.png": (b"", "empty"),
        "notes.png": (b"shopping list: milk, eggs\n", "not an image"),
        "bomb.png": (tiny_bomb_png(), "too large"),
    }
    for name, (data, reason) in files.items():
        (bad / name).write_bytes(data)
        expect[name] = reason
    Image.new("L", (40, 40), 255).save(bad / "blank.png")
    expect["blank.png"] = "nothing to classify"
    os.symlink("selfloop.png", bad / "selfloop.png")           # a file symlink pointing at itself
    expect["selfloop.png"] = "symlink loop"
    os.symlink("..", bad / "up")                               # a folder symlink loop
    os.mkfifo(bad / "pipe.png")                                # would block open() forever
    expect["pipe.png"] = "not a regular file"
    locked = bad / "locked.png"
    locked.write_bytes(png_bytes(mnist_test.images[1]))
    locked.chmod(0)
    if os.geteuid() != 0:   # root reads it anyway; the unreadable case then gets simulated elsewhere
        expect["locked.png"] = "permission denied"
    else:
        expect["locked.png"] = ""
    names = root / "names"
    names.mkdir()
    (names / UNICODE).write_bytes(png_bytes(mnist_test.images[2]))
    expect[UNICODE] = ""
    with open(os.fsencode(names) + b"/" + NON_UTF8, "wb") as f:
        f.write(png_bytes(mnist_test.images[3]))
    expect[os.fsdecode(NON_UTF8)] = ""
    return expect


@pytest.fixture(scope="module")
def predictor(default_model):
    from mnist_desktop.core.torch_predictor import TorchPredictor
    return TorchPredictor.from_file(default_model, "cpu")


@pytest.fixture
def mixed(tmp_path, mnist_test):
    expect = make_mixed_folder(tmp_path / "in", mnist_test)
    yield tmp_path / "in", expect
    (tmp_path / "in" / "broken" / "locked.png").chmod(0o644)


def worker_pids() -> list[int]:
    """Processes below our children: the decoding workers (forked by the fork server,
    which, like multiprocessing's resource tracker, is a direct child and may stay)."""
    from mnist_desktop.batch_bench import _descendants

    def ppid(pid):
        try:
            stat = Path(f"/proc/{pid}/stat").read_bytes()
        except OSError:
            return None
        return int(stat[stat.rfind(b")") + 2:].split()[1])
    me = os.getpid()
    return [p for p in _descendants(me) if p != me and ppid(p) not in (me, None)]


def test_bench_times_the_model_alone(default_model):
    """The batch benchmark's model-only figure (the engine's ceiling) runs for ONNX Runtime
    and torch and gives a per-image time in a sane range for a 73k-parameter CNN."""
    from mnist_desktop.batch_bench import model_alone_us

    for backend in ("onnx", "torch"):
        us = model_alone_us(default_model, backend, batch=8, seconds=0.05)
        assert 1.0 < us < 50_000, (backend, us)


def test_bench_times_decoding_alone(tmp_path, mnist_test):
    """Decoding-only figure: small gray PNGs (libspng or Pillow) and an RGB one (Pillow)."""
    from mnist_desktop.batch_bench import decode_alone_us

    for i in range(5):
        (tmp_path / f"{i}.png").write_bytes(png_bytes(mnist_test.images[i]))
    Image.fromarray(np.stack([mnist_test.images[0]] * 3, -1)).save(tmp_path / "rgb.png")
    assert 0.1 < decode_alone_us(tmp_path) < 50_000
    assert decode_alone_us(tmp_path / "empty-or-missing") == 0.0


# --------------------------------------------------------------------------- engine

def test_mixed_folder_every_input_classified_or_reported(mixed, predictor):
    root, expect = mixed
    errors: list[tuple[str, str]] = []
    files = collect_files([root], errors=errors)
    assert any("symlink loop" in reason for _, reason in errors), errors  # broken/up -> ..
    from mnist_desktop.core.data import label_from_parent
    results = list(classify_files(files, predictor, workers=2, batch_size=4,
                                  true_label=lambda p: label_from_parent(p, predictor.labels)))
    assert [r.path for r in results] == files
    by_name = {os.path.basename(r.path): r for r in results}
    assert set(by_name) == set(expect)
    for name, reason in expect.items():
        r = by_name[name]
        if reason:
            assert not r.ok and reason in r.error and "\n" not in r.error, (name, r.error)
        else:
            assert r.ok and r.probs is not None and abs(float(r.probs.sum()) - 1) < 1e-4, (name, r.error)
    # labelled sub-folders give the true label; the digits are classified right
    good = [r for r in results if r.true_label is not None]
    assert len(good) == 12 and sum(r.prediction == r.true_label for r in good) >= 11
    fast = list(classify_files(files, predictor, workers=0, folder_labels=predictor.labels))
    assert [r.true_label for r in fast] == [r.true_label for r in results]


def test_unreadable_file_is_reported(tmp_path, mnist_test, predictor, monkeypatch):
    p = tmp_path / "locked.png"
    p.write_bytes(png_bytes(mnist_test.images[0]))
    p.chmod(0)
    try:
        if os.geteuid() == 0:
            # root reads mode-000 files, so simulate the refusal the OS gives everyone else
            import builtins

            def refusing(real):
                def opener(fp, *a, **k):
                    if os.fsdecode(fp) == str(p):
                        raise PermissionError(13, "Permission denied", str(p))
                    return real(fp, *a, **k)
                return opener
            monkeypatch.setattr(builtins, "open", refusing(builtins.open))
            monkeypatch.setattr(os, "open", refusing(os.open))
        (r,) = classify_files([p], predictor, workers=0)
        assert not r.ok and r.error == "permission denied"
    finally:
        p.chmod(0o644)


def test_decompression_bomb_refused_fast_without_allocating(tmp_path):
    p = tmp_path / "bomb.png"
    p.write_bytes(tiny_bomb_png())
    t0 = time.perf_counter()
    img, err = decode_one(str(p), PreprocessOptions())
    # 10^10 pixels would take 10 GB: an allocation would fail with MemoryError ("out of
    # memory") or take seconds; the header check refuses it at once.
    assert img is None and "too large" in err
    assert time.perf_counter() - t0 < 0.5


def test_parallel_results_equal_serial_in_input_order(tmp_path, mnist_test, predictor):
    folder = tmp_path / "many"
    for i in range(70):
        sub = folder / f"part{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{69 - i:03d}.png").write_bytes(png_bytes(mnist_test.images[i], 28 if i % 2 else 90))
    files = collect_files([folder])
    assert files == sorted(files)   # folder by folder, names sorted: deterministic
    serial = list(classify_files(files, predictor, workers=0, batch_size=16, keep_images=True))
    parallel = list(classify_files(files, predictor, workers=2, batch_size=5, max_in_flight=7,
                                   keep_images=True))
    again = list(classify_files(iter(files), predictor, workers=2, batch_size=64))
    assert [r.path for r in serial] == [r.path for r in parallel] == [r.path for r in again] == files
    for a, b in zip(serial, parallel):
        # the worker processes run the one preprocessing path: bit-identical input
        assert np.array_equal(a.image, b.image)
        assert np.array_equal(a.image, preprocess(load_image(a.path), predictor.options))
        assert np.allclose(a.probs, b.probs, atol=1e-5)
        assert a.prediction == b.prediction


def test_cancel_mid_run_keeps_results_and_stops_workers(tmp_path, mnist_test, predictor):
    folder = linked_pngs(tmp_path, mnist_test.images[0], 200, 2000)
    files = collect_files([folder])
    seen: list[list[FileResult]] = []
    t_cancel = None

    def should_cancel():
        return len(seen) >= 2

    t0 = time.perf_counter()
    for chunk in classify_chunks(files, predictor, workers=2, batch_size=20, should_cancel=should_cancel):
        seen.append(chunk)
        if len(seen) == 2:
            t_cancel = time.perf_counter()
    stop = time.perf_counter()
    got = [r for c in seen for r in c]
    assert len(seen) == 2 and 0 < len(got) <= 40 and all(r.ok for r in got)
    assert [r.path for r in got] == files[:len(got)]   # the results so far, in order
    assert stop - t_cancel < 2.0, "cancel must not wait for the queued chunks"
    assert stop - t0 < 20
    assert worker_pids() == []   # the decoding processes are gone


def slow_decoder(paths, options):
    """Decoder for the chunk-size test: 40 ms per file, like a photo."""
    from mnist_desktop.core.batch import decode_chunk
    time.sleep(0.04 * len(paths))
    return decode_chunk(paths, options)


@pytest.mark.slow
def test_slow_files_go_in_smaller_chunks_fast_ones_fill_batches(tmp_path, mnist_test, predictor):
    """Chunks last ~CHUNK_SECONDS of a worker: slow files (photos) come back a few at a
    time, so progress moves and the last chunk does not keep one core busy alone, while
    fast files still fill whole inference batches."""
    from mnist_desktop.core.batch import CHUNK_SECONDS, FIRST_CHUNK

    files = collect_files([linked_pngs(tmp_path, mnist_test.images[0], 28, 1200)])
    slow = list(classify_chunks(files[:150], predictor, workers=2, batch_size=64, decode_fn=slow_decoder))
    sizes = [len(c) for c in slow]
    assert [r.path for c in slow for r in c] == files[:150] and all(r.ok for c in slow for r in c)
    assert sizes[0] == FIRST_CHUNK and max(sizes[6:]) <= 2 * CHUNK_SECONDS / 0.04, sizes
    fast = [len(c) for c in classify_chunks(files, predictor, workers=2, batch_size=64)]
    assert sum(fast) == len(files) and fast[0] == FIRST_CHUNK and 64 in fast[5:], fast


def crash_on_marked_files(paths, options):
    """Decoder for the crash test: kills its worker process on files named *crash*,
    like a segfault in an image library would."""
    from mnist_desktop.core.batch import decode_chunk
    if any("crash" in os.path.basename(p) for p in paths):
        os._exit(3)
    return decode_chunk(paths, options)


def _folder_with_a_crashing_file(tmp_path, mnist_test) -> list[str]:
    """30 MNIST PNGs, the 14th named *crash* (see crash_on_marked_files); their listing."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(30):
        name = f"{i:03d}_crash.png" if i == 13 else f"{i:03d}.png"
        (folder / name).write_bytes(png_bytes(mnist_test.images[i]))
    return collect_files([folder])


def test_worker_crash_blames_only_the_file_and_run_continues(tmp_path, mnist_test, predictor):
    files = _folder_with_a_crashing_file(tmp_path, mnist_test)
    results = [r for c in classify_chunks(files, predictor, workers=2, batch_size=4,
                                          decode_fn=crash_on_marked_files) for r in c]
    assert [r.path for r in results] == files
    bad = [r for r in results if not r.ok]
    assert len(bad) == 1 and "crash" in bad[0].path and "crashed" in bad[0].error


def crash_or_classify(paths, options, onnx_path, source):
    """:func:`decode_and_classify` that kills its worker on files named *crash*."""
    from mnist_desktop.core.batch import decode_and_classify
    if any("crash" in os.path.basename(p) for p in paths):
        os._exit(3)
    return decode_and_classify(paths, options, onnx_path, source)


def test_onnx_runtime_classifies_in_the_workers(tmp_path, mnist_test, predictor, default_model):
    """With ONNX Runtime the workers decode and classify; the answers are the parent's,
    and a worker crash still costs only its file (the others keep their answers)."""
    import functools

    from mnist_desktop.core.batch import decode_and_classify
    from mnist_desktop.core.onnx_predictor import OnnxPredictor, onnx_for

    onnx = OnnxPredictor(onnx_for(default_model), source=default_model)
    files = _folder_with_a_crashing_file(tmp_path, mnist_test)
    in_parent = list(classify_files(files, predictor, workers=0))
    in_workers = list(classify_files(files, onnx, workers=2, batch_size=4))
    assert [r.path for r in in_workers] == files
    for a, b in zip(in_workers, in_parent):
        assert a.ok and np.abs(a.probs - b.probs).max() < 1e-5 and a.uncertain == b.uncertain
    crashing = functools.partial(crash_or_classify, onnx_path=str(onnx.onnx_path), source=str(default_model))
    results = [r for c in classify_chunks(files, onnx, workers=2, batch_size=4, decode_fn=crashing) for r in c]
    assert [r.path for r in results] == files
    bad = [r for r in results if not r.ok]
    assert len(bad) == 1 and "crash" in bad[0].path and "crashed" in bad[0].error
    for a, b in zip(results, in_parent):
        if a.ok:
            assert np.abs(a.probs - b.probs).max() < 1e-5
    # the worker-side function on its own: nothing decodable, or a model it cannot load,
    # leaves the answers to the parent
    images, errors = decode_and_classify([str(tmp_path / "missing.png")], onnx.options,
                                         str(onnx.onnx_path), str(default_model))
    assert len(images) == 0 and errors[0]
    out = decode_and_classify(files[:3], onnx.options, str(tmp_path / "gone.onnx"), str(default_model))
    assert len(out) == 4 and len(out[0]) == 3 and out[1] == [None] * 3 and out[2] is None and out[3]
    gone = functools.partial(decode_and_classify, onnx_path=str(tmp_path / "gone.onnx"), source=str(default_model))
    notes: list[str] = []
    results = [r for c in classify_chunks(files, onnx, workers=2, batch_size=4, decode_fn=gone,
                                          on_note=notes.append) for r in c]
    for a, b in zip(results, in_parent):
        assert a.ok == b.ok and (not a.ok or np.abs(a.probs - b.probs).max() < 1e-5)
    # the user is told once, with the reason, that the slower path answered
    assert len(notes) == 1 and "worker processes" in notes[0] and "same answers, slower" in notes[0], notes


def crash_or_classify_lean(paths, options, onnx_path, source):
    """As :func:`crash_or_classify` without shipping images back, and when the file
    ``014.png`` is decoded alone (isolating the crash next to it) its model cannot load:
    one chunk's files then come back partly answered in the workers, partly not."""
    from mnist_desktop.core.batch import decode_and_classify
    if any("crash" in os.path.basename(p) for p in paths):
        os._exit(3)
    if len(paths) == 1 and paths[0].endswith("014.png"):
        onnx_path = onnx_path + ".gone"
    return decode_and_classify(paths, options, onnx_path, source, keep_images=False)


def test_worker_answers_without_images_and_mixed_isolation(tmp_path, mnist_test, predictor, default_model):
    """Workers send no 28x28 inputs back unless asked (``keep_images``); with them the
    results carry the inputs. A crash isolated in a chunk whose files come back partly
    classified, partly not, still gives every other file its right answer."""
    import functools

    from mnist_desktop.core.onnx_predictor import OnnxPredictor, onnx_for

    onnx = OnnxPredictor(onnx_for(default_model), source=default_model)
    files = _folder_with_a_crashing_file(tmp_path, mnist_test)
    in_parent = list(classify_files(files, predictor, workers=0, keep_images=True))
    lean = list(classify_files(files, onnx, workers=2, batch_size=4))
    kept = list(classify_files(files, onnx, workers=2, batch_size=4, keep_images=True))
    for a, b, c in zip(lean, kept, in_parent):
        assert a.image is None and np.array_equal(b.image, c.image)
        assert np.abs(a.probs - c.probs).max() < 1e-5 and np.abs(b.probs - c.probs).max() < 1e-5
    mixed = functools.partial(crash_or_classify_lean, onnx_path=str(onnx.onnx_path), source=str(default_model))
    notes: list[str] = []
    results = [r for c in classify_chunks(files, onnx, workers=2, batch_size=4, decode_fn=mixed,
                                          on_note=notes.append) for r in c]
    assert [r.path for r in results] == files
    assert [r.path for r in results if not r.ok] == [files[13]]
    for a, b in zip(results, in_parent):
        if a.ok:
            assert np.abs(a.probs - b.probs).max() < 1e-5
    # the file whose worker could not load the model was answered here, and the user is told
    assert len(notes) == 1 and "same answers, slower" in notes[0] and ".gone" in notes[0], notes


def report_heavy_modules(paths, options):
    """Decoder for the test below: says which heavy modules its worker process holds."""
    import sys
    heavy = sorted(m for m in ("torch", "torchvision", "PySide6") if m in sys.modules)
    return np.empty((0, 28, 28), np.float32), [",".join(heavy) or "clean"] * len(paths)


def test_decoding_workers_never_import_torch_or_qt(tmp_path, predictor):
    import sys
    assert "torch" in sys.modules   # the parent has it: workers must not inherit it
    (tmp_path / "a.png").write_bytes(b"x")
    (r,) = [x for c in classify_chunks([tmp_path / "a.png"], predictor, workers=1,
                                       decode_fn=report_heavy_modules) for x in c]
    assert r.error == "clean"


def test_the_worker_side_imports_neither_torch_nor_qt():
    """Worker processes import the decoding module (and so the whole package) by name."""
    import subprocess
    import sys

    code = ("import sys; import mnist_desktop.core.batch.decoding\n"
            "print(','.join(m for m in ('torch', 'torchvision', 'PySide6') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == ""


def report_priority(paths, options):
    """Decoder for the test below: its worker process's nice value and scheduling policy."""
    policy = os.sched_getscheduler(0) if hasattr(os, "sched_getscheduler") else -1
    return np.empty((0, 28, 28), np.float32), [f"{os.nice(0)} {policy}"] * len(paths)


@pytest.mark.skipif(not hasattr(os, "nice"), reason="nice values are POSIX")
def test_decoding_workers_run_below_the_callers_priority(tmp_path, predictor):
    """Batch workers leave the GUI process its core: every worker runs niced (and under
    SCHED_BATCH where Linux has it), the calling process keeps its priority."""
    from mnist_desktop.core.batch.decoding import WORKER_NICENESS

    parent = os.nice(0)
    if parent >= 19:
        pytest.skip("this process already runs at the lowest priority")
    for i in range(8):
        (tmp_path / f"{i}.png").write_bytes(b"x")
    results = [r for c in classify_chunks(sorted(tmp_path.iterdir()), predictor, workers=2, batch_size=1,
                                          decode_fn=report_priority) for r in c]
    assert len(results) == 8
    for r in results:
        nice, policy = map(int, r.error.split())
        assert nice > parent and nice == min(19, parent + WORKER_NICENESS), (parent, r.error)
        if hasattr(os, "SCHED_BATCH"):
            assert policy == os.SCHED_BATCH, r.error
    assert os.nice(0) == parent
    if hasattr(os, "sched_getscheduler"):
        assert os.sched_getscheduler(0) != getattr(os, "SCHED_BATCH", None)


def test_bytes_and_non_utf8_paths(tmp_path, mnist_test, predictor):
    folder = os.fsencode(tmp_path)
    path = folder + b"/" + NON_UTF8
    with open(path, "wb") as f:
        f.write(png_bytes(mnist_test.images[5]))
    files = collect_files([folder])
    assert files == [os.fsdecode(path)]
    (r,) = classify_files([path], predictor, workers=0)
    assert r.ok and r.prediction == str(mnist_test.labels[5])
    shown = display_path(r.path)
    shown.encode("utf-8")  # always encodable
    assert shown.endswith("caf\\xe9_7.png")
    assert display_path(str(tmp_path / UNICODE)).endswith(UNICODE)  # valid names unchanged


def test_progress_meter_rate_and_eta():
    t = [0.0]
    meter = ProgressMeter(total=1000, window=10, clock=lambda: t[0])
    labels = ["a", "b"]
    t[0] = 1.0
    p = meter.update([FileResult("x", labels, probs=np.array([0.4, 0.6]))] * 100)
    assert p.done == 100 and p.rate == pytest.approx(100) and p.eta == pytest.approx(9)
    t[0] = 2.0
    p = meter.update([FileResult("y", labels, error="bad")] * 100)
    assert p.failed == 100 and p.fraction == pytest.approx(0.2)
    assert "200 / 1,000 files" in p.describe() and "ETA 0:08" in p.describe() and "100 failed" in p.describe()
    assert BatchProgress(5, None, 0, 1.0, 5.0).eta is None


# --------------------------------------------------------------------------- store & export

def _store_with(labels=("0", "1", "2")):
    s = ResultStore(list(labels))
    s.extend([FileResult("/a/0/x.png", labels, probs=np.array([0.7, 0.2, 0.1], np.float32), true_label="0"),
              FileResult("/a/1/y.png", labels, probs=np.array([0.1, 0.3, 0.6], np.float32), uncertain=False,
                         true_label="1"),
              FileResult("/a/z.png", labels, error="not an image Pillow can read"),
              FileResult(os.fsdecode(b"/a/\xff.png"), labels, probs=np.array([0.3, 0.35, 0.35], np.float32),
                         uncertain=True)])
    return s


def test_result_store_is_compact_and_reports(tmp_path):
    s = _store_with()
    assert len(s) == 4 and s.failed == 1 and not s.ok(2)
    assert s.prediction(1) == "2" and s.true_label(1) == "1" and s.final_label(1) == "2"
    s.set_corrected(1, "1")
    assert s.corrected_label(1) == "1" and s.final_label(1) == "1" and s.has_corrections
    s.set_corrected(1, "2")            # the prediction itself: no correction
    assert s.corrected_label(1) is None
    rep = s.report()
    assert rep["n"] == 2 and rep["accuracy"] == 0.5
    assert rep["confusion_matrix"][1][2] == 1 and list(s.cell_rows(1, 2)) == [1]
    big = ResultStore([str(i) for i in range(10)])
    probs = np.eye(10, dtype=np.float32)
    big.extend(FileResult(f"/d/{i}.png", big.labels, probs=probs[i % 10]) for i in range(5000))
    assert len(big) == 5000 and big.probs.nbytes + big.predicted.nbytes < 5000 * 80


def test_export_csv_and_json_columns_with_corrections(tmp_path):
    s = _store_with()
    write_results(tmp_path / "plain.csv", s, s.labels)
    rows = list(csv.reader(open(tmp_path / "plain.csv", encoding="utf-8")))
    assert rows[0] == ["path", "prediction", "confidence", "uncertain", "error", "p_0", "p_1", "p_2"]
    assert rows[1][:5] == ["/a/0/x.png", "0", "0.700000", "false", ""]
    assert rows[3][0] == "/a/z.png" and rows[3][1:4] == ["", "", ""] and "not an image" in rows[3][4]
    assert rows[4][0] == "/a/\\xff.png" and rows[4][3] == "true"

    s.set_corrected(3, "0")
    write_results(tmp_path / "fixed.csv", s, s.labels)
    rows = list(csv.DictReader(open(tmp_path / "fixed.csv", encoding="utf-8")))
    assert list(rows[0])[-1] == "corrected_label"
    assert [r["corrected_label"] for r in rows] == ["", "", "", "0"]

    write_results(tmp_path / "fixed.json", s, s.labels, top_k=2)
    data = json.loads((tmp_path / "fixed.json").read_text(encoding="utf-8"))
    assert data["labels"] == ["0", "1", "2"] and len(data["results"]) == 4
    r0, _, r2, r3 = data["results"]
    assert r0["prediction"] == "0" and r0["true_label"] == "0" and len(r0["top_k"]) == 2
    assert r0["probabilities"] == {"0": 0.7, "1": 0.2, "2": 0.1}
    assert r2["prediction"] is None and r2["error"] and r2["probabilities"] is None
    assert r3["corrected_label"] == "0" and r3["path"] == "/a/\\xff.png" and r3["uncertain"] is True


# --------------------------------------------------------------------------- sort into folders

def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith("sort-log-")}


@pytest.mark.parametrize("mode", ["copy", "move"])
def test_sort_into_folders_never_overwrites_and_undo_restores(tmp_path, mode):
    from mnist_desktop.core.sorting import read_sort_log, sort_into_folders, undo_sort

    src = tmp_path / "in"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    (src / "a" / "x.png").write_bytes(b"ax")
    (src / "b" / "x.png").write_bytes(b"bx")     # same name, same class: clash
    (src / "a" / "y.png").write_bytes(b"ay")
    weird = os.fsencode(src / "a") + b"/\xff.png"
    with open(weird, "wb") as f:
        f.write(b"ff")
    dest = tmp_path / "sorted"
    (dest / "7").mkdir(parents=True)
    (dest / "7" / "x.png").write_bytes(b"already here")   # a clash with an existing file
    before_src, before_dest = _tree(src), _tree(dest)
    items = [(str(src / "a" / "x.png"), "7"), (str(src / "b" / "x.png"), "7"), (str(src / "a" / "y.png"), "1/2"),
             (os.fsdecode(weird), "3"), (str(src / "missing.png"), "3")]
    progress = list(sort_into_folders(items, dest, mode=mode))
    last = progress[-1]
    assert last.done == 5 and last.moved == 4 and len(last.failed) == 1 and "missing" in last.failed[0][0]
    assert (dest / "7" / "x.png").read_bytes() == b"already here"
    assert (dest / "7" / "x_1.png").read_bytes() == b"ax" and (dest / "7" / "x_2.png").read_bytes() == b"bx"
    assert (dest / "1_2" / "y.png").read_bytes() == b"ay"          # '/' in a label cannot escape
    assert open(os.fsencode(dest / "3") + b"/\xff.png", "rb").read() == b"ff"
    assert (src / "a" / "x.png").exists() == (mode == "copy")
    header, ops = read_sort_log(last.log_path)
    assert header["mode"] == mode and sum(op["op"] == mode for op in ops) == 4

    report = undo_sort(last.log_path)
    assert report.restored == 4 and not report.skipped
    assert _tree(src) == before_src and _tree(dest) == before_dest   # back exactly as before
    assert not (dest / "3").exists() and (dest / "7").exists()        # only created folders removed
    assert not last.log_path.exists() and Path(str(last.log_path) + ".undone").exists()


def test_undo_leaves_changed_copies_and_occupied_places_alone(tmp_path):
    from mnist_desktop.core.sorting import sort_into_folders, undo_sort

    src = tmp_path / "in"
    src.mkdir()
    for n in ("a.png", "b.png"):
        (src / n).write_bytes(n.encode())
    *_, last = sort_into_folders([(str(src / "a.png"), "1"), (str(src / "b.png"), "2")], tmp_path / "out",
                                 mode="copy")
    (tmp_path / "out" / "1" / "a.png").write_bytes(b"edited by the user")
    report = undo_sort(last.log_path)
    assert report.restored == 1 and "changed" in report.skipped[0][1]
    assert (tmp_path / "out" / "1" / "a.png").read_bytes() == b"edited by the user"

    *_, last = sort_into_folders([(str(src / "b.png"), "2")], tmp_path / "out2", mode="move")
    (src / "b.png").write_bytes(b"a new file took the name")
    report = undo_sort(last.log_path)
    assert report.restored == 0 and report.skipped
    assert (src / "b.png").read_bytes() == b"a new file took the name"
    assert (tmp_path / "out2" / "2" / "b.png").read_bytes() == b"b.png"


# --------------------------------------------------------------------------- CLI

def test_cli_mixed_folder_rows_exit_code_and_order(mixed, default_model, capsys):
    from mnist_desktop.cli import main

    root, expect = mixed
    rc = main(["classify", str(root), "-r", "--model", str(default_model), "--device", "cpu",
               "--batch-size", "4", "--workers", "2"])
    out = capsys.readouterr()
    assert rc == 1
    rows = list(csv.DictReader(io.StringIO(out.out)))
    listing_error = [r for r in rows if r["path"].endswith("up")]
    assert len(listing_error) == 1 and "symlink loop" in listing_error[0]["error"]
    by_name = {r["path"].rsplit("/", 1)[-1]: r for r in rows if r not in listing_error}
    escaped = display_path(os.fsdecode(NON_UTF8))
    assert escaped in by_name and by_name[escaped]["error"] == ""
    for name, reason in expect.items():
        r = by_name[display_path(name)]
        assert (reason in r["error"] and r["prediction"] == "") if reason else (r["error"] == "" and r["prediction"])
    assert f"{sum(1 for v in expect.values() if v) + 1} failed" in out.err
    assert "accuracy" in out.err and "confusion matrix" in out.err
    # deterministic: the in-process path gives the same rows in the same order
    rc2 = main(["classify", str(root), "-r", "--model", str(default_model), "--device", "cpu",
                "--workers", "0", "-q"])
    rows2 = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rc2 == 1 and [r["path"] for r in rows2] == [r["path"] for r in rows]
    assert [r["prediction"] for r in rows2] == [r["prediction"] for r in rows]


def test_cli_json_output_and_bad_options(mixed, default_model, tmp_path, capsys):
    from mnist_desktop.cli import main

    root, expect = mixed
    out = tmp_path / "r.json"
    rc = main(["classify", str(root / "names"), "--model", str(default_model), "-o", str(out), "-q"])
    assert rc == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    assert len(data["results"]) == 2 and all(r["error"] is None for r in data["results"])
    assert main(["classify", str(root), "--model", str(default_model), "--workers", "-1"]) == 2


def test_small_files_are_read_in_one_call_that_never_blocks(tmp_path, mnist_test):
    """The one-call read of small files gives up (and lets Pillow read and report) when
    the file changed size since it was stat'ed, and never waits on a FIFO that replaced it."""
    from mnist_desktop.core.batch.decoding import _read_small

    p = tmp_path / "a.png"
    data = png_bytes(mnist_test.images[0])
    p.write_bytes(data)
    assert _read_small(str(p), len(data)) == data
    assert _read_small(str(p), len(data) - 1) is None      # grew since stat
    assert _read_small(str(p), len(data) + 1) is None      # shrank since stat
    assert _read_small(str(tmp_path / "gone.png"), 10) is None
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "fifo.png"
        os.mkfifo(fifo)
        t0 = time.perf_counter()
        assert _read_small(str(fifo), 10) is None
        assert time.perf_counter() - t0 < 1.0
