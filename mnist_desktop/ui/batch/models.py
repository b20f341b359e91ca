"""Qt item models over a :class:`~mnist_desktop.core.batch.ResultStore`.

The table and the thumbnail grid share one :class:`ResultFilterProxy` over one
:class:`BatchResultModel`. Sorting 200,000 rows through ``QSortFilterProxyModel.lessThan``
would call Python millions of times, so the source model sorts itself with numpy (it
keeps a row order) and the proxy only filters, with predicates that read the store's
numpy columns.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt, Signal
from PySide6.QtGui import QBrush, QColor

from mnist_desktop.core.batch import ResultStore, display_path

StoreRole = Qt.UserRole + 1     # the row's index in the ResultStore

# Role numbers as plain ints, looked up once: data() runs for every role of every
# visible cell on each repaint, and PySide's ``Qt.DisplayRole``-style lookups cost
# microseconds each (a 10,000-file batch repainted its grid at 55 ms of GUI time).
_R = Qt.ItemDataRole
_DISPLAY, _EDIT, _DECORATION, _TOOLTIP = int(_R.DisplayRole), int(_R.EditRole), int(_R.DecorationRole), \
    int(_R.ToolTipRole)
_FOREGROUND, _BACKGROUND, _ALIGNMENT = int(_R.ForegroundRole), int(_R.BackgroundRole), int(_R.TextAlignmentRole)
_STORE = int(StoreRole)
_HANDLED = frozenset({_DISPLAY, _EDIT, _DECORATION, _TOOLTIP, _FOREGROUND, _BACKGROUND, _ALIGNMENT, _STORE})


class Column:
    FILE, PREDICTION, CONFIDENCE, UNCERTAIN, TRUE, CORRECTED, ERROR, NUMBER, NUMBER_CONFIDENCE = range(9)
    TITLES = ["File", "Prediction", "Confidence", "Uncertain", "Folder label", "Corrected", "Error",
              "Number", "Number confidence"]
    NUMBER_COLUMNS = (NUMBER, NUMBER_CONFIDENCE)   # shown for runs that read numbers


class BatchResultModel(QAbstractTableModel):
    """Rows of a :class:`ResultStore`, in input order or sorted by a column.

    The ``Corrected`` column is editable (a label, or empty to clear); corrections are
    stored in the ResultStore, where export and sorting into folders read them.
    """

    correctionChanged = Signal(int)   # store row

    def __init__(self, thumbnails=None, parent=None):
        super().__init__(parent)
        self.store: ResultStore | None = None
        self._order: np.ndarray | None = None    # view row -> store row, when sorted
        self._pos: np.ndarray | None = None      # store row -> view row (inverse of _order)
        self._sort: tuple[int, Qt.SortOrder] | None = None
        self._rows = 0      # rows announced to views (the store may already hold more)
        self.thumbnails = thumbnails
        self._error_brush = QBrush(QColor("#b00020"))
        self._uncertain_brush = QBrush(QColor(255, 200, 0, 60))

    # ------------------------------------------------------------------ content
    def reset(self, store: ResultStore | None) -> None:
        self.beginResetModel()
        self.store = store
        self._order = self._pos = None
        self._sort = None
        self._rows = 0 if store is None else len(store)
        self.endResetModel()

    def append_rows(self, new_rows: range) -> None:
        """Announce rows the store just gained (appended at the end, even when sorted;
        :meth:`resort` puts them in place)."""
        if not len(new_rows):
            return
        first = self._rows
        self.beginInsertRows(QModelIndex(), first, first + len(new_rows) - 1)
        if self._order is not None:
            self._order = np.concatenate([self._order, np.arange(new_rows.start, new_rows.stop)])
            self._pos = np.concatenate([self._pos, np.arange(first, first + len(new_rows))])
        self._rows += len(new_rows)
        self.endInsertRows()

    def store_row(self, row: int) -> int:
        return int(self._order[row]) if self._order is not None else row

    def view_row(self, store_row: int) -> int:
        if not 0 <= store_row < self._rows:
            return -1
        return store_row if self._pos is None else int(self._pos[store_row])

    def refresh_row(self, store_row: int, column: int | None = None) -> None:
        """Tell views that ``store_row`` changed: one ``column`` (one item for the grid
        to repaint, e.g. a new thumbnail) or the whole row (e.g. a correction)."""
        r = self.view_row(store_row)
        if r < 0:
            return
        if column is None:
            self.dataChanged.emit(self.index(r, 0), self.index(r, self.columnCount() - 1))
        else:
            i = self.index(r, column)
            self.dataChanged.emit(i, i)

    def refresh_thumbnail(self, store_row: int) -> None:
        """A thumbnail arrived: only the file cell shows it."""
        self.refresh_row(store_row, Column.FILE)

    def grid_text(self, i: int) -> str:
        """The grid's caption of store row ``i``: 'prediction  confidence', the
        correction, or 'error'."""
        s = self.store
        if not s.ok(i):
            return "error"
        number = s.number(i)
        if number is not None:
            return f"{number or '(none)'}  {100 * float(s.number_confidence[i]):.1f}%"
        corr = s.corrected_label(i)
        pred = s.prediction(i)
        return f"{pred} → {corr}" if corr else f"{pred}  {100 * float(s.confidence[i]):.1f}%"

    # ------------------------------------------------------------------ Qt API
    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() or self.store is None else self._rows

    def columnCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(Column.TITLES)

    def headerData(self, section, orientation, role=Qt.DisplayRole):
        if orientation == Qt.Horizontal and role == Qt.DisplayRole:
            return Column.TITLES[section]
        return None

    def flags(self, index):
        f = super().flags(index)
        if index.isValid() and index.column() == Column.CORRECTED and self.store.ok(self.store_row(index.row())):
            f |= Qt.ItemIsEditable
        return f

    def data(self, index, role=_DISPLAY):
        role = int(role)
        if role not in _HANDLED or self.store is None or not index.isValid():
            return None   # most roles a view asks for (font, size hint, check state...)
        s = self.store
        i = self.store_row(index.row())
        if role == _STORE:
            return i
        col = index.column()
        if role == _DISPLAY:
            return self._display(i, col)
        if role == _EDIT:
            return (s.corrected_label(i) or "") if col == Column.CORRECTED else None
        if role == _DECORATION:
            if col != Column.FILE or self.thumbnails is None:
                return None
            # no thumbnail for files that failed: they may be bombs, pipes or garbage
            return self.thumbnails.icon(i, s.path(i)) if s.ok(i) else self.thumbnails.broken_icon
        if role == _TOOLTIP:
            tip = display_path(s.path(i))
            return tip + ("\n" + s.error(i) if not s.ok(i) else "")
        if role == _FOREGROUND:
            return self._error_brush if not s.ok(i) else None
        if role == _BACKGROUND:
            return self._uncertain_brush if s.ok(i) and s.uncertain[i] else None
        if role == _ALIGNMENT and col in (Column.CONFIDENCE, Column.NUMBER_CONFIDENCE):
            return int(Qt.AlignRight | Qt.AlignVCenter)
        return None

    def _display(self, i: int, col: int):
        s = self.store
        if col == Column.FILE:
            return display_path(s.path(i))
        if not s.ok(i):
            return s.error(i) if col == Column.ERROR else ""
        if col == Column.PREDICTION:
            return s.prediction(i)
        if col == Column.CONFIDENCE:
            return f"{100 * float(s.confidence[i]):.1f}%"
        if col == Column.UNCERTAIN:
            return "yes" if s.uncertain[i] else ""
        if col == Column.TRUE:
            return s.true_label(i) or ""
        if col == Column.CORRECTED:
            return s.corrected_label(i) or ""
        if col == Column.NUMBER:
            return s.number(i) or ""
        if col == Column.NUMBER_CONFIDENCE:
            return "" if s.number(i) is None else f"{100 * float(s.number_confidence[i]):.1f}%"
        return ""

    def _keys(self, col: int) -> np.ndarray:
        """One sortable numpy key per store row for ``col`` (errors sort last)."""
        s = self.store
        n = len(s)
        if col == Column.CONFIDENCE:
            return np.nan_to_num(s.column("confidence").astype(np.float64), nan=-1.0)
        if col == Column.PREDICTION:
            return s.column("predicted").astype(np.float64) + np.where(
                s.column("predicted") < 0, 1e9, 0)
        if col == Column.UNCERTAIN:
            return s.column("uncertain").astype(np.float64)
        if col == Column.TRUE:
            return s.column("true_index").astype(np.float64)
        if col == Column.CORRECTED:
            return s.column("corrected").astype(np.float64)
        if col == Column.ERROR:
            return np.array([0.0 if s.ok(i) else 1.0 for i in range(n)])
        if col == Column.NUMBER:   # by value; nothing read sorts first
            return np.array([float(t) if (t := s.number(i)) else -1.0 for i in range(n)])
        if col == Column.NUMBER_CONFIDENCE:
            return np.nan_to_num(s.column("number_confidence").astype(np.float64), nan=-1.0)
        # File: input order is path order within each folder
        return np.arange(n, dtype=np.float64)

    def sort(self, column: int, order: Qt.SortOrder = Qt.AscendingOrder) -> None:
        """Sort with numpy (stable, so ties keep the input order)."""
        if self.store is None:
            return
        self.layoutAboutToBeChanged.emit()
        old = [(p, self.store_row(p.row())) for p in self.persistentIndexList()]
        keys = self._keys(column)[:self._rows]
        if order == Qt.DescendingOrder:
            keys = -keys
        self._order = np.argsort(keys, kind="stable") if column >= 0 else None
        self._sort = (column, order) if column >= 0 else None
        if self._order is None:
            self._pos = None
        else:
            self._pos = np.empty(self._rows, np.int64)
            self._pos[self._order] = np.arange(self._rows)
        for p, srow in old:
            self.changePersistentIndex(p, self.index(self.view_row(srow), p.column()))
        self.layoutChanged.emit()

    def resort(self) -> None:
        """Apply the current sort to rows appended since it was set."""
        if self._sort is not None:
            self.sort(*self._sort)

    def setData(self, index, value, role=Qt.EditRole):
        if not index.isValid() or index.column() != Column.CORRECTED or role != Qt.EditRole:
            return False
        i = self.store_row(index.row())
        return self.set_correction(i, str(value).strip() or None)

    def set_correction(self, store_row: int, label: str | None) -> bool:
        """Set or clear (None) the hand-corrected label of a store row."""
        if self.store is None or not self.store.ok(store_row):
            return False
        if label is not None and label not in self.store.labels:
            return False
        self.store.set_corrected(store_row, label)
        self.refresh_row(store_row)
        self.correctionChanged.emit(store_row)
        return True


class Filter:
    ALL, UNCERTAIN, ERRORS, CORRECTED, MISCLASSIFIED, CELL = ("all", "uncertain", "errors", "corrected",
                                                              "misclassified", "cell")


class ResultFilterProxy(QSortFilterProxyModel):
    """Filters the result rows: all, the uncertain ones (review queue), errors,
    corrected, misclassified (labelled inputs), or one confusion-matrix cell.

    Sorting is forwarded to :class:`BatchResultModel` (numpy); the proxy keeps the
    source order.
    """

    filterChanged = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.mode = Filter.ALL
        self.cell: tuple[int, int] | None = None
        self.setDynamicSortFilter(True)

    def set_filter(self, mode: str, cell: tuple[int, int] | None = None) -> None:
        self.beginFilterChange()
        self.mode = mode
        self.cell = cell if mode == Filter.CELL else None
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        self.filterChanged.emit()

    def refilter(self) -> None:
        """Re-evaluate the filter after the rows' data changed (e.g. a correction)."""
        self.beginFilterChange()
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def describe(self) -> str:
        if self.mode == Filter.CELL and self.cell:
            labels = self.sourceModel().store.labels
            return f"folder {labels[self.cell[0]]}, predicted {labels[self.cell[1]]}"
        return self.mode

    def filterAcceptsRow(self, source_row, source_parent) -> bool:
        if self.mode == Filter.ALL:
            return True
        src: BatchResultModel = self.sourceModel()
        s = src.store
        i = src.store_row(source_row)
        if self.mode == Filter.ERRORS:
            return not s.ok(i)
        if not s.ok(i):
            return False
        if self.mode == Filter.UNCERTAIN:
            return bool(s.uncertain[i])
        # Always a Python bool: PySide cannot convert numpy.bool_ for a C++ bool return.
        if self.mode == Filter.CORRECTED:
            return bool(s.corrected[i] >= 0)
        if self.mode == Filter.MISCLASSIFIED:
            return bool(s.true_index[i] >= 0 and s.true_index[i] != s.predicted[i])
        if self.mode == Filter.CELL and self.cell is not None:
            return bool(s.true_index[i] == self.cell[0] and s.predicted[i] == self.cell[1])
        return True

    def sort(self, column: int, order: Qt.SortOrder = Qt.AscendingOrder) -> None:
        self.sourceModel().sort(column, order)

    def store_row(self, proxy_index) -> int:
        return self.sourceModel().store_row(self.mapToSource(proxy_index).row())
