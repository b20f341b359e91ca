"""Sort classified files into one sub-folder per class, with a log that undoes it.

:func:`sort_into_folders` copies or moves each file to ``<dest>/<label>/<name>``. It never
overwrites anything: when the name is taken, a suffix is added (``name_1.png``,
``name_2.png``...), and the claim on the new name is atomic (exclusive create, or a hard
link), so two runs or another program cannot make it overwrite either.

Every completed operation is appended to a JSON Lines log (``sort-log-<time>.jsonl`` in
``dest`` unless given) and flushed at once, so a log is complete up to the last file even
after a crash. :func:`undo_sort` reads it and reverses the operations newest first: moved
files go back where they were (unless something now sits there), copies are deleted
(unless they were changed since), and class folders the sort created are removed when
empty. Paths are stored as JSON strings; names that are not valid UTF-8 survive the round
trip through their ``surrogateescape`` form.

Log format (one JSON object per line)::

    {"format": "mnist-desktop-sort-log", "version": 1, "mode": "move", "dest": "...", "created": "..."}
    {"op": "mkdir", "path": "/dest/7"}
    {"op": "move", "src": "/in/a.png", "dst": "/dest/7/a.png", "label": "7"}
    {"op": "copy", "src": "/in/b.png", "dst": "/dest/3/b_1.png", "label": "3", "size": 312, "mtime_ns": ...}
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

LOG_FORMAT = "mnist-desktop-sort-log"
LOG_VERSION = 1
_BAD_NAME_CHARS = '/\\:*?"<>|\0'


class SortError(Exception):
    """A sort or undo cannot start (bad destination, unreadable log). One line."""


@dataclass
class SortProgress:
    """Progress of a sort: ``done`` of ``total`` files handled so far."""

    done: int
    total: int
    moved: int = 0                  # files copied or moved
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    log_path: Path | None = None
    placed: dict[str, str] = field(default_factory=dict)  # src -> dst, for "move" only


@dataclass
class UndoReport:
    """What :func:`undo_sort` did."""

    restored: int = 0               # files moved back or copies removed
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), left alone
    removed_folders: int = 0
    returned: dict[str, str] = field(default_factory=dict)  # dst -> src of files moved back


def folder_name_for(label: str) -> str:
    """A safe folder name for a class label (no separators, not ``.``/``..``)."""
    name = "".join("_" if c in _BAD_NAME_CHARS or ord(c) < 32 else c for c in label).strip()
    return name if name not in ("", ".", "..") else "_"


def _candidates(folder: Path, name: str) -> Iterator[Path]:
    stem, suffix = os.path.splitext(name)
    yield folder / name
    n = 1
    while True:
        yield folder / f"{stem}_{n}{suffix}"
        n += 1


def _copy_exclusive(src: str, dst: Path) -> None:
    """Copy ``src`` to a new file ``dst``; FileExistsError when ``dst`` exists."""
    with open(src, "rb") as fin:
        with open(dst, "xb") as fout:  # "x": never overwrite, atomically
            try:
                shutil.copyfileobj(fin, fout, 1 << 20)
            except BaseException:
                fout.close()
                os.unlink(dst)
                raise
    try:
        shutil.copystat(src, dst)
    except OSError:
        pass  # timestamps are a nicety


def _move_exclusive(src: str, dst: Path) -> None:
    """Move ``src`` to ``dst`` without ever replacing an existing ``dst``.

    ``os.rename`` would silently replace a file that appeared meanwhile; a hard link
    claims the name atomically instead. Across file systems (or where links are not
    supported) the file is copied exclusively and the original removed.
    """
    try:
        os.link(src, dst, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP,
                           errno.EACCES):
            raise
        _copy_exclusive(src, dst)
    os.unlink(src)


def _place(src: str, folder: Path, mode: str) -> Path:
    """Copy or move ``src`` into ``folder`` under its own name or the first free suffix."""
    op = _copy_exclusive if mode == "copy" else _move_exclusive
    for dst in _candidates(folder, os.path.basename(src)):
        try:
            op(src, dst)
            return dst
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


def _timestamp() -> str:
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def sort_into_folders(items: Iterable[tuple[str, str]], dest: str | os.PathLike, *, mode: str = "copy",
                      log_path: str | os.PathLike | None = None, total: int | None = None,
                      should_cancel: Callable[[], bool] | None = None) -> Iterator[SortProgress]:
    """Copy or move files into ``dest/<label>/``; yields progress every 100 files.

    Parameters
    ----------
    items
        ``(path, label)`` pairs: the predicted label, or the one corrected by hand
        (:func:`sort_items` builds them from a result store).
    dest
        Destination folder (created when missing); may lie inside the source folder.
    mode
        ``"copy"`` or ``"move"``.
    log_path
        The undo log (JSON Lines); default ``dest/sort-log-<YYYYmmdd-HHMMSS>.jsonl``.
    should_cancel
        Checked between files; a cancelled sort leaves a valid log of what was done.

    Yields
    ------
    SortProgress
        The last one has ``done == total`` unless cancelled; ``failed`` lists the files
        that could not be placed (missing, unreadable...) with the reason, and those are
        skipped.

    Raises
    ------
    SortError
        When ``dest`` or the log cannot be created.
    """
    if mode not in ("copy", "move"):
        raise ValueError("mode must be 'copy' or 'move'")
    items = list(items) if total is None else items
    total = len(items) if total is None else total  # type: ignore[arg-type]
    dest = Path(dest)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SortError(f"cannot create {dest}: {e.strerror or e}") from None
    log_path = Path(log_path) if log_path else _free_log_path(dest)
    try:
        log = open(log_path, "x", encoding="utf-8")
    except OSError as e:
        raise SortError(f"cannot write the sort log {log_path}: {e.strerror or e}") from None
    progress = SortProgress(0, total, log_path=log_path)
    made: set[Path] = set()

    def record(entry: dict) -> None:
        # ensure_ascii keeps lone surrogates (non-UTF-8 names) as \\udcXX escapes that
        # json.loads turns back into the same str, hence the same bytes on disk.
        log.write(json.dumps(entry, ensure_ascii=True) + "\n")
        log.flush()

    try:
        record({"format": LOG_FORMAT, "version": LOG_VERSION, "mode": mode, "dest": str(dest),
                "created": datetime.datetime.now().isoformat(timespec="seconds")})
        for src, label in items:
            if should_cancel is not None and should_cancel():
                break
            src = os.fsdecode(src)
            folder = dest / folder_name_for(label)
            try:
                if folder not in made:
                    if not folder.is_dir():
                        folder.mkdir()
                        record({"op": "mkdir", "path": str(folder)})
                    made.add(folder)
                if not os.path.isfile(src):
                    raise OSError(errno.ENOENT, "not a regular file")
                dst = _place(src, folder, mode)
            except OSError as e:
                progress.failed.append((src, e.strerror or str(e)))
            else:
                entry = {"op": mode, "src": src, "dst": str(dst), "label": label}
                if mode == "copy":
                    st = dst.stat()
                    entry.update(size=st.st_size, mtime_ns=st.st_mtime_ns)
                record(entry)
                progress.moved += 1
                if mode == "move":
                    progress.placed[src] = str(dst)
            progress.done += 1
            if progress.done % 100 == 0:
                yield progress
        yield progress
    finally:
        try:
            os.fsync(log.fileno())
        except OSError:
            pass
        log.close()


def _free_log_path(dest: Path) -> Path:
    base = f"sort-log-{_timestamp()}"
    for p in _candidates(dest, base + ".jsonl"):
        if not p.exists():
            return p
    raise AssertionError("unreachable")


def sort_items(store, rows: Iterable[int] | None = None) -> list[tuple[str, str]]:
    """``(path, label)`` pairs for :func:`sort_into_folders` from a
    :class:`~mnist_desktop.core.batch.ResultStore`: the corrected label where there is
    one, else the prediction; files that failed are left out."""
    rows = range(len(store)) if rows is None else rows
    return [(store.path(i), store.final_label(i)) for i in rows if store.ok(i)]


def read_sort_log(log_path: str | os.PathLike) -> tuple[dict, list[dict]]:
    """Header and operations of a sort log. Raises :class:`SortError` when it is not one."""
    try:
        with open(log_path, encoding="utf-8") as f:
            lines = [json.loads(line) for line in f if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SortError(f"cannot read sort log {log_path}: {e}") from None
    if not lines or not isinstance(lines[0], dict) or lines[0].get("format") != LOG_FORMAT:
        raise SortError(f"{log_path} is not an mnist-desktop sort log")
    if lines[0].get("version", 0) > LOG_VERSION:
        raise SortError(f"{log_path} was written by a newer mnist-desktop")
    return lines[0], [e for e in lines[1:] if isinstance(e, dict)]


def undo_sort(log_path: str | os.PathLike) -> UndoReport:
    """Reverse a sort from its log, newest operation first.

    Moved files go back to where they came from, unless a file now exists there; copies
    are deleted unless their size or modification time changed since the sort (then they
    are kept and reported); class folders the sort created are removed when empty. The
    log is renamed to ``<name>.undone`` afterwards so it cannot be applied twice.

    Returns
    -------
    UndoReport
        Counts, and every file left alone with the reason.
    """
    header, ops = read_sort_log(log_path)
    report = UndoReport()
    for op in reversed(ops):
        kind = op.get("op")
        try:
            if kind == "move":
                src, dst = op["src"], op["dst"]
                if not os.path.lexists(dst):
                    report.skipped.append((dst, "no longer there"))
                    continue
                Path(src).parent.mkdir(parents=True, exist_ok=True)
                _move_exclusive(dst, Path(src))
                report.restored += 1
                report.returned[dst] = src
            elif kind == "copy":
                dst = op["dst"]
                try:
                    st = os.stat(dst, follow_symlinks=False)
                except FileNotFoundError:
                    report.skipped.append((dst, "no longer there"))
                    continue
                if st.st_size != op.get("size") or st.st_mtime_ns != op.get("mtime_ns"):
                    report.skipped.append((dst, "changed since the sort; kept"))
                    continue
                os.unlink(dst)
                report.restored += 1
            elif kind == "mkdir":
                try:
                    os.rmdir(op["path"])
                    report.removed_folders += 1
                except OSError:
                    pass  # not empty: something else lives there now
        except FileExistsError:
            report.skipped.append((op.get("src", ""), "a file with that name exists again; kept"))
        except (OSError, KeyError, TypeError) as e:
            report.skipped.append((str(op.get("dst", op.get("path", ""))),
                                   getattr(e, "strerror", None) or str(e)))
    done = Path(str(log_path) + ".undone")
    try:
        os.replace(log_path, done)
    except OSError:
        pass
    return report
