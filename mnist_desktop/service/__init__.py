"""The service layer: what the app does, as plain Qt-free functions.

The CLI, the GUI windows and (later) the HTTP API call these instead of orchestrating the
core themselves, so each job has one code path to test:

* :mod:`~mnist_desktop.service.models` - load a model for a job, choosing backend
  (torch or ONNX Runtime), precision and device in one place, with one-line notes for
  every fallback;
* :mod:`~mnist_desktop.service.training_runs` - training runs: history, states, curves, datasets;
* :mod:`~mnist_desktop.service.classify` - the classify job: paths plus a typed
  :class:`~mnist_desktop.service.classify.ClassifyOptions` in, typed events out.

Layers (enforced by import-linter, see ``pyproject.toml``): ``mnist_desktop.ui`` ->
``mnist_desktop.service`` -> ``mnist_desktop.core``; nothing here imports Qt.
"""
