"""mnist-desktop: a desktop app that recognizes handwritten digits."""

__version__ = "0.1.0"
