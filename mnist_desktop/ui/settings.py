"""Typed application settings persisted with QSettings (INI format).

:class:`AppSettings` is the one place that names the app's settings and their defaults;
:class:`SettingsStore` binds it to an INI file. A corrupt file (QSettings reports a format
error, or the file is not INI text at all, such as binary garbage, which QSettings reads
without complaint) is moved aside and replaced by defaults; single invalid values fall back
to their defaults. Either way :meth:`SettingsStore.load` returns a notice for the user
instead of failing, and :meth:`SettingsStore.save` returns one when the file cannot be
written (once, not at every change).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings

DEVICES = ("auto", "cpu", "cuda")
THEMES = ("system", "light", "dark")
PEN_WIDTH_RANGE = (2.0, 48.0)  # in canvas document units (the canvas is 280 units wide)
SETTINGS_VERSION = 1


@dataclass
class AppSettings:
    """Everything the app remembers between runs.

    Attributes
    ----------
    device
        ``auto``, ``cpu`` or ``cuda``.
    model_path
        A checkpoint file; empty means the bundled default model.
    pen_width
        Pen width in canvas document units (the drawing area is 280 units wide).
    theme
        ``system`` (follow the platform's light/dark scheme), ``light`` or ``dark``.
    last_dir
        Folder of the last opened image, for the next File > Open.
    window_geometry
        ``QWidget.saveGeometry()`` bytes; empty for the default size.
    show_why
        View > Show Why: the explanation (saliency map over the model input, "why not?"
        contrast and nearest training examples) is shown and computed.
    number_mode
        Read the canvas (and opened images) as a number of several digits.
    """

    device: str = "auto"
    model_path: str = ""
    pen_width: float = 14.0
    theme: str = "system"
    last_dir: str = ""
    window_geometry: bytes = b""
    show_why: bool = False
    number_mode: bool = False


@dataclass
class LoadedSettings:
    """Result of :meth:`SettingsStore.load`: the settings and an optional user notice."""

    settings: AppSettings
    notice: str | None = None


def default_settings_path() -> Path:
    """The per-user INI file Qt would use for this app (``~/.config/mnist-desktop/...``)."""
    qs = QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope,
                   "mnist-desktop", "mnist-desktop")
    return Path(qs.fileName())


class SettingsStore:
    """Reads and writes :class:`AppSettings` in one INI file.

    Parameters
    ----------
    path
        The INI file. Tests pass a file under ``tmp_path`` so the real profile is never
        touched; the app passes :func:`default_settings_path`.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._save_failed = False   # reported already: say it once, not at every change

    def _qsettings(self) -> QSettings:
        return QSettings(str(self.path), QSettings.Format.IniFormat)

    def load(self) -> LoadedSettings:
        """Read the settings; never raises for bad content.

        Returns
        -------
        LoadedSettings
            With ``notice`` set when the file was corrupt (it is kept beside the new one
            as ``<name>.corrupt``) or when some values were invalid and reset.
        """
        qs = self._qsettings()
        if qs.status() == QSettings.Status.AccessError:
            self._save_failed = True  # this notice says it: no second one at the first save
            return LoadedSettings(AppSettings(), f"The settings file {self.path} cannot be read "
                                  f"({self._access_problem()}): the defaults are used and changes "
                                  "will not be kept.")
        if qs.status() == QSettings.Status.FormatError or self._not_ini(qs):
            backup = self.path.with_name(self.path.name + ".corrupt")
            try:
                os.replace(self.path, backup)
                kept = f" (the old file was kept as {backup.name})"
            except OSError:
                kept = ""
            settings = AppSettings()
            unsaved = self.save(settings)
            return LoadedSettings(settings, f"The settings file was unreadable and has been "
                                            f"reset to defaults{kept}." + (f" {unsaved}" if unsaved else ""))
        defaults = AppSettings()
        values = {}
        invalid = []
        for f in fields(AppSettings):
            if not qs.contains(f.name):
                continue
            ok, value = _parse(f.name, qs.value(f.name), getattr(defaults, f.name))
            if ok:
                values[f.name] = value
            else:
                invalid.append(f.name.replace("_", " "))
        settings = replace(defaults, **values)
        notice = None
        if invalid:
            notice = f"Some settings were invalid and have been reset to defaults: {', '.join(invalid)}."
            unsaved = self.save(settings)
            if unsaved:
                notice += f" {unsaved}"
        return LoadedSettings(settings, notice)

    def save(self, settings: AppSettings) -> str | None:
        """Write all settings to the file (synchronously, so a crash cannot lose them).

        Returns
        -------
        str or None
            A notice for the user the first time the file cannot be written (a folder in
            its place, no permission, a full disk); None otherwise, also while it keeps
            failing. A successful save re-arms it.
        """
        qs = self._qsettings()
        qs.setValue("settings_version", SETTINGS_VERSION)
        for f in fields(AppSettings):
            value = getattr(settings, f.name)
            qs.setValue(f.name, QByteArray(value) if isinstance(value, bytes) else value)
        qs.sync()
        if qs.status() == QSettings.Status.NoError:
            self._save_failed = False
            return None
        if self._save_failed:
            return None
        self._save_failed = True
        return (f"The settings could not be saved to {self.path} ({self._access_problem()}): "
                "changes last until the app closes.")

    def _not_ini(self, qs: QSettings) -> bool:
        """Whether the file is something other than INI text, though QSettings read it.

        QSettings takes anything: binary garbage reads as a few odd keys. An INI file is
        UTF-8 text of ``[section]``, ``key=value``, comment and blank lines, and ours has
        at least one key this app knows.
        """
        try:
            data = self.path.read_bytes()
        except OSError:
            return False              # missing: defaults, silently
        if not data.strip():
            return False
        if b"\0" in data:
            return True
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            return True
        continued = False
        for line in text.splitlines():
            s = line.strip()
            if not (continued or not s or s[0] in ";#" or (s[0] == "[" and s[-1] == "]") or "=" in s):
                return True
            continued = s.endswith("\\")
        known = {f.name for f in fields(AppSettings)} | {"settings_version"}
        keys = qs.allKeys()
        return bool(keys) and not any(k in known for k in keys)

    def _access_problem(self) -> str:
        """Why the settings file cannot be read or written, in a few words."""
        import shutil

        if self.path.is_dir():
            return "a folder of that name is in the way"
        folder = next((p for p in self.path.parents if p.exists()), None)
        if self.path.exists() and not os.access(self.path, os.W_OK) or \
                folder is not None and not os.access(folder, os.W_OK):
            return "no permission to write there"
        try:
            if folder is not None and shutil.disk_usage(folder).free == 0:
                return "the disk is full"
        except OSError:
            pass
        return "the file system refused"


def _parse(name: str, raw, default):
    """Validate one stored value. Returns ``(ok, value)``."""
    if raw is None:
        return False, default
    if name == "device":
        value = str(raw).lower()
        return value in DEVICES, value
    if name == "theme":
        value = str(raw).lower()
        return value in THEMES, value
    if name == "pen_width":
        try:
            value = float(raw)
        except (TypeError, ValueError):
            return False, default
        lo, hi = PEN_WIDTH_RANGE
        return lo <= value <= hi, value
    if name == "show_why":
        if isinstance(raw, bool):
            return True, raw
        value = str(raw).strip().lower()
        return value in ("true", "false", "1", "0"), value in ("true", "1")
    if name == "window_geometry":
        if isinstance(raw, QByteArray):
            return True, bytes(raw.data())
        if isinstance(raw, (bytes, bytearray)):
            return True, bytes(raw)
        return raw == "", b""
    if isinstance(default, bool):
        # INI files store booleans as text ("true"/"false"); QSettings may hand back a bool
        if isinstance(raw, bool):
            return True, raw
        text = str(raw).strip().lower()
        return text in ("true", "false", "1", "0"), text in ("true", "1")
    if isinstance(raw, str):
        return True, raw
    return False, default
