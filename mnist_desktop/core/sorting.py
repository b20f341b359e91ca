"""Sort classified files into one sub-folder per class, with a log that undoes it.

:func:`sort_into_folders` copies or moves each file to ``<dest>/<label>/<name>``. It never
overwrites anything: when the name is taken, a suffix is added (``name_1.png``,
``name_2.png``...), and the claim on the new name is atomic (a rename that refuses to
replace, or a hard link), so two runs or another program cannot make it overwrite either.

The sort survives being killed at any instant (``kill -9``, a power cut). Before touching a
file it appends an *intent* to a JSON Lines log (``sort-log-<time>.jsonl`` in ``dest`` unless
given) and fsyncs it; after, it appends the completed operation. Within one file system a
move is a single atomic rename; otherwise (and for every copy) the data goes to a hidden
``.<name>.<id>.mnist-sort-part`` file in the class folder, is fsynced, and only then takes
its final name, so a partial copy never appears under a real name; a move removes the
source last. An intent without its completion is settled by looking at the files:
:func:`recover_sort` finishes it (also run by a new sort into the same ``dest``) and
:func:`undo_sort` reverses it, so after either every file is in exactly one place.

:func:`undo_sort` reverses the operations newest first: moved files go back where they were
(unless something else now sits there), copies are deleted (unless they were changed since),
and class folders the sort created are removed when empty. Paths are stored as JSON strings;
names that are not valid UTF-8 survive the round trip through their ``surrogateescape`` form.

Log format (one JSON object per line)::

    {"format": "mnist-desktop-sort-log", "version": 1, "mode": "move", "dest": "...", "created": "..."}
    {"op": "mkdir", "path": "/dest/7"}
    {"op": "intent", "mode": "move", "src": "/in/a.png", "dst": "/dest/7/a.png", "part": "...", "label": "7", "size": 312}
    {"op": "move", "src": "/in/a.png", "dst": "/dest/7/a.png", "label": "7"}
    {"op": "intent", "mode": "copy", "src": "/in/b.png", "dst": "/dest/3/b_1.png", ...}
    {"op": "copy", "src": "/in/b.png", "dst": "/dest/3/b_1.png", "label": "3", "size": 312, "mtime_ns": ...}
    {"op": "cancel", "src": "/in/c.png", "dst": "/dest/3/c.png", "reason": "..."}

``move``/``copy`` are the completion ("done") records, as in logs written before intents
existed, which therefore still undo; ``cancel`` closes an intent that placed nothing.
"""

from __future__ import annotations

import ctypes
import datetime
import errno
import json
import os
import shutil
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

LOG_FORMAT = "mnist-desktop-sort-log"
LOG_VERSION = 1                  # intents are additive: a reader that skips them still undoes
_BAD_NAME_CHARS = '/\\:*?"<>|\0'
_PART_SUFFIX = ".mnist-sort-part"
_NO_LINKS = (errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES)


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
    recovered: int = 0              # operations of an interrupted earlier sort settled first


@dataclass
class UndoReport:
    """What :func:`undo_sort` did."""

    restored: int = 0               # files moved back or copies removed
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), left alone
    removed_folders: int = 0
    returned: dict[str, str] = field(default_factory=dict)  # dst -> src of files moved back


@dataclass
class RecoveryReport:
    """What :func:`recover_sort` did with the operations a crash interrupted."""

    finished: int = 0               # the file had reached its place: the operation completed
    abandoned: int = 0              # it had not: left where it was, partial copies removed
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), left alone
    placed: dict[str, str] = field(default_factory=dict)  # src -> dst of moves now complete


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


# --------------------------------------------------------------------------- file operations

