"""mnist-desktop: a desktop app that recognizes handwritten digits."""

import os as _os

__version__ = "0.1.0"

# ONNX Runtime's Linux and macOS wheels (1.32+) start a telemetry uploader on import: a
# device identifier and an event database under ~/.cache/Microsoft, a session file in
# TMPDIR. An offline desktop app sends nothing and leaves no such files; the opt-out must
# be in the environment before onnxruntime loads (worker processes inherit it).
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
