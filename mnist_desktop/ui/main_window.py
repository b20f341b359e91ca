"""The main window: assembles the canvas, the live prediction widgets and the settings.

The window owns no model and no preprocessing. It wires independent widgets together:
the canvas emits inputs, :class:`LivePrediction` turns them into predictions with the
:class:`InferenceWorker`, and the chart, preview and label display show them. Further
panels (e.g. training) can be docked with :meth:`MainWindow.add_panel`.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QByteArray, QEvent, QSize, Qt, QUrl, Signal
from PySide6.QtGui import QAction, QActionGroup, QDesktopServices, QGuiApplication, QKeySequence, QPalette
from PySide6.QtWidgets import (QApplication, QComboBox, QDockWidget, QFileDialog, QFormLayout,
                               QFrame, QHBoxLayout, QLabel, QMainWindow, QMenu, QSizePolicy, QSlider,
                               QSplitter, QToolBar, QVBoxLayout, QWidget)

from mnist_desktop.ui.banner import MessageBanner
from mnist_desktop.ui.canvas import DrawingCanvas
from mnist_desktop.ui.chart import ProbabilityChart
from mnist_desktop.ui.explain import ExplanationPanel, Explainer, overlay_rect_for_strokes, saliency_to_qimage
from mnist_desktop.ui.icons import make_icon
from mnist_desktop.ui.images import IMAGE_FILE_FILTER, ImageSource, inputs_from_mime
from mnist_desktop.ui.inference import InferenceWorker, ModelInfo
from mnist_desktop.ui.live import LivePrediction
from mnist_desktop.ui.number_view import DigitStrip
from mnist_desktop.ui.prediction_view import PredictionDisplay
from mnist_desktop.ui.preview import ModelInputPreview
from mnist_desktop.ui.settings import PEN_WIDTH_RANGE, AppSettings, SettingsStore
from mnist_desktop.ui.theme import apply_theme

log = logging.getLogger(__name__)

DEVICE_CHOICES = (("auto", "Auto"), ("cpu", "CPU"), ("cuda", "CUDA (GPU)"))
THEME_CHOICES = (("system", "Follow &system"), ("light", "&Light"), ("dark", "&Dark"))
MODEL_SUFFIXES = (".safetensors", ".pt", ".pth")
BROWSE = "__browse__"


def default_model() -> str:
    """Path of the bundled model."""
    from mnist_desktop.core.paths import default_model_path
    return str(default_model_path())


def user_models() -> list[Path]:
    """Model files in the user's models folder, newest first."""
    from mnist_desktop.core.paths import user_models_dir
    folder = user_models_dir()
    try:
        files = [p for p in folder.iterdir() if p.suffix.lower() in MODEL_SUFFIXES and p.is_file()]
    except OSError:
        return []
    return sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)