def _load_rename_noreplace() -> Callable[[str, str], int] | None:
    """The OS call that renames without ever replacing the target, or None."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if sys.platform.startswith("linux"):
            fn = libc.renameat2                          # glibc >= 2.28
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            return lambda a, b: fn(-100, os.fsencode(a), -100, os.fsencode(b), 1)  # AT_FDCWD, NOREPLACE
        if sys.platform == "darwin":
            fn = libc.renamex_np
            fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]
            return lambda a, b: fn(os.fsencode(a), os.fsencode(b), 0x4)  # RENAME_EXCL
    except (OSError, AttributeError):
        pass
    return None


_renameat_noreplace = _load_rename_noreplace()


def _rename_noreplace(src: str | Path, dst: str | Path) -> None:
    """Rename ``src`` to ``dst`` atomically; FileExistsError when ``dst`` exists.

    ``os.rename`` would silently replace a file that appeared meanwhile. Raises OSError
    with ``errno.EXDEV`` when the two lie on different file systems.
    """
    if os.name == "nt":
        os.rename(src, dst)                              # never replaces on Windows
        return
    if _renameat_noreplace is not None:
        if _renameat_noreplace(str(src), str(dst)) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), str(src), None, str(dst))
    # No such call on this system or file system: a hard link claims the name atomically
    # (recovery knows both names of one file), then the old name goes.
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError as e:
        if e.errno not in _NO_LINKS:
            raise
        if os.path.lexists(dst):                         # no links (FAT): the best left
            raise FileExistsError(errno.EEXIST, "File exists", str(dst)) from None
        os.rename(src, dst)
        return
    os.unlink(src)


def _copy_to_part(src: str | Path, part: Path) -> None:
    """Copy ``src`` to the new file ``part`` and fsync it; nothing is left on failure."""
    with open(src, "rb") as fin, open(part, "xb") as fout:   # "x": never overwrite
        try:
            shutil.copyfileobj(fin, fout, 1 << 20)
            fout.flush()
            os.fsync(fout.fileno())
        except BaseException:
            fout.close()
            _discard(part)
            raise
    try:
        shutil.copystat(src, part)
    except OSError:
        pass  # timestamps are a nicety


def _transfer(src: str | Path, dst: Path, part: Path, mode: str) -> None:
    """Copy or move ``src`` to the free name ``dst``; FileExistsError when it is taken.

    A move is one atomic rename where it can be; otherwise the data goes to ``part`` first
    (same folder as ``dst``), which then takes the final name, and a move removes ``src`` last.
    """
    if mode == "move":
        try:
            _rename_noreplace(src, dst)
            return
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
    _copy_to_part(src, part)
    try:
        _rename_noreplace(part, dst)
    except BaseException:
        _discard(part)
        raise
    if mode == "move":
        os.unlink(src)


def _part_for(dst: Path) -> Path:
    return dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:12]}{_PART_SUFFIX}")


def _undo_part_for(src: Path) -> Path:
    # Fixed, so that an undo interrupted mid-copy finds its own leftover the next time.
    return src.with_name(f".{src.name}.undo{_PART_SUFFIX}")


def _discard(path: str | Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _same_file(a: str | Path, b: str | Path) -> bool:
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _same_bytes(a: str | Path, b: str | Path) -> bool:
    """Whether ``a`` and ``b`` are one file or hold identical bytes."""
    if _same_file(a, b):
        return True
    try:
        if os.path.getsize(a) != os.path.getsize(b):
            return False
        with open(a, "rb") as fa, open(b, "rb") as fb:
            while True:
                ca, cb = fa.read(1 << 20), fb.read(1 << 20)
                if ca != cb:
                    return False
                if not ca:
                    return True
    except OSError:
        return False


def _timestamp() -> str:
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


# --------------------------------------------------------------------------- the log

class _Log:
    """An open sort log: appends one JSON object per line; ``sync`` makes it durable."""

    def __init__(self, path: Path, mode: str):
        self.path = path
        self.file = open(path, mode, encoding="utf-8")

    def end_torn_line(self) -> None:
        """Start on a new line when the last one was cut short by a crash."""
        if self.file.tell() > 0 and not _ends_with_newline(self.path):
            self.file.write("\n")

    def write(self, entry: dict, sync: bool = False) -> None:
        # ensure_ascii keeps lone surrogates (non-UTF-8 names) as \\udcXX escapes that
        # json.loads turns back into the same str, hence the same bytes on disk.
        self.file.write(json.dumps(entry, ensure_ascii=True) + "\n")
        self.file.flush()
        if sync:
            os.fsync(self.file.fileno())

    def lock(self) -> bool:
        """Hold an exclusive lock while the log is in use (released on exit, even kill -9);
        False when another process holds it."""
        try:
            import fcntl
        except ImportError:                              # Windows: no advisory locks
            return True
        try:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True

    def close(self) -> None:
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
        except OSError:
            pass
        self.file.close()


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def sort_into_folders(items: Iterable[tuple[str, str]], dest: str | os.PathLike, *, mode: str = "copy",
                      log_path: str | os.PathLike | None = None, total: int | None = None,
                      should_cancel: Callable[[], bool] | None = None) -> Iterator[SortProgress]:
    """Copy or move files into ``dest/<label>/``; yields progress every 100 files.

    Sorts into ``dest`` that a crash interrupted are recovered first (:func:`recover_sort`).

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
    recovered = _recover_interrupted(dest)
    log_path = Path(log_path) if log_path else _free_log_path(dest)
    try:
        log = _Log(log_path, "x")
    except OSError as e:
        raise SortError(f"cannot write the sort log {log_path}: {e.strerror or e}") from None
    log.lock()
    progress = SortProgress(0, total, log_path=log_path, recovered=recovered)
    made: set[Path] = set()
    try:
        log.write({"format": LOG_FORMAT, "version": LOG_VERSION, "mode": mode, "dest": str(dest),
                   "created": datetime.datetime.now().isoformat(timespec="seconds")})
        for src, label in items:
            if should_cancel is not None and should_cancel():
                break
            src = os.fsdecode(src)
            folder = dest / folder_name_for(label)
            try:
                if folder not in made:
                    if not folder.is_dir():
                        # logged first: a folder made just before a crash is still removed by undo
                        log.write({"op": "mkdir", "path": str(folder)}, sync=True)
                        folder.mkdir(exist_ok=True)
                    made.add(folder)
                if not os.path.isfile(src):
                    raise OSError(errno.ENOENT, "not a regular file")
                dst = _place(log, src, folder, label, mode)
            except OSError as e:
                progress.failed.append((src, e.strerror or str(e)))
            else:
                entry = {"op": mode, "src": src, "dst": str(dst), "label": label}
                if mode == "copy":
                    st = dst.stat()
                    entry.update(size=st.st_size, mtime_ns=st.st_mtime_ns)
                log.write(entry)
                progress.moved += 1
                if mode == "move":
                    progress.placed[src] = str(dst)
            progress.done += 1
            if progress.done % 100 == 0:
                yield progress
        yield progress
    finally:
        log.close()


