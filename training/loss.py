"""The terms of the training loss beyond cross-entropy: distillation from teacher networks
and outlier exposure, and loading the teachers a run distills from."""

from __future__ import annotations

from training.config import TrainConfig
from training.failures import TrainingError


def distillation_loss(x, logits, teachers: list, temperature: float):
    """Hinton et al. (2015): KL divergence of ``logits`` to the teachers' mean softened
    prediction on the same input ``x``, scaled by T^2 so its gradients match the hard loss."""
    import torch
    import torch.nn.functional as F

    t = temperature
    with torch.no_grad():
        target = torch.stack([torch.softmax(m(x) / t, dim=1) for m in teachers]).mean(0)
    log_p = F.log_softmax(logits / t, dim=1)
    return F.kl_div(log_p, target, reduction="batchmean") * (t * t)


def outlier_exposure_loss(logits):
    """Hendrycks et al. (2019): cross-entropy of the predictions on non-digits to the uniform
    distribution, so the network learns to be unsure of what is no digit."""
    import torch.nn.functional as F

    return (-F.log_softmax(logits, dim=1).mean(1)).mean()


def load_teachers(cfg: TrainConfig, device) -> list:
    """The teacher networks of ``cfg`` in eval mode on ``device``.

    Raises
    ------
    TrainingError
        One line when a file cannot be loaded or does not fit the run (labels, input).
    """
    from mnist_desktop.core.checkpoint import CheckpointError, load_model

    teachers = []
    for path in cfg.teachers:
        try:
            loaded = load_model(path)
        except CheckpointError as e:
            raise TrainingError("config", f"teacher model: {e}") from None
        norm = loaded.meta.normalization
        if (norm.mean, norm.std) != (cfg.mean, cfg.std):
            raise TrainingError("config", f"teacher {path} normalizes with mean/std {norm.mean}/{norm.std}, "
                                f"the run with {cfg.mean}/{cfg.std}")
        if cfg.labels and loaded.meta.labels != list(cfg.labels):
            raise TrainingError("config", f"teacher {path} has other class labels than the run")
        from mnist_desktop.core.models import fuse_for_inference

        model = fuse_for_inference(loaded.model.to(device).eval())
        for p in model.parameters():
            p.requires_grad_(False)
        teachers.append(model)
    return teachers
