"""The training package's public entry: :func:`train` and what callers build around it.

The pieces live in modules named for what they hold:

* :mod:`training.run` - :func:`train`, the generator of a whole run, and its phases;
* :mod:`training.loop` - one epoch: the steps, then validation, best model and state;
* :mod:`training.step` - :class:`StepFunction`, one optimization step on a batch;
* :mod:`training.loss` - distillation and outlier-exposure losses, teacher loading;
* :mod:`training.optim` - optimizer, learning-rate schedule, steps per epoch;
* :mod:`training.session` - the model, data and generators a run trains;
* :mod:`training.state` - the run folder and the resumable ``state.pt``;
* :mod:`training.report` - validation metrics, best model, report and exports;
* :mod:`training.failures` - :class:`TrainingError` and the ``Failed`` events.
"""

from training.failures import TrainingError
from training.loss import load_teachers
from training.optim import make_optimizer, make_scheduler, steps_per_epoch
from training.run import train
from training.state import read_config
from training.step import StepFunction

__all__ = ["StepFunction", "TrainingError", "load_teachers", "make_optimizer", "make_scheduler", "read_config",
           "steps_per_epoch", "train"]