def _place(log: _Log, src: str, folder: Path, label: str, mode: str) -> Path:
    """Copy or move ``src`` into ``folder`` under its own name or the first free suffix,
    with a durable intent in the log before anything moves."""
    size = os.stat(src).st_size
    for dst in _candidates(folder, os.path.basename(src)):
        if os.path.lexists(dst):
            continue
        part = _part_for(dst)
        intent = {"op": "intent", "mode": mode, "src": src, "dst": str(dst), "part": str(part),
                  "label": label, "size": size}
        log.write(intent, sync=True)
        try:
            _transfer(src, dst, part, mode)
            return dst
        except FileExistsError:
            # another program took the name after the check: nothing was placed there
            log.write({"op": "cancel", "src": src, "dst": str(dst), "reason": "name taken"})
        except OSError as e:
            log.write({"op": "cancel", "src": src, "dst": str(dst), "reason": e.strerror or str(e)})
            raise
    raise AssertionError("unreachable")


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
    """Header and operations of a sort log. Raises :class:`SortError` when it is not one.

    A last line cut short (a crash while it was written) is ignored.
    """
    try:
        with open(log_path, encoding="utf-8") as f:
            raw = [line for line in f if line.strip()]
        lines = []
        for i, line in enumerate(raw):
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                if i < len(raw) - 1 or line.endswith("\n"):
                    raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SortError(f"cannot read sort log {log_path}: {e}") from None
    if not lines or not isinstance(lines[0], dict) or lines[0].get("format") != LOG_FORMAT:
        raise SortError(f"{log_path} is not an mnist-desktop sort log")
    if lines[0].get("version", 0) > LOG_VERSION:
        raise SortError(f"{log_path} was written by a newer mnist-desktop")
    return lines[0], [e for e in lines[1:] if isinstance(e, dict)]


