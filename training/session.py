"""What a run trains: model, optimizer, scheduler, device-resident data, random generators,
weight average, the epoch's running sums and the progress - everything ``state.pt`` stores."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.clock import Clock
from training.config import ConfigError, TrainConfig
from training.events import RunStarted
from training.optim import make_optimizer, make_scheduler, steps_per_epoch
from training.state import Progress
from training.step import StepFunction


class Session:
    """One training session of a run, built from its config and data.

    Parameters
    ----------
    cfg
        The run's configuration.
    device
        The resolved training device (``"cpu"``, ``"cuda:0"``, ...).
    run_dir
        The run folder the model files and ``state.pt`` go to.
    train_set, val_set
        The training and validation data (:mod:`training.data` datasets).
    fingerprint
        The training data's fingerprint; a resume checks it.
    outliers
        ``(M, H, W)`` [0, 1] non-digits for outlier exposure, or None.
    """

    def __init__(self, cfg: TrainConfig, device: str, run_dir: Path, train_set, val_set, fingerprint: str,
                 outliers: np.ndarray | None = None):
        import torch

        from mnist_desktop.core.models import build_model

        self.cfg, self.device, self.dir, self.fingerprint = cfg, device, run_dir, fingerprint
        self.labels = train_set.label_names
        torch.manual_seed(cfg.seed)
        try:
            self.model = build_model(cfg.arch, num_classes=len(self.labels), **cfg.arch_args).to(device)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"cannot build {cfg.arch} with {cfg.arch_args}: {str(e).splitlines()[0]}") from None
        if cfg.init_model:
            self._start_from(cfg.init_model)
        self.n_train, self.n_val = len(train_set), len(val_set)
        self.spe = steps_per_epoch(self.n_train, cfg.batch_size)
        self.total_steps = self.spe * cfg.epochs
        self.optimizer = make_optimizer(cfg, self.model.parameters())
        self.scheduler, self.per_step = make_scheduler(cfg, self.optimizer, self.total_steps)
        # Data lives on the training device for the whole run: no DataLoader, batches are
        # index gathers.
        self.x_train = torch.from_numpy(np.ascontiguousarray(train_set.images)).to(device)
        self.y_train = torch.from_numpy(train_set.labels).to(device)
        self.x_val = torch.from_numpy(np.ascontiguousarray(val_set.images)).to(device)
        self.y_val = torch.from_numpy(val_set.labels).to(device)
        self.gen_shuffle = torch.Generator().manual_seed(cfg.seed)
        self.gen_aug = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        self.step_fn = StepFunction(cfg, self.model, self.optimizer, self.scheduler, self.per_step, self.gen_aug,
                                    self.labels)
        # Exponential moving average of the weights and batch-norm statistics (Polyak
        # averaging): when on, it is the model that is validated and saved.
        self.ema = None
        if cfg.ema_decay > 0:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay),
                                     use_buffers=True)
        if outliers is not None and len(outliers):
            self.step_fn.outliers = torch.from_numpy(np.ascontiguousarray(outliers, np.float32)) \
                .reshape(len(outliers), 1, *outliers.shape[-2:]).to(device)
        # The epoch in progress: its shuffle order and running sums (kept on the device so
        # a GPU never waits for the host between steps).
        self.perm = None
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.seen = 0
        self.prog = Progress()
        self.clock = Clock(0.0)
        self.last_path, self.best_path = run_dir / "last.safetensors", run_dir / "best.safetensors"

    def _start_from(self, path: str) -> None:
        """Fine-tuning: copy the weights of model file ``path`` (same architecture,
        arguments and labels) into the new network."""
        from mnist_desktop.core.checkpoint import CheckpointError, load_model

        try:
            loaded = load_model(path)
        except CheckpointError as e:
            raise ConfigError(f"cannot fine-tune {path}: {e}") from None
        meta = loaded.meta
        if meta.arch != self.cfg.arch or dict(meta.arch_args) != dict(self.cfg.arch_args):
            raise ConfigError(f"cannot fine-tune {path}: it is a {meta.arch} {meta.arch_args}, the run trains "
                              f"a {self.cfg.arch} {self.cfg.arch_args}")
        if list(meta.labels) != list(self.labels):
            raise ConfigError(f"cannot fine-tune {path}: its labels {','.join(meta.labels)} differ from the "
                              f"data's {','.join(self.labels)}")
        self.model.load_state_dict(loaded.model.state_dict())

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def done(self) -> bool:
        return self.prog.epoch >= self.cfg.epochs or bool(self.prog.stop_reason)

    @property
    def saved_model(self):
        """The network that is validated and written to the model files."""
        return self.ema.module if self.ema is not None else self.model

    def started(self, resumed: bool, test_set) -> RunStarted:
        """The event that opens the run's training (also on a resume)."""
        from mnist_desktop.core.models import count_parameters

        cfg = self.cfg
        return RunStarted(run_dir=str(self.dir), recipe=cfg.recipe, arch=cfg.arch,
                          num_parameters=count_parameters(self.model), device=self.device, resumed=resumed,
                          start_epoch=self.prog.epoch, start_step=self.prog.global_step, epochs=cfg.epochs,
                          steps_per_epoch=self.spe, total_steps=self.total_steps, batch_size=cfg.batch_size,
                          n_train=self.n_train, n_val=self.n_val, n_test=len(test_set) if test_set else 0,
                          labels=self.labels, data=" + ".join([cfg.data, *cfg.extra_data]),
                          test_data=cfg.test_data, config=cfg.to_dict())
