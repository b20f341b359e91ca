"""Training package: recipes, data, augmentation, the resumable training loop, evaluation,
plots and the ``python -m training`` command. Qt-free.

Public API (import from the submodules; importing this package is cheap and torch-free):

* :class:`training.config.TrainConfig`, :class:`training.config.AugmentConfig`
* :data:`training.recipes.RECIPES`, :func:`training.recipes.recipe_config`
* :func:`training.engine.train` - generator of :mod:`training.events` (JSON-lines protocol)
* :mod:`training.data` (data specifications, loaders, validation split),
  :mod:`mnist_desktop.core.corrections` (the corrections folder format, reader and writer)
* ``python -m training`` (:mod:`training.cli`), ``python -m training.bench``
"""
