"""Settings files that are not what they should be: binary garbage, a folder in the way of
the file. Each is said once to the user, in the notice the app already shows."""

from __future__ import annotations

import random

import pytest

from mnist_desktop.ui.settings import AppSettings, LoadedSettings, SettingsStore
from test_ui_helpers import make_window, settings_store, user_data  # noqa: F401  (fixtures)

pytestmark = pytest.mark.gui  # needs Qt (QSettings)

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4


@pytest.mark.parametrize("garbage", [random.Random(7).randbytes(4096), PNG, "x\u00e9=1\n".encode("latin-1"),
                                     b"just some words\nand more\n", b"[Other]\nfoo=bar\n"],
                         ids=["random bytes", "png", "latin-1", "plain text", "no known key"])
def test_a_file_that_is_not_ini_text_resets_with_the_notice(garbage, tmp_path, qapp):
    path = tmp_path / "s.ini"
    path.write_bytes(garbage)
    loaded = SettingsStore(path).load()
    assert loaded.settings == AppSettings()
    assert "reset to defaults" in loaded.notice
    assert (tmp_path / "s.ini.corrupt").read_bytes() == garbage     # kept, never silently overwritten
    again = SettingsStore(path).load()
    assert again.notice is None and again.settings == AppSettings()


def test_files_qt_writes_and_hand_edits_are_not_garbage(tmp_path, qapp):
    path = tmp_path / "s.ini"
    store = SettingsStore(path)
    s = AppSettings(device="cpu", model_path="/m/ü x.safetensors", last_dir="C:\\pics", window_geometry=b"\0\n\xff=")
    assert store.save(s) is None
    assert SettingsStore(path).load() == LoadedSettings(s, None)
    path.write_text("\ufeff; my settings\n[General]\n\ntheme = dark\n# the end\n", encoding="utf-8")
    loaded = SettingsStore(path).load()
    assert loaded.notice is None and loaded.settings.theme == "dark"


def test_a_folder_in_place_of_the_file_is_said_once(tmp_path, qapp):
    path = tmp_path / "s.ini"
    store = SettingsStore(path)
    assert store.load().notice is None
    path.mkdir()                                        # the file cannot be written any more
    first = store.save(AppSettings(theme="dark"))
    assert "could not be saved" in first and "folder" in first and str(path) in first
    assert store.save(AppSettings(theme="light")) is None   # not again at every change
    path.rmdir()
    assert store.save(AppSettings(theme="dark")) is None    # works again...
    path.unlink()
    path.mkdir()
    assert "could not be saved" in store.save(AppSettings())  # ...so a new failure is said again


def test_a_folder_there_at_start_is_said_once_at_load(tmp_path, qapp):
    path = tmp_path / "s.ini"
    path.mkdir()
    store = SettingsStore(path)
    loaded = store.load()
    assert loaded.settings == AppSettings() and "cannot be read" in loaded.notice
    assert "will not be kept" in loaded.notice
    assert store.save(AppSettings(theme="dark")) is None     # already said


def test_the_window_shows_a_failed_save_once(make_window, settings_store, qtbot):
    w = make_window(start=False)
    assert not w.banner.isVisible()
    settings_store.path.unlink(missing_ok=True)
    settings_store.path.mkdir()
    shown = []
    w.banner.messageShown.connect(lambda level, text: shown.append((level, text)))
    w.width_slider.setValue(30)
    w.width_slider.setValue(31)
    assert len(shown) == 1 and shown[0][0] == "warning" and "could not be saved" in shown[0][1]
    assert w.banner.isVisible() and "could not be saved" in w.banner.text


def test_the_window_shows_the_garbage_notice(make_window, settings_store):
    settings_store.path.write_bytes(random.Random(3).randbytes(2000))
    w = make_window(start=False)
    assert w.banner.isVisible() and "reset to defaults" in w.banner.text
    assert w.settings == AppSettings(window_geometry=w.settings.window_geometry)
