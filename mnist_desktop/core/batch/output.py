"""Writing results as CSV or JSON: the columns (:func:`csv_header`, :func:`csv_row`,
:func:`result_record`) and :func:`write_results`."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Iterable, Sequence

from mnist_desktop.core.batch.results import FileResult, display_path
from mnist_desktop.core.batch.store import ResultStore


# A spreadsheet takes a cell that starts with one of these for a formula and runs it
# (CSV injection: a file named =HYPERLINK(...).png). OWASP's advice: prefix such a cell
# with a single quote, which makes it text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")


def csv_text(text: str) -> str:
    """``text`` as a CSV cell that no spreadsheet runs: a leading ``'`` when it starts
    with ``=``, ``+``, ``-``, ``@``, a tab or a line break."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_header(labels: Sequence[str], corrected: bool = False, numbers: bool = False) -> list[str]:
    """CSV columns: ``path, prediction, confidence, uncertain, error``, then ``number,
    number_confidence`` when the run read numbers (``--number``), one ``p_<label>`` per
    class, then ``corrected_label`` when any label was corrected by hand.

    ``number`` holds the digits read left to right (``""`` when nothing was read);
    ``number_confidence`` the probability that every digit is right. The single-digit
    columns (``prediction``, ``p_*``) read the whole image as one digit either way."""
    cols = ["path", "prediction", "confidence", "uncertain", "error"]
    if numbers:
        cols += ["number", "number_confidence"]
    cols += [csv_text(f"p_{lab}") for lab in labels]
    return cols + ["corrected_label"] if corrected else cols


def csv_row(r: FileResult, corrected: bool = False, numbers: bool = False) -> list[str]:
    """One CSV row matching :func:`csv_header`. Text cells (path, labels, error) go
    through :func:`csv_text`; the JSON records keep them exact."""
    path = csv_text(display_path(r.path))
    if r.probs is None:
        row = [path, "", "", "", csv_text(r.error or "")] + (["", ""] if numbers else []) + [""] * len(r.labels)
    else:
        row = [path, csv_text(r.prediction), f"{r.confidence:.6f}", str(r.uncertain).lower(), ""]
        if numbers:
            row += [r.number or "", "" if r.number_confidence is None else f"{r.number_confidence:.6f}"]
        row += [f"{p:.6f}" for p in r.probs]
    return row + [csv_text(r.corrected_label or "")] if corrected else row


def result_record(r: FileResult, top_k: int = 3, numbers: bool = False) -> dict:
    """One JSON record: the CSV fields plus ``top_k``, ``true_label`` (when known from
    the folder name) and ``corrected_label`` (when set by hand); with ``numbers``,
    ``number`` and ``number_confidence`` (null for a file that failed)."""
    rec = {"path": display_path(r.path), "prediction": r.prediction or None,
           "confidence": None if r.probs is None else round(r.confidence, 6),
           "uncertain": None if r.probs is None else r.uncertain, "error": r.error,
           "top_k": [{"label": lab, "probability": round(p, 6)} for lab, p in r.top_k(top_k)],
           "probabilities": None if r.probs is None else
           {lab: round(float(p), 6) for lab, p in zip(r.labels, r.probs)}}
    if numbers:
        rec["number"] = r.number if r.probs is not None else None
        rec["number_confidence"] = (None if r.probs is None or r.number_confidence is None
                                    else round(r.number_confidence, 6))
    if r.true_label is not None:
        rec["true_label"] = r.true_label
    if r.corrected_label is not None:
        rec["corrected_label"] = r.corrected_label
    return rec


def write_results(path: str | os.PathLike, results: Iterable[FileResult], labels: Sequence[str],
                  top_k: int = 3, corrected: bool | None = None, numbers: bool | None = None) -> None:
    """Write results as CSV or JSON (by suffix), atomically and streaming.

    Parameters
    ----------
    results
        :class:`FileResult` objects or a :class:`ResultStore`; rows are written one by
        one, so 200,000 results never exist as one big string.
    corrected
        Add the ``corrected_label`` column. None: when any result has a correction
        (``results`` must then be a sequence or a :class:`ResultStore`).
    numbers
        Add the ``number`` and ``number_confidence`` fields. None: when the results
        carry number readings (same condition on ``results``).
    """
    from mnist_desktop.core.checkpoint import atomic_write

    def carries(store_flag: str, field: str) -> bool:
        if isinstance(results, ResultStore):
            return getattr(results, store_flag)
        if isinstance(results, Sequence):
            return any(getattr(r, field) is not None for r in results)
        return False

    if corrected is None:
        corrected = carries("has_corrections", "corrected_label")
    if numbers is None:
        numbers = carries("has_numbers", "number")
    as_json = Path(path).suffix.lower() == ".json"

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            if as_json:
                f.write('{"labels": ' + json.dumps(list(labels)) + ', "results": [')
                for n, r in enumerate(results):
                    f.write(("\n " if n == 0 else ",\n ") + json.dumps(result_record(r, top_k, numbers)))
                f.write("\n]}\n")
            else:
                w = csv.writer(f)
                w.writerow(csv_header(labels, corrected, numbers))
                w.writerows(csv_row(r, corrected, numbers) for r in results)

    atomic_write(path, write)
