"""Qt-free core: preprocessing, model zoo, checkpoints, prediction, metrics.

Nothing under this package may import Qt (enforced by ``tests/test_architecture.py``).
Torch is imported lazily by the modules that need it so the GUI can open its first
window before paying for ``import torch``.
"""
