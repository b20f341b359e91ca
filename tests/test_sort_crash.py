"""Sorting into folders survives ``kill -9``: after Undo, or after recovering / re-running
the sort, every file is in exactly one place with its bytes intact."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mnist_desktop.core.sorting import recover_sort, sort_into_folders, undo_sort

N_FILES = 300
TRIALS = 20

# Sorts the files of argv[1] into argv[2]; argv[3] == "xdev" makes every rename fail as it
# would across file systems, so the copy-then-remove path is the one that gets killed.
CHILD = r"""
import errno, os, sys
from pathlib import Path
from mnist_desktop.core import sorting

src, dest, how = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
if how == "xdev":
    real = sorting._rename_noreplace
    def across(a, b):
        if Path(a).parent != Path(b).parent:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real(a, b)
    sorting._rename_noreplace = across
items = [(str(p), p.stem.split("-")[1]) for p in sorted(src.iterdir())]
print("go", flush=True)
for _ in sorting.sort_into_folders(items, dest, mode="move"):
    pass
print("done", flush=True)
"""


def _make_files(src: Path, seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    src.mkdir()
    files = {}
    for i in range(N_FILES):
        name = f"f{i:03d}-{i % 10}.png"
        data = f"{name}\n".encode() + rng.randbytes(rng.randrange(200, 6000))
        (src / name).write_bytes(data)
        files[name] = data
    return files


def _start(src: Path, dest: Path, how: str) -> tuple[subprocess.Popen, float]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(src), str(dest), how], stdout=subprocess.PIPE,
                            env=env, text=True)
    assert proc.stdout.readline().strip() == "go"
    return proc, time.perf_counter()


def _contents(root: Path) -> list[bytes]:
    return [p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.name.startswith("sort-log-")]


def _assert_back_exactly(src: Path, dest: Path, files: dict[str, bytes]) -> None:
    assert sorted(os.listdir(src)) == sorted(files)        # no leftover temporary copies either
    for name, data in files.items():
        assert (src / name).read_bytes() == data
    assert all(n.startswith("sort-log-") for n in os.listdir(dest)), os.listdir(dest)


def _assert_each_once(src: Path, dest: Path, files: dict[str, bytes]) -> None:
    found = sorted(_contents(src) + _contents(dest))
    assert found == sorted(files.values())
    assert not [p for p in dest.rglob("*") if p.name.endswith(".mnist-sort-part")]


@pytest.mark.slow
def test_move_sort_killed_at_random_times_loses_nothing_and_undoes_exactly(tmp_path):
    rng = random.Random(18)
    duration = {}
    for how in ("same", "xdev"):     # one uninterrupted run tells how long a sort takes here
        files = _make_files(tmp_path / f"cal-{how}", 0)
        proc, t0 = _start(tmp_path / f"cal-{how}", tmp_path / f"cal-{how}-out", how)
        assert proc.wait(60) == 0
        duration[how] = time.perf_counter() - t0
        _assert_each_once(tmp_path / f"cal-{how}", tmp_path / f"cal-{how}-out", files)

    interrupted = 0
    for trial in range(TRIALS):
        how = "xdev" if trial % 2 else "same"
        after = ("undo", "recover", "rerun")[trial % 3]
        src, dest = tmp_path / f"in{trial}", tmp_path / f"out{trial}"
        files = _make_files(src, trial + 1)
        proc, t0 = _start(src, dest, how)
        time.sleep(rng.uniform(0, duration[how]))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        interrupted += proc.stdout.read().strip() != "done"
        logs = sorted(dest.glob("sort-log-*.jsonl"))
        assert len(logs) <= 1

        if after == "recover" and logs:
            recover_sort(logs[0])
            _assert_each_once(src, dest, files)
        elif after == "rerun":
            items = [(str(src / n), Path(n).stem.split("-")[1]) for n in files]
            *_, last = sort_into_folders(items, dest, mode="move")   # recovers the crashed one first
            _assert_each_once(src, dest, files)
            assert not os.listdir(src)                              # and the rest is sorted now
            undo_sort(last.log_path)
        if logs and logs[0].stat().st_size:
            undo_sort(logs[0])
        _assert_back_exactly(src, dest, files)
    assert interrupted >= TRIALS // 4, f"only {interrupted} of {TRIALS} runs were killed mid-sort"


def _across_file_systems(real):
    def rename(a, b):
        if Path(a).parent != Path(b).parent:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real(a, b)
    return rename


@pytest.mark.parametrize("after", ["undo", "recover"])
@pytest.mark.parametrize("stage", ["copying", "copied", "claimed"])
def test_a_move_across_file_systems_killed_at_each_step(tmp_path, monkeypatch, stage, after):
    """Killed while copying to the hidden part file, after it is complete, or after it took
    its final name but before the source was removed: one copy of every file survives."""
    from mnist_desktop.core import sorting

    src = tmp_path / "in"
    src.mkdir()
    files = {n: n.encode() * 1000 for n in ("a.png", "b.png", "c.png")}
    for n, data in files.items():
        (src / n).write_bytes(data)
    victim = str(src / "b.png")

    def kill():
        raise KeyboardInterrupt     # stands in for kill -9: no clean-up code runs after it

    monkeypatch.setattr(sorting, "_rename_noreplace", _across_file_systems(sorting._rename_noreplace))
    monkeypatch.setattr(sorting, "_discard", lambda path: None)
    if stage == "copying":
        real_copy = sorting.shutil.copyfileobj

        def copy(fin, fout, length=0):
            if fin.name == victim:
                fout.write(fin.read(100))
                fout.flush()
                kill()
            real_copy(fin, fout, length)
        monkeypatch.setattr(sorting.shutil, "copyfileobj", copy)
    elif stage == "copied":
        real_claim = sorting._rename_noreplace

        def claim(a, b):
            if Path(b).name == "b.png":
                kill()
            real_claim(a, b)
        monkeypatch.setattr(sorting, "_rename_noreplace", claim)
    else:
        real_unlink = os.unlink

        def unlink(path, *a, **k):
            if str(path) == victim:
                kill()
            real_unlink(path, *a, **k)
        monkeypatch.setattr(sorting.os, "unlink", unlink)
    items = [(str(src / n), "1") for n in files]
    with pytest.raises(KeyboardInterrupt):
        list(sort_into_folders(items, tmp_path / "out", mode="move"))
    monkeypatch.undo()
    dest = tmp_path / "out"
    log = next(dest.glob("sort-log-*.jsonl"))
    assert (dest / "1" / "b.png").exists() == (stage == "claimed") and (src / "b.png").exists()
    if after == "recover":
        report = recover_sort(log)
        assert report.finished == (stage == "claimed") and report.abandoned == (stage != "claimed")
        _assert_each_once(src, dest, files)
        assert sorted(os.listdir(src)) == (["c.png"] if stage == "claimed" else ["b.png", "c.png"])
    report = undo_sort(log)
    assert not report.skipped
    _assert_back_exactly(src, dest, {n: d for n, d in files.items()})


def test_a_copy_sort_killed_mid_file_leaves_no_partial_file_under_a_real_name(tmp_path, monkeypatch):
    from mnist_desktop.core import sorting

    src = tmp_path / "in"
    src.mkdir()
    (src / "a.png").write_bytes(b"a" * 5000)
    (src / "b.png").write_bytes(b"b" * 5000)
    real = sorting.shutil.copyfileobj

    def dies_halfway(fin, fout, length=0):
        if fin.name.endswith("b.png"):
            fout.write(fin.read(100))
            fout.flush()
            raise KeyboardInterrupt    # stands in for the kill: no clean-up code runs after it
        real(fin, fout, length)

    monkeypatch.setattr(sorting.shutil, "copyfileobj", dies_halfway)
    monkeypatch.setattr(sorting, "_discard", lambda path: None)     # as if killed: nothing cleans up
    with pytest.raises(KeyboardInterrupt):
        list(sort_into_folders([(str(src / "a.png"), "1"), (str(src / "b.png"), "2")], tmp_path / "out"))
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.png")) == ["a.png"]   # b only as a hidden part
    log = next((tmp_path / "out").glob("sort-log-*.jsonl"))
    report = undo_sort(log)
    assert report.restored == 1 and not report.skipped
    assert [p.name for p in (tmp_path / "out").iterdir()] == [log.name + ".undone"]
    assert sorted(os.listdir(src)) == ["a.png", "b.png"]


def test_undo_refuses_a_log_a_sort_is_still_writing(tmp_path):
    from mnist_desktop.core.sorting import SortError

    src = tmp_path / "in"
    src.mkdir()
    (src / "a.png").write_bytes(b"a")
    sort = sort_into_folders([(str(src / "a.png"), "1")], tmp_path / "out", mode="move")
    first = next(sort)
    with pytest.raises(SortError, match="still running"):
        undo_sort(first.log_path)
    list(sort)
    assert undo_sort(first.log_path).restored == 1
