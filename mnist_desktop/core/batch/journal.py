"""Hand corrections kept on disk until they are exported: :class:`CorrectionJournal`.

The batch window appends every label the user corrects to a journal, one JSON line per
correction, flushed and fsync'ed before it returns, so that a crash, a kill or a power
cut loses none of them. Opening the same inputs again offers them back (so does the
window's start, for the newest journal); exporting the results or discarding the
corrections deletes the journal.

Format (version 1): a JSON-lines file named after its inputs in
:func:`~mnist_desktop.core.paths.batch_journal_dir`::

    {"format": "mnist-desktop-correction-journal", "version": 1, "inputs": [...]}
    {"path": "/a/b/0001.png", "label": "7", "time": "2025-01-01T12:00:00Z"}
    {"path": "/a/b/0001.png", "label": null, "time": "..."}      (correction cleared)

The last line for a path wins. A line torn by a crash mid-write, or anything else that
does not parse, is skipped.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Sequence

FORMAT = "mnist-desktop-correction-journal"
VERSION = 1


def _normalized(inputs: Iterable[str | os.PathLike]) -> list[str]:
    return sorted(os.path.abspath(os.fsdecode(p)) for p in inputs)


def _key(inputs: Sequence[str]) -> str:
    text = json.dumps(inputs)   # \uXXXX escapes: names that are not valid UTF-8 hash too
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:20]


class CorrectionJournal:
    """The journal of one set of inputs (files and folders, as given to a run).

    Parameters
    ----------
    path
        The journal file (need not exist).
    inputs
        The inputs it belongs to (absolute paths, sorted).
    """

    def __init__(self, path: str | os.PathLike, inputs: Sequence[str]):
        self.path = Path(path)
        self.inputs = list(inputs)

    @classmethod
    def for_inputs(cls, inputs: Iterable[str | os.PathLike], folder: str | os.PathLike | None = None
                   ) -> "CorrectionJournal":
        """The journal of ``inputs`` (in any order) in ``folder`` (default: the user
        data folder's ``batch-journal``)."""
        from mnist_desktop.core.paths import batch_journal_dir

        norm = _normalized(inputs)
        return cls(Path(folder or batch_journal_dir()) / f"{_key(norm)}.jsonl", norm)

    @classmethod
    def open(cls, path: str | os.PathLike) -> "CorrectionJournal | None":
        """An existing journal file, or None when it is not one."""
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                head = json.loads(f.readline())
        except (OSError, ValueError):
            return None
        if not isinstance(head, dict) or head.get("format") != FORMAT or not isinstance(head.get("inputs"), list):
            return None
        return cls(path, [str(p) for p in head["inputs"]])

    def record(self, path: str, label: str | None) -> None:
        """Append that ``path`` was corrected to ``label`` (None: back to the prediction);
        on disk when this returns. Raises OSError (disk full, read-only folder)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"path": path, "label": label,
                           "time": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})
        with open(self.path, "a", encoding="utf-8") as f:
            new = f.tell() == 0
            if new:
                f.write(json.dumps({"format": FORMAT, "version": VERSION, "inputs": self.inputs}) + "\n")
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        if new:
            _fsync_dir(self.path.parent)   # the new file's name survives a power cut too

    def corrections(self) -> dict[str, str]:
        """``{path: label}`` of the corrections in force (cleared ones left out)."""
        last: dict[str, str | None] = {}
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            return {}
        for line in lines[1:]:
            try:
                rec = json.loads(line)
            except ValueError:
                continue   # torn by a crash mid-write
            if isinstance(rec, dict) and isinstance(rec.get("path"), str) \
                    and (rec.get("label") is None or isinstance(rec.get("label"), str)):
                last[rec["path"]] = rec["label"]
        return {p: lab for p, lab in last.items() if lab is not None}

    def clear(self) -> None:
        """Delete the journal (its corrections were exported or discarded)."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def __repr__(self) -> str:
        return f"CorrectionJournal({str(self.path)!r})"


def pending_journals(folder: str | os.PathLike | None = None) -> list[CorrectionJournal]:
    """The journals in ``folder`` (default: the user data folder's) that hold corrections,
    newest first."""
    from mnist_desktop.core.paths import batch_journal_dir

    folder = Path(folder or batch_journal_dir())
    try:
        files = sorted(folder.glob("*.jsonl"), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return []
    found = []
    for p in files:
        j = CorrectionJournal.open(p)
        if j is not None and j.corrections():
            found.append(j)
    return found


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
