"""All results of a run in compact columns: :class:`ResultStore`."""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from mnist_desktop.core.batch.results import FileResult


class ResultStore:
    """All results of a run in compact columns (about 60 bytes plus the path per file).

    Keeps 200,000 results in some 30 MB, where as many :class:`FileResult` objects would
    take several hundred. Rows are addressed by their input order; :meth:`result` builds
    a :class:`FileResult` on demand. Corrections (labels set by hand) live here too and
    are used by export and by sorting into folders.
    """

    def __init__(self, labels: Sequence[str]):
        self.labels = list(labels)
        self._index = {lab: i for i, lab in enumerate(self.labels)}
        self._paths: list[str] = []
        self._errors: dict[int, str] = {}
        self._numbers: dict[int, str] = {}   # number readings (runs that read numbers)
        self.has_numbers = False
        self._n = 0
        self._alloc(1024)

    def _alloc(self, cap: int) -> None:
        k = len(self.labels)
        old = self._n

        def grow(a, shape, dtype, fill):
            b = np.full(shape, fill, dtype)
            if a is not None:
                b[:old] = a[:old]
            return b

        self.probs = grow(getattr(self, "probs", None), (cap, k), np.float32, np.nan)
        self.uncertain = grow(getattr(self, "uncertain", None), (cap,), bool, False)
        self.predicted = grow(getattr(self, "predicted", None), (cap,), np.int32, -1)
        self.confidence = grow(getattr(self, "confidence", None), (cap,), np.float32, np.nan)
        self.true_index = grow(getattr(self, "true_index", None), (cap,), np.int32, -1)
        self.corrected = grow(getattr(self, "corrected", None), (cap,), np.int32, -1)
        self.number_confidence = grow(getattr(self, "number_confidence", None), (cap,), np.float32, np.nan)
        self._cap = cap

    # The public arrays above are views of capacity; readers use these trimmed views.
    def column(self, name: str) -> np.ndarray:
        """``probs``, ``uncertain``, ``predicted``, ``confidence``, ``true_index`` or
        ``corrected`` (or ``number_confidence``) trimmed to the rows stored (-1 means none for index columns)."""
        return getattr(self, name)[:self._n]

    def __len__(self) -> int:
        return self._n

    def extend(self, results: Iterable[FileResult]) -> range:
        """Append results; returns the range of the new rows."""
        results = list(results)
        start, n = self._n, len(results)
        if start + n > self._cap:
            self._alloc(max(2 * self._cap, start + n))
        ok_rows, ok_probs = [], []
        for j, r in enumerate(results):
            self._paths.append(r.path)
            if r.probs is not None:
                ok_rows.append(start + j)
                ok_probs.append(r.probs)
                self.uncertain[start + j] = r.uncertain
            else:
                self._errors[start + j] = r.error or "no result"
            if r.true_label is not None:
                self.true_index[start + j] = self._index.get(r.true_label, -1)
            if r.corrected_label is not None:
                self.corrected[start + j] = self._index.get(r.corrected_label, -1)
            if r.number is not None:
                self.has_numbers = True
                self._numbers[start + j] = r.number
                self.number_confidence[start + j] = r.number_confidence or 0.0
        if ok_rows:
            # one vectorized write per chunk instead of per-row numpy calls
            probs = np.stack(ok_probs)
            self.probs[ok_rows] = probs
            self.predicted[ok_rows] = probs.argmax(axis=1)
            self.confidence[ok_rows] = probs.max(axis=1)
        self._n += n
        return range(start, self._n)

    def path(self, i: int) -> str:
        return self._paths[i]

    def set_path(self, i: int, path: str) -> None:
        """Record that row ``i``'s file now lives at ``path`` (after a move)."""
        self._paths[i] = path

    def relocate(self, moved: dict[str, str]) -> int:
        """Apply ``{old path: new path}`` to every row; returns how many changed."""
        n = 0
        for i, p in enumerate(self._paths):
            new = moved.get(p)
            if new is not None:
                self._paths[i] = new
                n += 1
        return n

    def error(self, i: int) -> str | None:
        return self._errors.get(i)

    def ok(self, i: int) -> bool:
        return i not in self._errors

    @property
    def failed(self) -> int:
        return len(self._errors)

    def number(self, i: int) -> str | None:
        """Row ``i``'s number reading (``""`` when nothing was read), None when the run
        did not read numbers or the file failed."""
        return self._numbers.get(i)

    def label_of(self, index: int) -> str | None:
        return None if index < 0 else self.labels[index]

    def prediction(self, i: int) -> str:
        return self.label_of(int(self.predicted[i])) or ""

    def true_label(self, i: int) -> str | None:
        return self.label_of(int(self.true_index[i]))

    def corrected_label(self, i: int) -> str | None:
        return self.label_of(int(self.corrected[i]))

    def final_label(self, i: int) -> str:
        """Corrected label, else prediction ('' for a file that failed)."""
        return self.corrected_label(i) or self.prediction(i)

    def set_corrected(self, i: int, label: str | None) -> None:
        """Set (or clear with None / the predicted label) a hand correction."""
        if label is not None and label not in self._index:
            raise ValueError(f"unknown label {label!r}")
        if label is None or label == self.prediction(i):
            self.corrected[i] = -1
        else:
            self.corrected[i] = self._index[label]

    @property
    def has_corrections(self) -> bool:
        return bool((self.column("corrected") >= 0).any())

    @property
    def has_true_labels(self) -> bool:
        return bool((self.column("true_index") >= 0).any())

    def result(self, i: int) -> FileResult:
        ok = self.ok(i)
        return FileResult(self._paths[i], self.labels, probs=self.probs[i].copy() if ok else None,
                          uncertain=bool(self.uncertain[i]), error=self._errors.get(i),
                          true_label=self.true_label(i), corrected_label=self.corrected_label(i),
                          number=self._numbers.get(i),
                          number_confidence=float(self.number_confidence[i]) if i in self._numbers else None)

    def __iter__(self) -> Iterator[FileResult]:
        return (self.result(i) for i in range(self._n))

    def labelled_rows(self) -> np.ndarray:
        """Rows with a known true label and a prediction."""
        return np.flatnonzero((self.column("true_index") >= 0) & (self.column("predicted") >= 0))

    def report(self) -> dict[str, Any] | None:
        """:func:`~mnist_desktop.core.metrics.classification_report` over the labelled
        rows (true label from the folder name vs prediction), or None when none."""
        from mnist_desktop.core.metrics import classification_report

        rows = self.labelled_rows()
        if not len(rows):
            return None
        return classification_report(self.true_index[rows], self.probs[rows], self.labels,
                                     uncertain=self.uncertain[rows])

    def cell_rows(self, true_index: int, predicted_index: int) -> np.ndarray:
        """Rows in one confusion-matrix cell (true class, predicted class)."""
        return np.flatnonzero((self.column("true_index") == true_index)
                              & (self.column("predicted") == predicted_index))