class MainWindow(QMainWindow):
    """The app's main window.

    Parameters
    ----------
    store
        Where settings are read from and saved to.
    worker
        The inference worker. When None the window creates, starts and stops its own;
        a worker passed in is shared and left running on close.
    model_override
        A model file to use for this session instead of the saved setting (``--model``).

    Signals
    -------
    started()
        :meth:`start` ran: the worker is up and the model is loading.
    """

    started = Signal()

    def __init__(self, store: SettingsStore, worker: InferenceWorker | None = None,
                 model_override: str | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("mainWindow")
        self.setWindowTitle("MNIST Desktop")
        self.setWindowIcon(make_icon("app"))
        self.setAccessibleName("MNIST Desktop")
        self.setAcceptDrops(True)
        self.store = store
        loaded = store.load()
        self.settings: AppSettings = loaded.settings
        self._owns_worker = worker is None
        self.worker = worker or InferenceWorker(self)
        self._model_override = model_override
        self._images: list[str] = []
        self._image_index = 0
        self._batch_window = None
        self._close_guards: list[Callable[[], bool]] = []
        self._icons: list[tuple[str, QAction]] = []
        app = QApplication.instance()
        if app is not None:
            # Before any widget exists, so nothing is polished twice.
            apply_theme(app, self.settings.theme)

        self._build_widgets()
        self._build_actions()
        self._build_menus()
        self._build_toolbar()
        self._build_layout()
        self._update_image_actions()
        self._connect()
        self._refresh_icons()
        self._refresh_model_combo()
        self._sync_controls()
        self.act_number.blockSignals(True)
        self.act_number.setChecked(self.settings.number_mode)
        self.act_number.blockSignals(False)
        self._apply_number_mode(self.settings.number_mode)
        self.live.set_number_mode(self.settings.number_mode)
        if self.settings.window_geometry:
            self.restoreGeometry(QByteArray(self.settings.window_geometry))
        else:
            self.resize(1040, 680)
        if loaded.notice:
            log.warning("settings: %s", loaded.notice)
            self.banner.show_message(loaded.notice, "warning")

    # ------------------------------------------------------------------ construction
    def _build_widgets(self) -> None:
        self.canvas = DrawingCanvas(self.settings.pen_width)
        self.chart = ProbabilityChart([str(i) for i in range(10)])
        self.preview = ModelInputPreview()
        self.display = PredictionDisplay()
        self.digits = DigitStrip()
        self._number_view = None
        self.banner = MessageBanner()
        self.live = LivePrediction(self.worker, self)
        self.explainer = Explainer(self.worker, self)
        self.explanation = ExplanationPanel()
        self.explanation.setVisible(False)

        self.model_combo = QComboBox()
        self.model_combo.setObjectName("modelCombo")
        self.model_combo.setAccessibleName("Model")
        self.model_combo.setToolTip("The model that classifies your input: the bundled one, "
                                    "your trained models, or any model file")
        self.model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model_combo.setMinimumContentsLength(16)
        self.device_combo = QComboBox()
        self.device_combo.setObjectName("deviceCombo")
        self.device_combo.setAccessibleName("Device")
        self.device_combo.setToolTip("Where the model runs; CUDA falls back to the CPU when no GPU is usable")
        for key, text in DEVICE_CHOICES:
            self.device_combo.addItem(text, key)
        self.model_info = QLabel()
        self.model_info.setObjectName("modelInfo")
        self.model_info.setAccessibleName("Model information")
        self.model_info.setWordWrap(True)

        self.width_slider = QSlider(Qt.Orientation.Horizontal)
        self.width_slider.setObjectName("penWidthSlider")
        self.width_slider.setAccessibleName("Pen width")
        self.width_slider.setToolTip("Pen width ([ thinner, ] thicker)")
        self.width_slider.setRange(int(PEN_WIDTH_RANGE[0]), int(PEN_WIDTH_RANGE[1]))
        self.width_slider.setSingleStep(1)
        self.width_slider.setPageStep(4)
        self.width_slider.setFixedWidth(120)
        self.width_value = QLabel()
        self.width_value.setObjectName("penWidthValue")
        self.width_value.setAccessibleName("Pen width value")
        self.width_value.setMinimumWidth(22)
        self.image_position = QLabel()
        self.image_position.setObjectName("imagePosition")
        self.image_position.setAccessibleName("Image position")

        self.model_status = QLabel()
        self.model_status.setObjectName("modelStatus")
        self.model_status.setAccessibleName("Model status")

    def _action(self, key: str, text: str, tip: str, shortcuts=(), slot=None, icon: str | None = None,
                checkable: bool = False) -> QAction:
        a = QAction(text, self)
        a.setObjectName(f"action_{key}")
        seqs = [QKeySequence(s) for s in shortcuts]
        if seqs:
            a.setShortcuts(seqs)
            tip = f"{tip} ({seqs[0].toString(QKeySequence.SequenceFormat.NativeText)})"
        a.setToolTip(tip)
        a.setStatusTip(tip)
        a.setCheckable(checkable)
        if slot is not None:
            a.triggered.connect(slot)
        if icon:
            self._icons.append((icon, a))
        self.addAction(a)  # shortcuts work even while the menu bar is hidden
        return a

    def _adopt(self, a: QAction, key: str, tip: str, shortcuts) -> QAction:
        a.setObjectName(f"action_{key}")
        seqs = [QKeySequence(x) for x in shortcuts]
        a.setShortcuts(seqs)
        tip = f"{tip} ({seqs[0].toString(QKeySequence.SequenceFormat.NativeText)})"
        a.setToolTip(tip)
        a.setStatusTip(tip)
        self._icons.append((key, a))
        self.addAction(a)
        return a

    def _build_actions(self) -> None:
        K = QKeySequence.StandardKey
        self.act_open = self._action("open", "&Open Image…", "Open one or more images", [K.Open],
                                     self.open_dialog, "open")
        self.act_paste = self._action("paste", "&Paste Image", "Classify the image on the clipboard",
                                      [K.Paste], self.paste, "paste")
        self.act_prev = self._action("previous", "Previous Image", "Show the previous opened image",
                                     ["PgUp", "Alt+Left"], lambda: self.step_image(-1), "previous")
        self.act_next = self._action("next", "Next Image", "Show the next opened image",
                                     ["PgDown", "Alt+Right"], lambda: self.step_image(1), "next")
        self.act_batch = self._action("batch", "&Batch Classify…", "Classify a folder of images",
                                      ["Ctrl+B"], self.open_batch)
        self.act_model_file = self._action("model_file", "Choose &Model File…",
                                           "Load any model checkpoint file", ["Ctrl+M"], self.browse_model)
        self.act_quit = self._action("quit", "&Quit", "Quit the app", ["Ctrl+Q"], self.close)

        # Qt's own undo/redo actions track the stack's texts ("Undo Draw stroke") and
        # enabled state, and disconnect safely when the window is destroyed.
        stack = self.canvas.undo_stack
        self.act_undo = self._adopt(stack.createUndoAction(self, "&Undo"), "undo",
                                    "Undo the last stroke or edit", [K.Undo])
        self.act_redo = self._adopt(stack.createRedoAction(self, "&Redo"), "redo",
                                    "Redo the last undone edit", ["Ctrl+Shift+Z", "Ctrl+Y"])
        self.act_clear = self._action("clear", "&Clear", "Clear the canvas", ["Esc", "Del"],
                                      self.canvas.clear, "clear")
        self.act_pen = self._action("pen", "&Pen", "Draw with the pen", ["P"],
                                    lambda: self.canvas.set_tool("pen"), "pen", checkable=True)
        self.act_eraser = self._action("eraser", "&Eraser", "Erase parts of strokes", ["E"],
                                       lambda: self.canvas.set_tool("eraser"), "eraser", checkable=True)
        tools = QActionGroup(self)
        tools.addAction(self.act_pen)
        tools.addAction(self.act_eraser)
        self.act_thinner = self._action("thinner", "&Thinner Pen", "Make the pen thinner", ["["],
                                        lambda: self._nudge_width(-2))
        self.act_thicker = self._action("thicker", "T&hicker Pen", "Make the pen thicker", ["]"],
                                        lambda: self._nudge_width(2))

        self.theme_actions: dict[str, QAction] = {}
        group = QActionGroup(self)
        for key, text in THEME_CHOICES:
            a = self._action(f"theme_{key}", text, f"Use the {key} theme" if key != "system"
                             else "Follow the system's light/dark setting", checkable=True)
            a.triggered.connect(lambda _=False, k=key: self.set_theme(k))
            group.addAction(a)
            self.theme_actions[key] = a
        self.device_actions: dict[str, QAction] = {}
        group = QActionGroup(self)
        for key, text in DEVICE_CHOICES:
            a = self._action(f"device_{key}", text, f"Run the model on {text}", checkable=True)
            a.triggered.connect(lambda _=False, k=key: self.select_device(k))
            group.addAction(a)
            self.device_actions[key] = a
        self.act_show_why = self._action("show_why", "Show &Why",
                                         "Explain the prediction: which ink pushed it (red) or argued "
                                         "against it (blue), and the closest training examples",
                                         ["Ctrl+Shift+W"], checkable=True)
        self.act_show_why.toggled.connect(self.set_show_why)
        self.act_number = self._action("number_mode", "&Number Mode",
                                       "Read several digits written side by side as a number", ["N"],
                                       icon="number", checkable=True)
        self.act_number.toggled.connect(self.set_number_mode)
        self.act_about = self._action("about", "&About MNIST Desktop", "About this app", [], self._about)
        self.act_show_log = self._action("show_log", "Show &Log", "Open the log of warnings and errors "
                                         "(attach it to a bug report)", [], self.show_log)

    def _build_menus(self) -> None:
        mb = self.menuBar()
        mb.setObjectName("menuBar")
        f = mb.addMenu("&File")
        f.setObjectName("menuFile")
        for a in (self.act_open, self.act_paste, None, self.act_prev, self.act_next, None,
                  self.act_batch, None, self.act_quit):
            f.addSeparator() if a is None else f.addAction(a)
        e = mb.addMenu("&Edit")
        e.setObjectName("menuEdit")
        for a in (self.act_undo, self.act_redo, self.act_clear, None, self.act_pen, self.act_eraser,
                  self.act_thinner, self.act_thicker):
            e.addSeparator() if a is None else e.addAction(a)
        v = mb.addMenu("&View")
        v.setObjectName("menuView")
        v.addAction(self.act_number)
        v.addSeparator()
        t = v.addMenu("&Theme")
        t.setObjectName("menuTheme")
        for a in self.theme_actions.values():
            t.addAction(a)
        v.addSeparator()
        v.addAction(self.act_show_why)
        m = mb.addMenu("&Model")
        m.setObjectName("menuModel")
        m.addAction(self.act_model_file)
        d = m.addMenu("&Device")
        d.setObjectName("menuDevice")
        for a in self.device_actions.values():
            d.addAction(a)
        self._train_menu = mb.addMenu("&Train")
        self._train_menu.setObjectName("menuTrain")
        from mnist_desktop.ui.training.entry import add_training_entries
        self.training = add_training_entries(self)   # Train > New Run (Ctrl+T): the training panel
        from mnist_desktop.ui.corrections import add_corrections
        # Correct… under the chart, Ctrl+Alt+digit, Train > Fine-tune on My Handwriting
        self.corrections = add_corrections(self)
        self.add_close_guard(self.corrections.close_guard)
        h = mb.addMenu("&Help")
        h.setObjectName("menuHelp")
        h.addAction(self.act_show_log)
        h.addSeparator()
        h.addAction(self.act_about)

    def _build_toolbar(self) -> None:
        tb = QToolBar("Tools")
        tb.setObjectName("toolsToolBar")
        tb.setAccessibleName("Tools")
        tb.setMovable(False)
        tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonIconOnly)
        tb.setIconSize(tb.iconSize().scaled(20, 20, Qt.AspectRatioMode.KeepAspectRatio))
        self.addToolBar(tb)
        self.toolbar = tb
        tb.addAction(self.act_pen)
        tb.addAction(self.act_eraser)
        tb.addSeparator()
        self.width_icon = QLabel()
        self.width_icon.setObjectName("penWidthIcon")
        self.width_icon.setToolTip(self.width_slider.toolTip())
        tb.addWidget(self.width_icon)
        tb.addWidget(self.width_slider)
        tb.addWidget(self.width_value)
        tb.addSeparator()
        for a in (self.act_undo, self.act_redo, self.act_clear):
            tb.addAction(a)
        tb.addSeparator()
        tb.addAction(self.act_open)
        tb.addAction(self.act_paste)
        tb.addSeparator()
        tb.addAction(self.act_number)
        # Image navigation appears only while several opened images can be stepped
        # through; proxies keep the menu entries visible (disabled) meanwhile.
        self._nav_separator = tb.addSeparator()
        tb_prev = QAction(self.act_prev.text(), self)
        tb_prev.setObjectName("action_toolbar_previous")
        tb_prev.setToolTip(self.act_prev.toolTip())
        tb_prev.triggered.connect(self.act_prev.trigger)
        tb_next = QAction(self.act_next.text(), self)
        tb_next.setObjectName("action_toolbar_next")
        tb_next.setToolTip(self.act_next.toolTip())
        tb_next.triggered.connect(self.act_next.trigger)
        self._icons.append(("previous", tb_prev))
        self._icons.append(("next", tb_next))
        tb.addAction(tb_prev)
        label_action = tb.addWidget(self.image_position)
        tb.addAction(tb_next)
        self._nav_actions = [tb_prev, label_action, tb_next]
        for a in tb.actions():
            w = tb.widgetForAction(a)
            if w is not None and a.objectName().startswith("action_"):
                name = a.objectName()[len("action_"):]
                w.setObjectName(f"toolButton_{name}")
                w.setAccessibleName(a.text().replace("&", "").rstrip("…"))
                # Toolbar buttons are focusable so the toolbar works from the keyboard too.
                w.setFocusPolicy(Qt.FocusPolicy.TabFocus)
        tb.widgetForAction(self.act_number).setAccessibleName("Read a number")

    def _build_layout(self) -> None:
        panel = QFrame()
        panel.setObjectName("resultPanel")
        panel.setAccessibleName("Result")
        panel.setFrameShape(QFrame.Shape.StyledPanel)
        panel.setMinimumWidth(340)
        top = QHBoxLayout()
        top.setSpacing(16)
        top.addWidget(self.display, 1)
        pv = QVBoxLayout()
        pv.setSpacing(4)
        pv.addWidget(self.preview, 0, Qt.AlignmentFlag.AlignHCenter)
        cap = self._caption("Model input (28×28)", "previewCaption")
        cap.setAlignment(Qt.AlignmentFlag.AlignHCenter)
        pv.addWidget(cap)
        pv.addStretch(1)
        top.addLayout(pv)
        form = QFormLayout()
        form.setContentsMargins(0, 0, 0, 0)
        form.setHorizontalSpacing(10)
        # Mnemonics distinct from the menus (F, E, V, M, H): Alt+L, Alt+C.
        model_label = QLabel("Mode&l")
        model_label.setObjectName("modelLabel")
        model_label.setBuddy(self.model_combo)
        device_label = QLabel("Devi&ce")
        device_label.setObjectName("deviceLabel")
        device_label.setBuddy(self.device_combo)
        form.addRow(model_label, self.model_combo)
        form.addRow(device_label, self.device_combo)
        lay = QVBoxLayout(panel)
        lay.setContentsMargins(18, 16, 18, 14)
        lay.setSpacing(10)
        lay.addLayout(top)
        lay.addWidget(self.digits)
        self.chart_caption = self._caption("Probabilities", "chartCaption")
        lay.addWidget(self.chart_caption)
        lay.addWidget(self.chart, 1)
        correct_row = QHBoxLayout()
        correct_row.setContentsMargins(0, 0, 0, 0)
        correct_row.addStretch(1)
        correct_row.addWidget(self.corrections.button)
        lay.addLayout(correct_row)
        lay.addWidget(self.explanation)
        lay.addWidget(_Rule())
        lay.addLayout(form)
        lay.addWidget(self.model_info)

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.setObjectName("mainSplitter")
        self.splitter.setChildrenCollapsible(False)
        self.splitter.addWidget(self.canvas)
        self.splitter.addWidget(panel)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        central = QWidget()
        central.setObjectName("centralWidget")
        v = QVBoxLayout(central)
        v.setContentsMargins(10, 8, 10, 6)
        v.setSpacing(8)
        v.addWidget(self.banner)
        v.addWidget(self.splitter, 1)
        self.setCentralWidget(central)
        self.statusBar().setObjectName("statusBar")
        self.statusBar().addPermanentWidget(self.model_status)
        self.setTabOrder(self.canvas, self.model_combo)
        self.setTabOrder(self.model_combo, self.device_combo)

    def _caption(self, text: str, name: str) -> QLabel:
        lab = QLabel(text)
        lab.setObjectName(name)
        f = lab.font()
        f.setPointSizeF(f.pointSizeF() * 0.92)
        f.setBold(True)
        lab.setFont(f)
        lab.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        return lab

    def _connect(self) -> None:
        self.canvas.inputChanged.connect(self.live.set_input)
        self.canvas.toolChanged.connect(self._sync_controls)
        self.canvas.penWidthChanged.connect(self._on_pen_width)
        self.live.readingChanged.connect(self._show_reading)
        self.live.predictionChanged.connect(self._show_prediction)
        self.live.predictionChanged.connect(self.explainer.set_prediction)
        self.chart.classClicked.connect(self._on_class_clicked)
        self.explainer.contrastChanged.connect(self.chart.set_marked)
        self.explainer.explanationChanged.connect(self._show_explanation)
        self.explainer.failed.connect(lambda m: self.statusBar().showMessage(f"Cannot explain: {m}", 8000))
        self.digits.digitSelected.connect(self.live.select_digit)
        self.digits.editRequested.connect(self.live.edit_segments)
        self.canvas.segmentSelected.connect(self.live.select_digit)
        self.canvas.segmentEditRequested.connect(self.live.edit_segments)
        self.live.stateChanged.connect(self.display.set_state)
        self.live.imageUpdated.connect(self.canvas.image_updated)
        self.live.message.connect(self._show_notice)
        self.worker.modelLoading.connect(self._on_model_loading)
        self.worker.modelLoaded.connect(self._on_model_loaded)
        self.worker.modelFailed.connect(self._on_model_failed)
        self.worker.processRestarted.connect(lambda m: self._show_message("warning", m))
        self.width_slider.valueChanged.connect(lambda v: self.canvas.set_pen_width(float(v)))
        self.model_combo.activated.connect(self._on_model_combo)
        self.device_combo.activated.connect(lambda i: self.select_device(self.device_combo.itemData(i)))
        app = QGuiApplication.instance()
        if app is not None:
            app.styleHints().colorSchemeChanged.connect(self._on_system_scheme)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the inference worker (if this window owns it) and load the model.

        Called once the window is on screen, so torch loads while the user can already
        draw.
        """
        if self._owns_worker and not self.worker.is_running:
            self.worker.start()
        info = self.worker.model_info
        path, device = self.model_path(), self.settings.device
        if info is not None and self.worker.is_ready and _same_file(info.path, path) \
                and info.requested_device == device:
            self._on_model_loaded(info)
            self.live.refresh()
        else:
            self.worker.load_model(path, device)
        self.started.emit()

    def model_path(self) -> str:
        """The model file in use: ``--model``, else the setting, else the bundled one."""
        return self._model_override or self.settings.model_path or default_model()

    def add_panel(self, widget: QWidget, title: str,
                  area: Qt.DockWidgetArea = Qt.DockWidgetArea.RightDockWidgetArea) -> QDockWidget:
        """Dock another panel (e.g. training) beside the canvas."""
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock_{widget.objectName() or title.replace(' ', '_')}")
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def train_menu(self) -> QMenu:
        """The Train menu (between Model and Help): training, evaluation and fine-tuning add
        their entries here, so there is one menu however many features contribute to it."""
        return self._train_menu

    def add_close_guard(self, guard: Callable[[], bool]) -> None:
        """Ask ``guard()`` before the window closes; it returns False to keep the window open
        (e.g. a panel whose run the user chose not to stop) and cleans up its own work otherwise."""
        self._close_guards.append(guard)

    def closeEvent(self, ev) -> None:
        if self._batch_window is not None and not self._batch_window.close():
            ev.ignore()   # the batch window keeps corrections the user has not exported
            return
        for guard in list(self._close_guards):
            if not guard():
                ev.ignore()
                return
        self.settings.window_geometry = bytes(self.saveGeometry().data())
        self._save_settings()
        self.live.detach()
        if self._owns_worker:
            self.worker.stop()
        super().closeEvent(ev)

    # ------------------------------------------------------------------ settings
    def _save_settings(self) -> None:
        notice = self.store.save(self.settings)
        if notice:  # said once; the store stays quiet while it keeps failing
            self.banner.show_message(notice, "warning")

    def _sync_controls(self, *_) -> None:
        self.act_pen.setChecked(self.canvas.tool == "pen")
        self.act_eraser.setChecked(self.canvas.tool == "eraser")
        self.width_slider.blockSignals(True)
        self.width_slider.setValue(round(self.canvas.pen_width))
        self.width_slider.blockSignals(False)
        self.width_value.setText(f"{self.canvas.pen_width:.0f}")
        device = self.shown_device()
        i = self.device_combo.findData(device)
        self.device_combo.setCurrentIndex(max(0, i))
        self.device_actions.get(device, self.device_actions["auto"]).setChecked(True)
        self.theme_actions.get(self.settings.theme, self.theme_actions["system"]).setChecked(True)
        if self.act_show_why.isChecked() != self.settings.show_why:
            self.act_show_why.setChecked(self.settings.show_why)

    def _on_pen_width(self, width: float) -> None:
        self.settings.pen_width = float(width)
        self._sync_controls()
        self._save_settings()

    def _nudge_width(self, delta: int) -> None:
        lo, hi = PEN_WIDTH_RANGE
        self.canvas.set_pen_width(min(hi, max(lo, self.canvas.pen_width + delta)))

    def set_show_why(self, on: bool) -> None:
        """Show (and compute, in the inference process) the explanation of each
        prediction, or hide it; remembered."""
        on = bool(on)
        if self.act_show_why.isChecked() != on:
            self.act_show_why.setChecked(on)   # toggled() calls back here
            return
        self.explanation.setVisible(on)
        self.explainer.set_enabled(on)
        if on and self.explainer.explanation is None:
            self.explanation.set_explanation(None, self.explainer.prediction,
                                             "Explaining…" if self.explainer.prediction is not None else "")
        if self.settings.show_why != on:
            self.settings.show_why = on
            self._save_settings()

    def _on_class_clicked(self, index: int) -> None:
        if self.explainer.enabled:
            self.explainer.toggle_contrast(index)

    def _show_explanation(self, explanation) -> None:
        prediction = self.explainer.prediction
        self.explanation.set_explanation(explanation, prediction)
        rect = None
        if explanation is not None and prediction is not None and self.canvas.state.image is None:
            rect = overlay_rect_for_strokes(self.canvas.strokes, prediction.image)
        overlay = None
        if rect is not None:
            # Upscaled smoothly here: a 28x28 image stretched by the painter shows its squares.
            overlay = saliency_to_qimage(explanation.saliency).scaled(
                224, 224, Qt.AspectRatioMode.IgnoreAspectRatio, Qt.TransformationMode.SmoothTransformation)
        self.canvas.set_overlay(overlay, rect)

    def set_theme(self, theme: str) -> None:
        """Switch to ``system``, ``light`` or ``dark`` and remember it."""
        self.settings.theme = theme
        app = QApplication.instance()
        if app is not None:
            apply_theme(app, theme)
        self._sync_controls()
        self._save_settings()

    def _on_system_scheme(self, *_) -> None:
        if self.settings.theme == "system":
            apply_theme(QApplication.instance(), "system")

    def changeEvent(self, ev) -> None:
        if ev.type() == QEvent.Type.PaletteChange and hasattr(self, "width_icon"):
            # A label's pixmap is a snapshot: repaint it in the new theme's colour.
            self.width_icon.setPixmap(make_icon("width").pixmap(QSize(20, 20), self.devicePixelRatioF()))
        super().changeEvent(ev)

    def _refresh_icons(self) -> None:
        # Vector icons follow the palette by themselves; they are assigned once.
        for name, action in self._icons:
            action.setIcon(make_icon(name))
        self.width_icon.setPixmap(make_icon("width").pixmap(QSize(20, 20), self.devicePixelRatioF()))

    # ------------------------------------------------------------------ model & device
    def shown_device(self) -> str:
        """The device the box and menu show: the chosen one, or ``cpu`` when a CUDA
        request fell back to the CPU (the choice stays saved for the next start)."""
        info = self.worker.model_info
        if (self.settings.device == "cuda" and info is not None and info.requested_device == "cuda"
                and info.device != "cuda"):
            return "cpu"
        return self.settings.device

    def select_device(self, device: str) -> None:
        """Run the model on ``auto``, ``cpu`` or ``cuda`` (reloads it; no restart)."""
        if device not in dict(DEVICE_CHOICES):
            return
        self.settings.device = device
        self._sync_controls()
        self._save_settings()
        self.worker.load_model(self.model_path(), device)

    def select_model(self, path: str | os.PathLike | None) -> None:
        """Use the model file ``path`` (None or empty: the bundled model)."""
        self._model_override = None
        path = str(path) if path else ""
        self.settings.model_path = "" if path and _same_file(path, default_model()) else path
        self._save_settings()
        self._refresh_model_combo()
        self.worker.load_model(self.model_path(), self.settings.device)

    def browse_model(self) -> None:
        """Ask for a model file and use it."""
        from mnist_desktop.core.paths import user_models_dir
        start = str(Path(self.model_path()).parent if self.settings.model_path else user_models_dir())
        path, _ = QFileDialog.getOpenFileName(self, "Choose a model file", start,
                                              "Model files (*.safetensors *.pt *.pth);;All files (*)")
        if path:
            self.select_model(path)
        else:
            self._refresh_model_combo()

    def _refresh_model_combo(self) -> None:
        combo = self.model_combo
        combo.blockSignals(True)
        combo.clear()
        combo.addItem("Bundled model", "")
        combo.setItemData(0, default_model(), Qt.ItemDataRole.ToolTipRole)
        current = self.model_path()
        entries = [(p.stem, str(p)) for p in user_models()]
        if not any(_same_file(current, p) for _, p in entries) and not _same_file(current, default_model()):
            entries.insert(0, (Path(current).name, current))
        for name, path in entries:
            combo.addItem(name, path)
            combo.setItemData(combo.count() - 1, path, Qt.ItemDataRole.ToolTipRole)
        combo.insertSeparator(combo.count())
        combo.addItem("Other file…", BROWSE)
        index = 0
        for i in range(combo.count()):
            data = combo.itemData(i)
            if data and data != BROWSE and _same_file(data, current):
                index = i
        combo.setCurrentIndex(index)
        combo.blockSignals(False)

    def _on_model_combo(self, index: int) -> None:
        data = self.model_combo.itemData(index)
        if data == BROWSE:
            self.browse_model()
        else:
            self.select_model(data or None)

    def _on_model_loading(self, path: str, device: str) -> None:
        self.model_status.setText(f"Loading {Path(path).name}…")
        self.model_info.setText(f"Loading {Path(path).name} on {device.upper() if device != 'auto' else 'the best device'}…")

    def _on_model_loaded(self, info: ModelInfo) -> None:
        self.chart.set_labels(info.labels)
        self.corrections.set_labels(info.labels)
        device = info.device.upper()
        if info.backend == "onnxruntime":
            device += " · ONNX\u00a0Runtime"   # no break inside the name when the label wraps
        self.model_status.setText(f"{info.name} · {device}")
        self.model_info.setText(f"{info.name} ({info.arch}) · {len(info.labels)} classes · {device}")
        self.model_info.setToolTip(info.path)
        self._sync_controls()
        if info.device_message:
            self._show_message("warning", info.device_message[0].upper() + info.device_message[1:] + ".")
        elif self.banner.isVisible() and self.banner.level == "warning" and "CPU" in self.banner.text:
            self.banner.dismiss()

    def _on_model_failed(self, path: str, message: str) -> None:
        name = Path(path).name
        if self.worker.is_ready and self.worker.model_info is not None:
            active = self.worker.model_info
            self._show_message("error", f"Could not load model {name}: {message}. Still using {active.name}.")
            self.settings.model_path = "" if _same_file(active.path, default_model()) else active.path
            self._model_override = None
            self._save_settings()
            self._refresh_model_combo()
            self._on_model_loaded(active)
            return
        if not _same_file(path, default_model()):
            self._show_message("error", f"Could not load model {name}: {message}. Using the bundled model instead.")
            self._model_override = None
            self.settings.model_path = ""
            self._save_settings()
            self._refresh_model_combo()
            self.worker.load_model(default_model(), self.settings.device)
        else:
            self._show_message("error", f"Could not load the bundled model: {message}")
            self.model_status.setText("No model")
            self.model_info.setText("No model loaded")

    # ------------------------------------------------------------------ number mode
    def set_number_mode(self, on: bool) -> None:
        """Read the input as a number of several digits (True) or as one digit; saved."""
        on = bool(on)
        if self.act_number.isChecked() != on:
            self.act_number.setChecked(on)   # toggled() comes back here
            return
        self.settings.number_mode = on
        self._save_settings()
        self._apply_number_mode(on)
        self.live.set_number_mode(on)

    def _apply_number_mode(self, on: bool) -> None:
        self.digits.setVisible(on)
        self.display.number_mode = on
        self.canvas.set_hint("Write a number here (digits side by side)\nor drop / paste an image" if on
                             else "Draw a digit here\nor drop / paste an image")
        if not on:
            self.chart_caption.setText("Probabilities")
        if self.live.state == "blank":
            self.display.set_state("blank")

    def _show_reading(self, view) -> None:
        """A number reading (a NumberView) or None: boxes on the canvas, the digit strip,
        and the chart caption naming the digit it shows."""
        self._number_view = view
        self.canvas.set_number_view(view)
        self.digits.set_view(view)
        if view is not None and len(view.reading.digits) > 1:
            d = view.reading.digits[view.selected].prediction
            self.chart_caption.setText(f"Probabilities of digit {view.selected + 1} of "
                                       f"{len(view.reading.digits)} ({d.label})")
        else:
            self.chart_caption.setText("Probabilities")

    # ------------------------------------------------------------------ prediction
    def _show_prediction(self, prediction) -> None:
        if prediction is not None:
            self._clear_notice()
        self.chart.set_prediction(prediction)
        if prediction is not None and self._number_view is not None:
            self.display.set_reading(self._number_view)
        else:
            self.display.set_prediction(prediction)
        self.preview.set_image(None if prediction is None else prediction.image)

    def _show_notice(self, level: str, text: str) -> None:
        """A message about the last action (a file that cannot be opened, an empty
        clipboard): it goes away when the next action succeeds."""
        self._show_message(level, text)
        self._notice = text

    def _clear_notice(self) -> None:
        notice, self._notice = getattr(self, "_notice", None), None
        if notice and self.banner.isVisible() and self.banner.text == notice:
            self.banner.dismiss()

    def _show_message(self, level: str, text: str) -> None:
        if level in ("warning", "error"):
            log.log(logging.ERROR if level == "error" else logging.WARNING, "%s", text)
        self.banner.show_message(text, level)
        self.statusBar().showMessage(text, 8000)

    # ------------------------------------------------------------------ images
    def open_dialog(self) -> None:
        """Ask for image files and show them."""
        paths, _ = QFileDialog.getOpenFileNames(self, "Open images", self.settings.last_dir,
                                                IMAGE_FILE_FILTER)
        if paths:
            self.open_files(paths)

    def open_files(self, paths) -> None:
        """Show and classify image files; with several, step through them with
        Previous/Next. Missing files and folders get a message."""
        files, problems = [], []
        for p in map(str, paths):
            if os.path.isdir(p):
                problems.append(f"{Path(p).name} is a folder (use File > Batch Classify)")
            elif not os.path.isfile(p):
                problems.append(f"{Path(p).name}: file not found")
            else:
                files.append(p)
        if problems:
            self._show_notice("error", "Cannot open " + "; ".join(problems))
        if not files:
            return
        if not problems:
            self._clear_notice()
        self.settings.last_dir = str(Path(files[-1]).parent)
        self._save_settings()
        self._images = files
        self._image_index = 0
        self._show_image_at(0)

    def show_image(self, image, name: str = "Pasted image") -> None:
        """Show and classify a QImage (pasted or dropped image data)."""
        self._images = []
        self._update_image_actions()
        self._clear_notice()
        self.canvas.show_image(ImageSource.from_qimage(image, name))

    def step_image(self, delta: int) -> None:
        """Show the next (``delta`` 1) or previous (-1) of several opened images."""
        if len(self._images) > 1:
            self._show_image_at((self._image_index + delta) % len(self._images))

    def _show_image_at(self, index: int) -> None:
        self._image_index = index
        self.canvas.show_image(ImageSource.from_file(self._images[index]))
        self._update_image_actions()

    def _update_image_actions(self) -> None:
        many = len(self._images) > 1
        self.act_prev.setEnabled(many)
        self.act_next.setEnabled(many)
        for a in getattr(self, "_nav_actions", []):
            a.setVisible(many)
        if hasattr(self, "_nav_separator"):
            self._nav_separator.setVisible(many)
        self.image_position.setText(f" {self._image_index + 1} / {len(self._images)} " if many else "")

    def paste(self) -> None:
        """Classify what the clipboard holds: image data or copied image files."""
        paths, image = inputs_from_mime(QGuiApplication.clipboard().mimeData())
        if paths:
            self.open_files(paths)
        elif image is not None:
            self.show_image(image)
        else:
            self._show_notice("info", "The clipboard holds no image or image file to paste.")

    def dragEnterEvent(self, ev) -> None:
        mime = ev.mimeData()
        if mime.hasUrls() or mime.hasImage():
            ev.acceptProposedAction()
        else:
            ev.ignore()

    def dropEvent(self, ev) -> None:
        paths, image = inputs_from_mime(ev.mimeData())
        if paths:
            self.open_files(paths)
        elif image is not None:
            self.show_image(image, "Dropped image")
        else:
            self._show_notice("error", "Nothing to open in what was dropped (only local image files and images).")
            ev.ignore()
            return
        ev.acceptProposedAction()

    # ------------------------------------------------------------------ other windows
    def open_batch(self) -> None:
        """Open the batch classification window (imported on first use) with the main
        window's current model file and device."""
        try:
            batch = importlib.import_module("mnist_desktop.ui.batch")
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("mnist_desktop.ui.batch"):
                self._show_message("info", "Batch classification is not available in this build.")
                return
            raise
        factory = getattr(batch, "BatchWindow", None)
        if factory is None:
            self._show_message("error", "Batch classification is not available in this build.")
            return
        if self._batch_window is None or not self._batch_window.isVisible():
            self._batch_window = factory(model=self.model_path(), device=self.settings.device)
        self._batch_window.show()
        self._batch_window.raise_()
        self._batch_window.activateWindow()

    def show_log(self) -> None:
        """Open the log file (created empty when nothing was logged yet) in the
        desktop's viewer for text files."""
        from mnist_desktop.ui.app_log import log_file_path

        path = log_file_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(exist_ok=True)
        except OSError as e:
            self._show_message("error", f"Cannot create the log file {path}: {e.strerror or e}")
            return
        if not QDesktopServices.openUrl(QUrl.fromLocalFile(str(path))):
            self._show_message("info", f"The log file is {path} (no program to open it was found).")

    def _about(self) -> None:
        from mnist_desktop.ui.about import AboutDialog

        AboutDialog(self, self.worker.model_info, self.findChildren(QAction)).exec()


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.normcase(os.path.abspath(a)) == os.path.normcase(os.path.abspath(b))
    except (TypeError, ValueError):
        return False


class _Rule(QWidget):
    """A 1-pixel separator in the palette's Mid colour (a styled QFrame line would keep
    the colour of the theme it was created in)."""

    def __init__(self):
        super().__init__()
        self.setObjectName("panelSeparator")
        self.setFixedHeight(1)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def paintEvent(self, ev) -> None:
        from PySide6.QtGui import QPainter
        p = QPainter(self)
        p.fillRect(self.rect(), self.palette().color(QPalette.ColorRole.Mid))
        p.end()
