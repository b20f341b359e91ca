"""The main window driven as a user would: draw, drop, paste, switch, look."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QGuiApplication, QImage, QKeySequence, QPalette
from PySide6.QtWidgets import QApplication, QComboBox, QLabel, QSlider, QTableWidget, QToolButton

from mnist_desktop.ui.images import ImageSource
from test_ui_helpers import (DIGITS, MNIST_DIR, RESULT_TIMEOUT_MS, densify, digit_image, draw_digit,
                             draw_stroke, mouse)

from test_ui_helpers import make_window, settings_store, shared_worker, user_data  # noqa: F401  (fixtures)

pytestmark = pytest.mark.gui


def settle(qtbot, window, action, timeout=RESULT_TIMEOUT_MS):
    """Run ``action`` and wait until the prediction for its final input is shown."""
    with qtbot.waitSignal(window.live.settled, timeout=timeout) as blocker:
        action()
    return blocker.args[0]


def drop(window, paths=(), image=None):
    mime = QMimeData()
    if paths:
        mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    if image is not None:
        mime.setImageData(image)
    center = window.canvas.mapTo(window, window.canvas.rect().center())
    # As a real drag: the window must accept the drag entering before it gets the drop.
    enter = QDragEnterEvent(center, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(window, enter)
    assert enter.isAccepted()
    ev = QDropEvent(QPointF(center), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                    Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(window, ev)
    return ev


# --------------------------------------------------------------------------- drawing

@pytest.mark.parametrize("digit", list(DIGITS))
def test_drawn_digit_is_recognised(make_window, shared_worker, qtbot, digit):
    w = make_window(worker=shared_worker)
    prediction = settle(qtbot, w, lambda: draw_digit(w.canvas, digit))
    assert prediction.label == digit
    # What the user sees agrees: big label, highlighted bar, the model's 28x28 input.
    assert w.display.label.text() == digit
    assert w.chart.highlighted_label == digit
    assert sum(w.chart.probabilities) == pytest.approx(1.0, abs=1e-3)
    assert w.preview.image is not None and w.preview.image.size().width() == 28
    assert "%" in w.display.confidence.text()


def test_prediction_updates_while_the_stroke_is_drawn(make_window, shared_worker, qtbot):
    w = make_window(worker=shared_worker)
    pts = densify(DIGITS["1"][0])
    mouse(w.canvas, QEvent.Type.MouseButtonPress, *pts[0], button=Qt.MouseButton.LeftButton)
    with qtbot.waitSignal(w.live.predictionChanged, timeout=RESULT_TIMEOUT_MS,
                          check_params_cb=lambda p: p is not None):
        for x, y in pts[1:]:
            mouse(w.canvas, QEvent.Type.MouseMove, x, y)
    # The button is still down and a prediction is already on screen.
    assert w.canvas._gesture is not None
    assert w.display.prediction is not None and w.chart.probabilities is not None
    mouse(w.canvas, QEvent.Type.MouseButtonRelease, *pts[-1], buttons=Qt.MouseButton.NoButton,
          button=Qt.MouseButton.LeftButton)


def test_blank_canvas_shows_no_prediction(make_window, shared_worker, qtbot):
    w = make_window(worker=shared_worker)
    assert w.display.prediction is None and w.chart.probabilities is None and w.preview.image is None
    settle(qtbot, w, lambda: draw_digit(w.canvas, "7"))
    assert w.display.prediction is not None
    w.act_clear.trigger()
    assert w.display.prediction is None and w.chart.probabilities is None and w.preview.image is None
    assert w.display.label.text() == "" and w.display.confidence.text() == "Draw a digit"
    # A late answer for the cleared drawing must not bring the prediction back.
    draw_stroke(w.canvas, DIGITS["1"][0])
    in_flight = shared_worker._in_flight  # the stroke's first snapshot, sent at once
    assert in_flight is not None
    with qtbot.waitSignal(shared_worker.requestDropped, timeout=RESULT_TIMEOUT_MS,
                          check_params_cb=lambda rid: rid == in_flight):
        w.act_clear.trigger()
    assert w.display.prediction is None and w.chart.probabilities is None


def test_keyboard_undo_redo_clear(make_window, shared_worker, qtbot):
    w = make_window(worker=shared_worker)
    w.activateWindow()
    w.canvas.setFocus()
    settle(qtbot, w, lambda: draw_digit(w.canvas, "4"))
    assert len(w.canvas.strokes) == 2
    assert w.act_undo.text().startswith("&Undo") and "Draw stroke" in w.act_undo.text()
    settle(qtbot, w, lambda: qtbot.keyClick(w.canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier))
    assert len(w.canvas.strokes) == 1
    settle(qtbot, w, lambda: qtbot.keyClick(
        w.canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier))
    assert len(w.canvas.strokes) == 2 and w.display.prediction.label == "4"
    qtbot.keyClick(w.canvas, Qt.Key.Key_Escape)
    assert w.canvas.state.is_blank and w.display.prediction is None
    qtbot.keyClick(w.canvas, Qt.Key.Key_E)
    assert w.canvas.tool == "eraser" and w.act_eraser.isChecked()
    qtbot.keyClick(w.canvas, Qt.Key.Key_BracketRight)
    assert w.canvas.pen_width == 16 and w.width_slider.value() == 16
    assert w.settings.pen_width == 16


# --------------------------------------------------------------------------- images

def test_drop_a_file(make_window, shared_worker, qtbot, tmp_path):
    path = tmp_path / "seven.png"
    digit_image("7").save(path)
    w = make_window(worker=shared_worker)
    prediction = settle(qtbot, w, lambda: drop(w, [path]))
    assert prediction.label == "7"
    source = w.canvas.state.image
    assert source.name == "seven.png" and source.display is not None  # the canvas shows it


def test_drop_several_files_and_step_through(make_window, shared_worker, qtbot, tmp_path):
    paths = []
    for d in ("1", "7"):
        paths.append(tmp_path / f"{d}.png")
        digit_image(d).save(paths[-1])
    w = make_window(worker=shared_worker)
    assert settle(qtbot, w, lambda: drop(w, paths)).label == "1"
    assert w.image_position.text().strip() == "1 / 2" and w.act_next.isEnabled()
    assert settle(qtbot, w, w.act_next.trigger).label == "7"
    assert w.image_position.text().strip() == "2 / 2"


@pytest.mark.skipif(not MNIST_DIR.exists(), reason="../shared/data/mnist is not present")
def test_phone_photo_of_a_digit_on_paper(make_window, shared_worker, qtbot, tmp_path):
    """A large, tilted-light JPEG of dark ink on grey paper, stored rotated with an EXIF
    orientation tag, like a phone photo."""
    from PIL import Image

    with gzip.open(MNIST_DIR / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(MNIST_DIR / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    digit = images[0]
    ink = np.asarray(Image.fromarray(digit).resize((700, 700), Image.BILINEAR), np.float32) / 255
    h, w_ = 1200, 1600
    yy, xx = np.mgrid[0:h, 0:w_]
    paper = 0.55 + 0.3 * xx / w_ + 0.05 * np.sin(yy / 90)  # uneven light across the sheet
    page = paper.copy()
    page[250:950, 450:1150] *= 1 - 0.85 * ink
    rng = np.random.default_rng(0)
    page = np.clip(page + rng.normal(0, 0.02, page.shape), 0, 1)
    rgb = (np.stack([page * 0.98, page * 0.95, page * 0.9], -1) * 255).astype(np.uint8)
    photo = Image.fromarray(rgb).rotate(90, expand=True)  # sensor orientation
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": undoes the 90 CCW turn above
    path = tmp_path / "IMG_0001.jpg"
    photo.save(path, quality=88, exif=exif)
    win = make_window(worker=shared_worker)
    prediction = settle(qtbot, win, lambda: win.open_files([path]))
    assert prediction.label == str(labels[0])
    display = win.canvas.state.image.display
    assert display.width() > display.height()  # shown upright, as the EXIF tag says


def test_paste_an_image(make_window, shared_worker, qtbot):
    img = digit_image("1", 200).convert("RGBA")
    data = img.tobytes()
    qimage = QImage(data, img.width, img.height, 4 * img.width, QImage.Format.Format_RGBA8888).copy()
    QGuiApplication.clipboard().setImage(qimage)
    w = make_window(worker=shared_worker)
    prediction = settle(qtbot, w, w.act_paste.trigger)
    assert prediction.label == "1"
    assert w.canvas.state.image.name == "Pasted image"


def test_paste_without_an_image_says_so(make_window, shared_worker, qtbot):
    QGuiApplication.clipboard().setText("just some words")
    w = make_window(worker=shared_worker)
    w.act_paste.trigger()
    assert w.banner.isVisible() and "no image" in w.banner.text


def test_corrupt_file_shows_a_message_and_the_app_keeps_working(make_window, shared_worker, qtbot, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 50)
    w = make_window(worker=shared_worker)
    with qtbot.waitSignal(w.banner.messageShown, timeout=RESULT_TIMEOUT_MS) as blocker:
        drop(w, [bad])
    level, text = blocker.args
    assert level == "error" and "broken.png" in text
    assert w.banner.isVisible() and not w.isModal() and QApplication.activeModalWidget() is None
    assert w.display.prediction is None and w.live.state == "error"
    # Missing files and folders are reported without reaching the worker.
    w.open_files([tmp_path / "missing.png", tmp_path])
    assert "missing.png: file not found" in w.banner.text and "folder" in w.banner.text
    # Still alive: drawing predicts again.
    assert settle(qtbot, w, lambda: draw_digit(w.canvas, "1")).label == "1"


# --------------------------------------------------------------------------- settings

def test_settings_persist_across_windows(make_window, shared_worker, settings_store, qtbot):
    w = make_window(worker=shared_worker)
    w.canvas.set_pen_width(30)
    w.set_theme("dark")
    w.close()
    s = settings_store.load().settings
    assert s.pen_width == 30 and s.theme == "dark" and s.window_geometry
    w2 = make_window(worker=shared_worker)
    assert w2.canvas.pen_width == 30 and w2.width_slider.value() == 30
    assert w2.theme_actions["dark"].isChecked()


def test_corrupt_settings_file_shows_notice(make_window, shared_worker, settings_store):
    settings_store.path.write_bytes(b"[General\n\x00\xff==\n")
    w = make_window(worker=shared_worker)
    assert w.banner.isVisible() and "reset to defaults" in w.banner.text
    assert w.settings.device == "auto"


def test_theme_follows_choice_and_widgets_repaint(make_window, shared_worker, qtbot):
    w = make_window(worker=shared_worker)
    w.set_theme("dark")
    assert QApplication.palette().color(QPalette.ColorRole.Window).lightness() < 80
    # Widgets pick the new palette up from the event loop.
    qtbot.waitUntil(lambda: w.canvas.palette().color(QPalette.ColorRole.Base).lightness() < 80)
    assert w.chart.palette().color(QPalette.ColorRole.WindowText).lightness() > 200
    w.set_theme("light")
    qtbot.waitUntil(lambda: w.canvas.palette().color(QPalette.ColorRole.Base).lightness() > 200)


def test_user_models_are_listed_and_a_bad_model_keeps_the_current_one(
        make_window, shared_worker, qtbot, user_data):
    from mnist_desktop.core.paths import default_model_path
    models = user_data / "models"
    models.mkdir(parents=True)
    shutil.copy(default_model_path(), models / "my-digits.safetensors")
    bad = models / "broken.safetensors"
    bad.write_bytes(b"not a model")
    w = make_window(worker=shared_worker)
    names = [w.model_combo.itemText(i) for i in range(w.model_combo.count())]
    assert "Bundled model" in names and "my-digits" in names and "Other file…" in names
    with qtbot.waitSignal(w.banner.messageShown, timeout=RESULT_TIMEOUT_MS) as blocker:
        w.select_model(bad)
    assert blocker.args[0] == "error" and "broken.safetensors" in blocker.args[1]
    assert "Still using" in blocker.args[1]
    assert w.settings.model_path == ""  # reverted to the model that is still active
    with qtbot.waitSignal(shared_worker.modelLoaded, timeout=RESULT_TIMEOUT_MS) as blocker:
        w.select_model(models / "my-digits.safetensors")
    assert blocker.args[0].path.endswith("my-digits.safetensors")
    assert w.model_combo.currentText() == "my-digits"
    assert settle(qtbot, w, lambda: draw_digit(w.canvas, "7")).label == "7"
    with qtbot.waitSignal(shared_worker.modelLoaded, timeout=RESULT_TIMEOUT_MS):
        w.select_model(None)  # back to the bundled model for the other tests


# --------------------------------------------------------------------------- accessibility

def test_named_accessible_controls_with_tooltips_and_shortcuts(make_window, shared_worker):
    w = make_window(worker=shared_worker)
    for widget in (w.canvas, w.chart, w.display.label, w.preview, w.model_combo, w.device_combo,
                   w.width_slider, w.banner):
        assert widget.objectName() and widget.accessibleName(), widget
    for widget in (w.canvas, w.chart, w.display.label, w.preview, w.model_combo, w.device_combo,
                   w.width_slider):
        assert widget.toolTip(), widget.objectName()
    buttons = [b for b in w.toolbar.findChildren(QToolButton) if b.defaultAction() is not None]
    assert len(buttons) >= 7
    for b in buttons:
        assert b.objectName().startswith("toolButton_") and b.accessibleName() and b.toolTip()
    for name in ("open", "paste", "undo", "redo", "clear", "pen", "eraser", "quit"):
        action = getattr(w, f"act_{name}")
        assert not action.shortcut().isEmpty(), name
        assert action.shortcut().toString() in action.toolTip() or \
            action.shortcut().toString(QKeySequence.SequenceFormat.NativeText) in action.toolTip()
    assert QKeySequence("Esc") in w.act_clear.shortcuts() and QKeySequence("Del") in w.act_clear.shortcuts()
    assert QKeySequence("Ctrl+Shift+Z") in w.act_redo.shortcuts()
    # Every menu entry is reachable from the menu bar (where shortcuts are displayed).
    menu_actions = [a for m in w.menuBar().actions() for a in m.menu().actions()]
    for a in (w.act_open, w.act_paste, w.act_undo, w.act_redo, w.act_clear, w.act_batch):
        assert a in menu_actions
    assert {c.objectName() for c in w.findChildren(QComboBox)} >= {"modelCombo", "deviceCombo"}
    assert w.findChild(QSlider, "penWidthSlider") is w.width_slider


def test_batch_action_opens_the_batch_window_or_says_it_is_missing(make_window, shared_worker):
    w = make_window(worker=shared_worker)
    w.act_batch.trigger()
    if w._batch_window is None:
        assert w.banner.isVisible() and "Batch classification" in w.banner.text
    else:
        assert w._batch_window.isVisible()
        w._batch_window.close()


def test_system_theme_follows_the_platform_scheme(make_window, shared_worker, qtbot, monkeypatch):
    import mnist_desktop.ui.theme as theme
    w = make_window(worker=shared_worker)
    w.set_theme("system")
    # The offscreen platform cannot switch schemes: stand in for the desktop's answer and
    # deliver the change as QStyleHints.colorSchemeChanged would.
    monkeypatch.setattr(theme, "system_prefers_dark", lambda app: True)
    w._on_system_scheme(Qt.ColorScheme.Dark)
    assert QApplication.palette().color(QPalette.ColorRole.Window).lightness() < 80
    monkeypatch.setattr(theme, "system_prefers_dark", lambda app: False)
    w._on_system_scheme(Qt.ColorScheme.Light)
    assert QApplication.palette().color(QPalette.ColorRole.Window).lightness() > 200
    # An explicit choice is not overridden by the system.
    w.set_theme("light")
    monkeypatch.setattr(theme, "system_prefers_dark", lambda app: True)
    w._on_system_scheme(Qt.ColorScheme.Dark)
    assert QApplication.palette().color(QPalette.ColorRole.Window).lightness() > 200
    assert w.settings.theme == "light"


def test_batch_classify_opens_from_the_main_window_with_its_model(make_window, shared_worker, qtbot, tmp_path):
    """File > Batch Classify opens the batch window with the main window's model and device,
    and that window classifies a folder."""
    from PIL import Image, ImageDraw

    w = make_window(worker=shared_worker)
    w.act_batch.trigger()
    batch = w._batch_window
    assert batch is not None and batch.isVisible()
    assert str(batch._model_source) == str(w.model_path()) and batch._device == w.settings.device
    folder = tmp_path / "scans"
    folder.mkdir()
    img = Image.new("L", (60, 60), 255)
    ImageDraw.Draw(img).line([(30, 8), (30, 52)], fill=0, width=5)
    img.save(folder / "one.png")
    with qtbot.waitSignal(batch.runFinished, timeout=60_000):
        assert batch.classify([str(folder)])
    assert batch.store is not None and len(batch.store) == 1
    assert batch.store.labels[int(batch.store.predicted[0])] == "1"
    batch.close()


# --------------------------------------------------------------------------- fixes (issue 16)

def test_a_notice_goes_away_when_the_next_action_succeeds(make_window, shared_worker, qtbot, tmp_path):
    QGuiApplication.clipboard().setText("just some words")
    w = make_window(worker=shared_worker)
    w.act_paste.trigger()
    assert w.banner.isVisible() and "no image" in w.banner.text
    path = tmp_path / "seven.png"
    digit_image("7").save(path)
    assert settle(qtbot, w, lambda: drop(w, [path])).label == "7"
    assert not w.banner.isVisible()
    # an error about a file stays until something else works, then goes too
    w.open_files([tmp_path / "missing.png"])
    assert w.banner.isVisible() and "missing.png" in w.banner.text
    assert settle(qtbot, w, lambda: draw_digit(w.canvas, "1")).label == "1"
    assert not w.banner.isVisible()


def test_sixteen_bit_png_is_shown_not_blank(make_window, shared_worker, qtbot, tmp_path):
    from PIL import Image

    gray = np.asarray(digit_image("7"), np.uint16) * 257          # full 16-bit range
    path = tmp_path / "seven16.png"
    Image.fromarray(gray).save(path)
    assert Image.open(path).mode.startswith("I")
    w = make_window(worker=shared_worker)
    assert settle(qtbot, w, lambda: w.open_files([path])).label == "7"
    display = w.canvas.state.image.display
    assert display is not None
    px = np.array([display.pixelColor(x, y).value() for y in range(0, display.height(), 3)
                   for x in range(0, display.width(), 3)])
    assert px.max() - px.min() > 150                                 # ink and paper both there


def test_long_uncertainty_text_wraps_instead_of_being_cut(make_window, shared_worker):
    w = make_window(worker=shared_worker)
    status = w.display.status
    one_line = status.heightForWidth(200)
    status.setText("Not sure: this looks like neither a clean digit nor anything the model was trained on, "
                   "try drawing it larger and centred")
    assert status.hasHeightForWidth() and status.heightForWidth(200) > 2 * one_line
    assert status.heightForWidth(4000) < status.heightForWidth(200)


def test_device_box_shows_cpu_after_a_cuda_fallback(make_window, shared_worker, monkeypatch):
    import dataclasses

    from mnist_desktop.ui.inference_messages import ModelInfo

    w = make_window(worker=shared_worker)
    monkeypatch.setattr(w.settings, "device", "cuda")
    info = ModelInfo(path="m", name="m", arch="a", labels=list("0123456789"), device="cpu",
                     requested_device="cuda", device_message="CUDA is not available; running on the CPU")
    current = [info]
    monkeypatch.setattr(type(shared_worker), "model_info", property(lambda self: current[0]))
    w._on_model_loaded(info)
    assert w.device_combo.currentData() == "cpu" and w.device_actions["cpu"].isChecked()
    assert w.banner.isVisible() and "CPU" in w.banner.text
    assert w.settings.device == "cuda"                   # the choice stays for the next start
    current[0] = dataclasses.replace(info, device="cuda", device_message=None)
    w._sync_controls()
    assert w.device_combo.currentData() == "cuda"


def test_about_dialog_names_model_versions_and_shortcuts(make_window, shared_worker, qtbot, monkeypatch):
    from mnist_desktop.ui.about import AboutDialog

    w = make_window(worker=shared_worker)
    shown = []
    monkeypatch.setattr(AboutDialog, "exec", lambda self: shown.append(self) or 0)
    w._about()
    (dialog,) = shown
    text = dialog.findChild(QLabel, "aboutText").text()
    assert "MNIST Desktop" in text and "CC BY-SA 3.0" in text and "PySide6" in text
    info = shared_worker.model_info
    if info is not None:
        assert info.name in text
    table = dialog.findChild(QTableWidget, "shortcutTable")
    rows = {table.item(r, 0).text(): table.item(r, 1).text() for r in range(table.rowCount())}
    assert any("Paste" in k for k in rows) and all(rows.values())
    assert "Python" in dialog.details()
