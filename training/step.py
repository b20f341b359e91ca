"""One optimization step on a batch, shared by the training loop and ``python -m
training.bench`` so the benchmark times exactly what training runs."""

from __future__ import annotations

from training.config import TrainConfig
from training.loss import distillation_loss, load_teachers, outlier_exposure_loss


class StepFunction:
    """One optimization step on a batch: augment, normalize, forward, loss, backward, update.

    Parameters
    ----------
    cfg
        The run's configuration (augmentation, normalization, loss weights, teachers).
    model, optimizer
        The network being trained and its optimizer.
    scheduler, per_step_scheduler
        The learning-rate schedule; stepped here only when it steps after every batch.
    aug_generator
        The random generator of augmentation and outlier picks; no augmentation without one.
    label_names
        The run's class labels (default ``cfg.labels`` or the ten digits).
    """

    def __init__(self, cfg: TrainConfig, model, optimizer, scheduler=None, per_step_scheduler: bool = False,
                 aug_generator=None, label_names=None):
        self.cfg = cfg
        self.model, self.optimizer = model, optimizer
        self.scheduler = scheduler if per_step_scheduler else None
        self.gen = aug_generator
        self.augment = cfg.augment if cfg.augment.enabled and aug_generator is not None else None
        names = list(label_names or cfg.labels or [str(i) for i in range(10)])
        # Class indices of "1" and "7" for the European-handwriting strokes (-1 = absent).
        self.style_classes = tuple(names.index(c) if c in names else -1 for c in ("1", "7"))
        self.teachers = load_teachers(cfg, next(model.parameters()).device) \
            if cfg.teachers and cfg.distill_weight > 0 else []
        self.outliers = None  # (M, 1, H, W) [0, 1] non-digits on the device (outlier exposure)

    def __call__(self, images, labels):
        """``images`` ``(B, 28, 28)`` uint8 or [0, 1] float on the device; returns the
        detached loss and the count of correct predictions (tensors, no device sync).

        With :attr:`outliers` set (outlier exposure, Hendrycks et al. 2019), as many
        generated non-digits join the batch, augmented the same way, and ``outlier_weight``
        x their cross-entropy to the uniform distribution is added to the loss; the teachers
        and the accuracy see the digits only."""
        x = self.inputs(images, labels)
        out = self.model(x)
        loss = self.loss(x, out, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        logits = out[:len(labels)]
        return loss.detach(), (logits.detach().argmax(1) == labels).sum()

    def inputs(self, images, labels):
        """The network's input ``(B [+ B outliers], 1, 28, 28)``: augmented, normalized."""
        import torch

        from training.augment import augment_batch

        x = images.float()
        if not images.dtype.is_floating_point:
            x = x / 255.0
        x = x.unsqueeze(1)
        if self.augment is not None:
            x = augment_batch(x, self.augment, self.gen, labels, self.style_classes)
        if self.outliers is not None:
            pick = torch.randint(0, len(self.outliers), (len(x),), generator=self.gen, device=x.device)
            xo = self.outliers[pick]
            if self.augment is not None:
                xo = augment_batch(xo, self.augment, self.gen)
            x = torch.cat([x, xo])
        return (x - self.cfg.mean) / self.cfg.std

    def loss(self, x, out, labels):
        """The loss of the network's output ``out`` on input ``x``: cross-entropy on the
        digits, blended with distillation, plus outlier exposure on the non-digits."""
        import torch.nn.functional as F

        cfg, n = self.cfg, len(labels)
        logits = out[:n]
        loss = F.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing)
        if self.teachers:
            loss = (1 - cfg.distill_weight) * loss + cfg.distill_weight * distillation_loss(
                x[:n], logits, self.teachers, cfg.distill_temperature)
        if self.outliers is not None:
            loss = loss + cfg.outlier_weight * outlier_exposure_loss(out[n:])
        return loss
