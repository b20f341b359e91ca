"""Light and dark palettes for the Fusion style, following the system's colour scheme.

``system`` asks Qt for the platform's scheme (``QStyleHints.colorScheme``) and falls back
to the lightness of the platform palette; the app re-applies the theme when the system
scheme changes. Custom widgets paint with palette roles only, so they follow along.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette

ACCENT_LIGHT = QColor("#2f6fdb")
ACCENT_DARK = QColor("#4f8ff0")


def system_prefers_dark(app: QGuiApplication) -> bool:
    """True when the platform asks for a dark appearance."""
    scheme = app.styleHints().colorScheme()
    if scheme == Qt.ColorScheme.Dark:
        return True
    if scheme == Qt.ColorScheme.Light:
        return False
    # Unknown (e.g. offscreen, older desktops): judge the platform's own palette.
    base = app.style().standardPalette() if hasattr(app, "style") else QPalette()
    return base.color(QPalette.ColorRole.Window).lightness() < 110


def resolve_theme(app: QGuiApplication, theme: str) -> str:
    """``system``/``light``/``dark`` -> ``light`` or ``dark``."""
    if theme == "system":
        return "dark" if system_prefers_dark(app) else "light"
    return "dark" if theme == "dark" else "light"


def light_palette() -> QPalette:
    """The light theme for the Fusion style."""
    return _palette({
        QPalette.ColorRole.Window: "#f3f4f6",
        QPalette.ColorRole.WindowText: "#1d1f23",
        QPalette.ColorRole.Base: "#ffffff",
        QPalette.ColorRole.AlternateBase: "#f0f1f4",
        QPalette.ColorRole.ToolTipBase: "#ffffff",
        QPalette.ColorRole.ToolTipText: "#1d1f23",
        QPalette.ColorRole.PlaceholderText: "#7b808a",
        QPalette.ColorRole.Text: "#15171a",
        QPalette.ColorRole.Button: "#fbfbfc",
        QPalette.ColorRole.ButtonText: "#1d1f23",
        QPalette.ColorRole.BrightText: "#ffffff",
        QPalette.ColorRole.Light: "#ffffff",
        QPalette.ColorRole.Midlight: "#e4e6ea",
        QPalette.ColorRole.Mid: "#c5c9d0",
        QPalette.ColorRole.Dark: "#9aa0a9",
        QPalette.ColorRole.Shadow: "#5b6068",
        QPalette.ColorRole.Highlight: ACCENT_LIGHT.name(),
        QPalette.ColorRole.HighlightedText: "#ffffff",
        QPalette.ColorRole.Link: ACCENT_LIGHT.name(),
    }, disabled="#a0a4ab")


def dark_palette() -> QPalette:
    """The dark theme for the Fusion style."""
    return _palette({
        QPalette.ColorRole.Window: "#1f2125",
        QPalette.ColorRole.WindowText: "#e6e8eb",
        QPalette.ColorRole.Base: "#2a2d32",
        QPalette.ColorRole.AlternateBase: "#30333a",
        QPalette.ColorRole.ToolTipBase: "#30333a",
        QPalette.ColorRole.ToolTipText: "#e6e8eb",
        QPalette.ColorRole.PlaceholderText: "#8d939c",
        QPalette.ColorRole.Text: "#f1f3f5",
        QPalette.ColorRole.Button: "#2c2f35",
        QPalette.ColorRole.ButtonText: "#e6e8eb",
        QPalette.ColorRole.BrightText: "#ffffff",
        QPalette.ColorRole.Light: "#3a3e45",
        QPalette.ColorRole.Midlight: "#33363c",
        QPalette.ColorRole.Mid: "#4a4f57",
        QPalette.ColorRole.Dark: "#17181b",
        QPalette.ColorRole.Shadow: "#0c0d0f",
        QPalette.ColorRole.Highlight: ACCENT_DARK.name(),
        QPalette.ColorRole.HighlightedText: "#ffffff",
        QPalette.ColorRole.Link: ACCENT_DARK.name(),
    }, disabled="#6c717a")


def _palette(roles: dict, disabled: str) -> QPalette:
    """A palette with ``roles`` set in every group and ``disabled`` as the disabled text."""
    p = QPalette()
    for role, color in roles.items():
        p.setColor(role, QColor(color))
    for role in (QPalette.ColorRole.WindowText, QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText):
        p.setColor(QPalette.ColorGroup.Disabled, role, QColor(disabled))
    return p


def apply_theme(app, theme: str) -> str:
    """Apply ``system``/``light``/``dark`` to ``app`` (Fusion style). Returns the scheme
    actually applied, ``light`` or ``dark``."""
    if app.style().name().lower() != "fusion":
        app.setStyle("Fusion")
    resolved = resolve_theme(app, theme)
    app.setPalette(dark_palette() if resolved == "dark" else light_palette())
    return resolved