# --------------------------------------------------------------------------- interrupted operations

def _open_intents(ops: list[dict]) -> list[dict]:
    """Intents with neither a completion nor a cancel after them, oldest first."""
    open_: dict[tuple, dict] = {}
    for op in ops:
        key = (op.get("src"), op.get("dst"))
        if op.get("op") == "intent":
            open_[key] = op
        elif op.get("op") in ("move", "copy", "cancel"):
            open_.pop(key, None)
    return list(open_.values())


def _settle(intent: dict) -> str:
    """Where an interrupted operation got to, from the files themselves.

    Removes its partial copy. Returns ``"placed"`` (the file is at ``dst``, and for a move
    no longer at ``src``), ``"both"`` (it is at ``dst`` and, identical, still at ``src``),
    ``"not placed"`` (only at ``src``; a file at ``dst`` is someone else's) or ``"lost"``.
    """
    src, dst, part = intent["src"], intent["dst"], intent.get("part")
    if part:
        _discard(part)        # claimed (then it is a second name of dst) or unfinished: garbage
    has_src, has_dst = os.path.lexists(src), os.path.lexists(dst)
    if not has_dst:
        return "not placed" if has_src else "lost"
    if not has_src:
        return "placed"
    # Both: a move between its copy (or hard link) and the removal of the source, or a copy
    # that completed. Different bytes: the name was taken by someone else after the check.
    return "both" if _same_bytes(src, dst) else "not placed"


def _completion(intent: dict) -> dict:
    entry = {"op": intent.get("mode", "move"), "src": intent["src"], "dst": intent["dst"],
             "label": intent.get("label", "")}
    if entry["op"] == "copy":
        st = os.stat(intent["dst"])
        entry.update(size=st.st_size, mtime_ns=st.st_mtime_ns)
    return entry


def recover_sort(log_path: str | os.PathLike) -> RecoveryReport:
    """Finish the operations of a sort that a crash interrupted, and record them.

    A file that had reached its new place stays there (a move's leftover source, byte for
    byte the same, is removed); one that had not stays where it was, and its partial copy
    is deleted. The log is then complete, so :func:`undo_sort` reverses every file.

    Raises
    ------
    SortError
        When the log cannot be read, or a sort is still writing it.
    """
    path = Path(log_path)
    _, ops = read_sort_log(path)
    report = RecoveryReport()
    if not _open_intents(ops):
        return report
    log = _open_for_append(path)
    try:
        _, ops = read_sort_log(path)                     # again, now that no one else writes it
        pending = _open_intents(ops)
        for intent in pending:
            try:
                state = _settle(intent)
                if state == "both" and intent.get("mode") == "move":
                    os.unlink(intent["src"])
                    state = "placed"
                if state in ("placed", "both"):
                    log.write(_completion(intent))
                    report.finished += 1
                    if intent.get("mode") == "move":
                        report.placed[intent["src"]] = intent["dst"]
                else:
                    log.write({"op": "cancel", "src": intent["src"], "dst": intent["dst"],
                               "reason": "interrupted before the file was placed"})
                    if state == "lost":
                        report.skipped.append((intent["src"], "no longer there"))
                    else:
                        report.abandoned += 1
            except (OSError, KeyError, TypeError) as e:
                report.skipped.append((str(intent.get("src", "")), getattr(e, "strerror", None) or str(e)))
    finally:
        log.close()
    return report


def _open_for_append(path: Path) -> _Log:
    try:
        log = _Log(path, "a")
    except OSError as e:
        raise SortError(f"cannot write the sort log {path}: {e.strerror or e}") from None
    if not log.lock():
        log.file.close()
        raise SortError(f"{path.name} is in use: that sort is still running")
    log.end_torn_line()
    return log


def _recover_interrupted(dest: Path) -> int:
    """Recover the sorts into ``dest`` that a crash left with open intents."""
    count = 0
    for path in sorted(dest.glob("sort-log-*.jsonl")):
        try:
            _, ops = read_sort_log(path)
            if _open_intents(ops):
                count += recover_sort(path).finished
        except SortError:
            continue                                      # not ours, or still running
    return count


