"""Typed settings bound to an INI file under tmp_path (never the real profile)."""

from __future__ import annotations

import pytest

from mnist_desktop.ui.settings import AppSettings, SettingsStore

pytestmark = pytest.mark.gui  # needs Qt (QSettings), though no window


def test_round_trip(tmp_path, qapp):
    store = SettingsStore(tmp_path / "s.ini")
    s = AppSettings(device="cuda", model_path="/m/x.safetensors", pen_width=22.0, theme="dark",
                    last_dir="/pics", window_geometry=b"\x01\x02\xff")
    store.save(s)
    loaded = SettingsStore(tmp_path / "s.ini").load()
    assert loaded.notice is None
    assert loaded.settings == s


def test_missing_file_gives_defaults_silently(tmp_path, qapp):
    loaded = SettingsStore(tmp_path / "none.ini").load()
    assert loaded.settings == AppSettings() and loaded.notice is None


def test_corrupt_file_resets_to_defaults_with_notice(tmp_path, qapp):
    path = tmp_path / "s.ini"
    path.write_bytes(b"\x00\xff\xfe garbage \x80\x81\n[General\npen_width")
    loaded = SettingsStore(path).load()
    assert loaded.settings == AppSettings()
    assert "reset to defaults" in loaded.notice
    assert (tmp_path / "s.ini.corrupt").exists()  # kept for the curious
    # The fresh file is valid again.
    again = SettingsStore(path).load()
    assert again.notice is None and again.settings == AppSettings()


def test_invalid_values_fall_back_per_field(tmp_path, qapp):
    path = tmp_path / "s.ini"
    path.write_text("[General]\ndevice=tpu\npen_width=abc\ntheme=dark\n")
    loaded = SettingsStore(path).load()
    assert loaded.settings.device == "auto"
    assert loaded.settings.pen_width == AppSettings().pen_width
    assert loaded.settings.theme == "dark"  # valid values survive
    assert "device" in loaded.notice and "pen width" in loaded.notice