# --------------------------------------------------------------------------- undo

def undo_sort(log_path: str | os.PathLike) -> UndoReport:
    """Reverse a sort from its log, newest operation first.

    Moved files go back to where they came from, unless a different file now exists there;
    copies are deleted unless their size or modification time changed since the sort (then
    they are kept and reported); class folders the sort created are removed when empty. An
    operation a crash interrupted is reversed from the state of the files (see
    :func:`recover_sort`), and an undo can itself be interrupted and run again. The log is
    renamed to ``<name>.undone`` afterwards so it cannot be applied twice.

    Returns
    -------
    UndoReport
        Counts, and every file left alone with the reason.

    Raises
    ------
    SortError
        When the log cannot be read, or a sort is still writing it.
    """
    path = Path(log_path)
    read_sort_log(path)
    report = UndoReport()
    log = _open_for_append(path)       # the lock: no sort or undo runs on this log meanwhile
    try:
        _, ops = read_sort_log(path)
        pending = {id(op) for op in _open_intents(ops)}
        for op in reversed(ops):
            kind = op.get("op")
            try:
                if kind == "intent" and id(op) in pending:
                    _undo_interrupted(op, report)
                elif kind == "move":
                    _undo_move(op["src"], op["dst"], report)
                elif kind == "copy":
                    _undo_copy(op, report)
                elif kind == "mkdir":
                    try:
                        os.rmdir(op["path"])
                        report.removed_folders += 1
                    except OSError:
                        pass  # not empty (something else lives there now) or already gone
            except (OSError, KeyError, TypeError) as e:
                report.skipped.append((str(op.get("dst", op.get("path", ""))),
                                       getattr(e, "strerror", None) or str(e)))
    finally:
        log.close()
    try:
        os.replace(path, Path(str(path) + ".undone"))
    except OSError:
        pass
    return report


def _undo_interrupted(intent: dict, report: UndoReport) -> None:
    state = _settle(intent)
    if state == "placed" and intent.get("mode") == "move":
        _undo_move(intent["src"], intent["dst"], report)
    elif state == "both":
        # a copy that completed, or a move whose source is still there: the new one goes
        os.unlink(intent["dst"])
        report.restored += 1
    elif state == "placed":             # a copy whose original is gone since: the only one left
        report.skipped.append((intent["dst"], "the original is gone; kept"))
    elif state == "lost":
        report.skipped.append((intent["dst"], "no longer there"))


def _undo_move(src: str, dst: str, report: UndoReport) -> None:
    """Move ``dst`` back to ``src``; safe to repeat after an undo that was interrupted."""
    _discard(_undo_part_for(Path(src)))
    has_src, has_dst = os.path.lexists(src), os.path.lexists(dst)
    if not has_dst:
        if has_src:                     # back already (an undo interrupted after its rename)
            report.restored += 1
            report.returned[dst] = src
        else:
            report.skipped.append((dst, "no longer there"))
        return
    if has_src:
        if _same_bytes(src, dst):       # an interrupted undo had copied it back already
            os.unlink(dst)
            report.restored += 1
            report.returned[dst] = src
        else:
            report.skipped.append((src, "a file with that name exists again; kept"))
        return
    Path(src).parent.mkdir(parents=True, exist_ok=True)
    try:
        _transfer(dst, Path(src), _undo_part_for(Path(src)), "move")
    except FileExistsError:
        report.skipped.append((src, "a file with that name exists again; kept"))
        return
    report.restored += 1
    report.returned[dst] = src


def _undo_copy(op: dict, report: UndoReport) -> None:
    dst = op["dst"]
    try:
        st = os.stat(dst, follow_symlinks=False)
    except FileNotFoundError:
        report.skipped.append((dst, "no longer there"))
        return
    if st.st_size != op.get("size") or st.st_mtime_ns != op.get("mtime_ns"):
        report.skipped.append((dst, "changed since the sort; kept"))
        return
    os.unlink(dst)
    report.restored += 1
