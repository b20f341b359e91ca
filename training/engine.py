"""The training loop: a generator of progress events, resumable at any moment.

:func:`train` yields :mod:`training.events` objects and checks ``should_cancel`` between
steps; the CLI turns them into a progress bar or JSON lines, the GUI into widget updates,
tests into assertions. It never raises for bad data, NaN loss or out-of-memory: those end
the stream with a :class:`~training.events.Failed` event carrying a one-line message.

Run folder (``<output>/<name>-<YYYYmmdd-HHMMSS>/``)::

    config.json        the TrainConfig of the run
    progress.jsonl     every event, one JSON line each (appended on resume)
    last.safetensors   model after the latest epoch   } mnist-desktop model files with full
    best.safetensors   best model on validation data  } ModelMeta (core.checkpoint)
    state.pt           optimizer/scheduler/RNG/epoch/early-stopping state for --resume
    report.json        final evaluation (+ report.txt, curves.png, *_confusion.png,
                       *_misclassified.png), exports (best.torchscript.pt, best.onnx)

All files are written atomically. ``state.pt`` is written at every epoch end and when a
run is cancelled (then mid-epoch, including the epoch's shuffle order), and read back with
``torch.load(weights_only=True)``; resuming restores model, optimizer, scheduler, every
random generator and the loss accumulators, so a resumed run produces the same losses and
weights as an uninterrupted one (on CPU, same seed, same thread count).
"""

from __future__ import annotations

import json
import math
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from mnist_desktop.core.data import DataError
from training.config import ConfigError, TrainConfig
from training.events import (Cancelled, EpochEnd, Evaluation, Event, Exported, Failed, Finished, Log,
                             RunStarted, Status, Step)

STATE_FORMAT = "mnist-desktop-train-state"
STATE_VERSION = 1


class TrainingError(Exception):
    """Stops a run with a :class:`Failed` event of ``kind`` and a one-line ``message``."""

    def __init__(self, kind: str, message: str, hint: str = ""):
        super().__init__(message)
        self.kind, self.message, self.hint = kind, message, hint


class _Cancel(Exception):
    """Raised internally when ``should_cancel`` returns True outside the step loop."""


def train(config: TrainConfig | None = None, *, resume: str | Path | None = None,
          device: str | None = None, should_cancel: Callable[[], bool] | None = None) -> Iterator[Event]:
    """Run (or resume) a training run, yielding progress events.

    Parameters
    ----------
    config
        The run's configuration; ignored when resuming (the run folder's own is used).
    resume
        A run folder to continue from its ``state.pt``.
    device
        Overrides ``config.device`` (also when resuming).
    should_cancel
        Polled between steps; when it returns True the run saves its state and ends with a
        resumable :class:`Cancelled` event.

    Yields
    ------
    Event
        See :mod:`training.events` for the order. The last one is ``Finished``,
        ``Cancelled`` or ``Failed``.
    """
    run = _Run(should_cancel or (lambda: False))
    try:
        for event in run.execute(config, resume, device):
            run.record(event)
            yield event
    except _Cancel:
        resumable = run.has_state()
        event = Cancelled(run_dir=run.dir_str, resumable=resumable,
                          message=f"cancelled; continue with --resume {run.dir}" if resumable else "cancelled")
        run.record(event)
        yield event
    except TrainingError as e:
        event = Failed(kind=e.kind, message=e.message, hint=e.hint, run_dir=run.dir_str,
                       resumable=run.has_state())
        run.record(event)
        yield event
    except (DataError, ConfigError) as e:
        kind = "data" if isinstance(e, DataError) else "config"
        event = Failed(kind=kind, message=str(e), run_dir=run.dir_str, resumable=run.has_state())
        run.record(event)
        yield event
    except Exception as e:  # last resort: one line for the user, the traceback in the run folder
        event = _unexpected_failure(run, e)
        run.record(event)
        yield event
    finally:
        run.close()


def read_config(run_dir: str | Path) -> TrainConfig:
    """The :class:`TrainConfig` stored in a run folder."""
    path = Path(run_dir) / "config.json"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot resume: no readable config.json in {run_dir} ({e.strerror or e})") from None
    return TrainConfig.from_json(text)


def _unexpected_failure(run: "_Run", e: Exception) -> Failed:
    import torch

    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    if isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in first.lower() or isinstance(e, MemoryError):
        bs = run.cfg.batch_size if run.cfg else 0
        return Failed(kind="out_of_memory", message=f"out of memory on {run.device or 'the device'} "
                      f"(batch size {bs})", hint=f"try a smaller --batch-size (e.g. {max(1, bs // 2)}) "
                      "or --device cpu", run_dir=run.dir_str, resumable=run.has_state())
    from mnist_desktop.core.checkpoint import CheckpointError

    if isinstance(e, (OSError, CheckpointError)):
        reason = e.strerror if isinstance(e, OSError) and e.strerror else first
        return Failed(kind="io", message=f"cannot write run files: {reason}",
                      hint="check free disk space and permissions of the output folder",
                      run_dir=run.dir_str, resumable=run.has_state())
    hint = ""
    if run.dir is not None:
        try:
            (run.dir / "error.log").write_text(traceback.format_exc(), encoding="utf-8")
            hint = f"details in {run.dir / 'error.log'}"
        except OSError:
            pass
    return Failed(kind="internal", message=f"{type(e).__name__}: {first}", hint=hint,
                  run_dir=run.dir_str, resumable=run.has_state())


# --------------------------------------------------------------------------- helpers

@dataclass
class _Progress:
    """Bookkeeping that survives a resume (stored as JSON in state.pt)."""

    epoch: int = 0              # completed epochs
    step_in_epoch: int = 0      # steps done in the epoch in progress (mid-epoch state)
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_accuracy: float | None = None
    best_val_loss: float | None = None
    bad_epochs: int = 0
    elapsed_s: float = 0.0
    stop_reason: str = ""       # "", "completed", "early_stopping"


class _Clock:
    """Session timing for images/s and ETA (not part of the resumable state)."""

    def __init__(self, elapsed_before: float):
        self.start = time.monotonic()
        self.elapsed_before = elapsed_before
        self.train_time = 0.0
        self.train_steps = 0
        self.train_images = 0
        self.val_time = 0.0
        self.val_count = 0
        self.last_event = self.start
        self.images_since_event = 0
        self.loss_since_event = 0.0
        self.steps_since_event = 0
        self.epoch_start = 0.0

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.start

    def add_step(self, seconds: float, images: int) -> None:
        if not self.epoch_start:
            self.epoch_start = time.monotonic() - seconds
        self.train_time += seconds
        self.train_steps += 1
        self.train_images += images
        self.images_since_event += images
        self.steps_since_event += 1

    def event_sent(self, now: float) -> None:
        self.last_event = now
        self.images_since_event = self.steps_since_event = 0
        self.loss_since_event = 0.0

    def add_validation(self, seconds: float) -> None:
        self.val_time += seconds
        self.val_count += 1

    def epoch_time(self) -> float:
        """Wall time since this epoch's first step (this session), and restart the count."""
        now = time.monotonic()
        t = now - (self.epoch_start or now)
        self.epoch_start = 0.0
        return t

    def eta(self, steps_left: int, epochs_left: int) -> float | None:
        """Seconds left: remaining steps at this session's step time, plus remaining epoch
        ends (validation, checkpoints, state) at their measured average cost."""
        if not self.train_steps:
            return None
        per_step = self.train_time / self.train_steps
        per_epoch_end = self.val_time / self.val_count if self.val_count else 0.0
        return steps_left * per_step + epochs_left * per_epoch_end


def make_optimizer(cfg: TrainConfig, params):
    """The optimizer ``cfg`` names (SGD with momentum, Adam or AdamW) over ``params``."""
    import torch

    # foreach: one multi-tensor kernel per update instead of a loop over parameters; torch
    # only defaults to it on CUDA, but on a CPU it also cuts the per-step overhead that
    # dominates small models (MLP: about 30% faster per step).
    kw = {"lr": cfg.learning_rate, "weight_decay": cfg.weight_decay, "foreach": True}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, momentum=cfg.momentum, **kw)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, **kw)
    return torch.optim.AdamW(params, **kw)


def make_scheduler(cfg: TrainConfig, optimizer, total_steps: int):
    """``(scheduler, per_step)`` for ``cfg.scheduler``: OneCycle and cosine step after every
    batch over ``total_steps``; step and plateau (on validation loss) after each epoch."""
    import torch.optim.lr_scheduler as S

    args = dict(cfg.scheduler_args)
    try:
        if cfg.scheduler == "none":
            return None, False
        if cfg.scheduler == "onecycle":
            args.setdefault("cycle_momentum", cfg.optimizer != "sgd" or cfg.momentum > 0)
            return S.OneCycleLR(optimizer, max_lr=cfg.learning_rate, total_steps=total_steps, **args), True
        if cfg.scheduler == "cosine":
            return S.CosineAnnealingLR(optimizer, T_max=total_steps, **args), True
        if cfg.scheduler == "step":
            args.setdefault("step_size", 1)
            args.setdefault("gamma", 0.7)
            return S.StepLR(optimizer, **args), False
        return S.ReduceLROnPlateau(optimizer, mode="min", **args), False
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad scheduler_args for {cfg.scheduler}: {str(e).splitlines()[0]}") from None


class StepFunction:
    """One optimization step on a batch: augment, normalize, forward, loss, backward, update.

    Shared by the training loop and ``python -m training.bench`` so the benchmark times
    exactly what training runs.
    """

    def __init__(self, cfg: TrainConfig, model, optimizer, scheduler=None, per_step_scheduler: bool = False,
                 aug_generator=None, label_names=None):
        import torch.nn.functional as F

        self.F = F
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
        import torch

        from training.augment import augment_batch

        x = images.float()
        if not images.dtype.is_floating_point:
            x = x / 255.0
        x = x.unsqueeze(1)
        if self.augment is not None:
            x = augment_batch(x, self.augment, self.gen, labels, self.style_classes)
        n = len(x)
        if self.outliers is not None:
            pick = torch.randint(0, len(self.outliers), (n,), generator=self.gen, device=x.device)
            xo = self.outliers[pick]
            if self.augment is not None:
                xo = augment_batch(xo, self.augment, self.gen)
            x = torch.cat([x, xo])
        x = (x - self.cfg.mean) / self.cfg.std
        out = self.model(x)
        logits = out[:n]
        loss = self.F.cross_entropy(logits, labels, label_smoothing=self.cfg.label_smoothing)
        if self.teachers:
            loss = (1 - self.cfg.distill_weight) * loss + self.cfg.distill_weight * self._distill_loss(x[:n], logits)
        if self.outliers is not None:
            loss = loss + self.cfg.outlier_weight * (-self.F.log_softmax(out[n:], dim=1).mean(1)).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return loss.detach(), (logits.detach().argmax(1) == labels).sum()


    def _distill_loss(self, x, logits):
        """Hinton et al. (2015): KL divergence to the teachers' mean softened prediction on
        the same augmented batch, scaled by T^2 so its gradients match the hard loss."""
        import torch

        t = self.cfg.distill_temperature
        with torch.no_grad():
            target = torch.stack([torch.softmax(m(x) / t, dim=1) for m in self.teachers]).mean(0)
        log_p = self.F.log_softmax(logits / t, dim=1)
        return self.F.kl_div(log_p, target, reduction="batchmean") * (t * t)


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


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Batches per epoch; a final batch of a single sample is dropped (batch norm cannot
    train on one sample)."""
    steps = math.ceil(n_train / batch_size)
    if steps > 1 and n_train % batch_size == 1:
        steps -= 1
    return max(steps, 1)


class _Loop:
    """One training session: model, optimizer, scheduler, device-resident data, random
    generators, loss accumulators and progress - everything :func:`_save_state` stores."""

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
        self.prog = _Progress()
        self.clock = _Clock(0.0)
        self.last_path, self.best_path = run_dir / "last.safetensors", run_dir / "best.safetensors"

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def done(self) -> bool:
        return self.prog.epoch >= self.cfg.epochs or bool(self.prog.stop_reason)

    def restore(self, st: dict[str, Any]) -> list[str]:
        """Continue from a saved state; returns warnings for the user."""
        import torch

        meta = st["meta"]
        if meta.get("fingerprint") != self.fingerprint or meta.get("n_train") != self.n_train:
            raise DataError(f"cannot resume: the training data differs from the data {self.dir.name} started with")
        self.model.load_state_dict(st["model"])
        if self.ema is not None:
            if st.get("ema") is None:
                raise ConfigError(f"cannot resume: {self.dir.name} was saved without the weight average "
                                  "(ema_decay) this config asks for")
            self.ema.load_state_dict(st["ema"])
        self.optimizer.load_state_dict(st["optimizer"])
        if self.scheduler is not None and st["scheduler"]:
            self.scheduler.load_state_dict(st["scheduler"])
        self.prog = _Progress(**meta["progress"])
        self.clock = _Clock(self.prog.elapsed_s)
        torch.set_rng_state(st["rng_cpu"])
        self.gen_shuffle.set_state(st["gen_shuffle"])
        warnings_ = []
        if st["gen_aug_device"] == torch.device(self.device).type:
            self.gen_aug.set_state(st["gen_aug"])
        else:
            warnings_.append(f"resuming on {self.device} after {st['gen_aug_device']}: augmentation "
                             "continues with a fresh random stream")
        if self.cuda and st.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(st["rng_cuda"])
        if st["perm"] is not None:  # cancelled mid-epoch
            self.perm = st["perm"]
            self.loss_sum = st["loss_sum"].to(self.device)
            self.correct = st["correct"].to(self.device)
            self.seen = int(meta["seen"])
        return warnings_

    def save_state(self) -> None:
        self.prog.elapsed_s = self.clock.elapsed()
        _save_state(self.dir, self.prog, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                    gen_shuffle=self.gen_shuffle, gen_aug=self.gen_aug, perm=self.perm, loss_sum=self.loss_sum,
                    correct=self.correct, seen=self.seen, fingerprint=self.fingerprint, n_train=self.n_train,
                    ema=self.ema)

    @property
    def saved_model(self):
        """The network that is validated and written to the model files."""
        return self.ema.module if self.ema is not None else self.model

    def started(self, resumed: bool, test_set, run_dir: Path) -> RunStarted:
        from mnist_desktop.core.models import count_parameters

        cfg = self.cfg
        return RunStarted(run_dir=str(run_dir), recipe=cfg.recipe, arch=cfg.arch,
                          num_parameters=count_parameters(self.model), device=self.device, resumed=resumed,
                          start_epoch=self.prog.epoch, start_step=self.prog.global_step, epochs=cfg.epochs,
                          steps_per_epoch=self.spe, total_steps=self.total_steps, batch_size=cfg.batch_size,
                          n_train=self.n_train, n_val=self.n_val, n_test=len(test_set) if test_set else 0,
                          labels=self.labels, data=" + ".join([cfg.data, *cfg.extra_data]),
                          test_data=cfg.test_data, config=cfg.to_dict())

    def train_epoch(self, should_cancel: Callable[[], bool]):
        """Run the remaining steps of the current epoch, yielding Step events; returns True
        when cancelled (between two steps)."""
        import torch

        cfg, prog, clock = self.cfg, self.prog, self.clock
        self.model.train()
        if self.perm is None:
            self.perm = torch.randperm(self.n_train, generator=self.gen_shuffle)
            self.loss_sum.zero_()
            self.correct.zero_()
            self.seen = 0
        perm = self.perm.to(self.device)
        for k in range(prog.step_in_epoch, self.spe):
            if should_cancel():
                return True
            t0 = time.monotonic()
            idx = perm[k * cfg.batch_size:(k + 1) * cfg.batch_size]
            loss, n_correct = self.step_fn(self.x_train[idx], self.y_train[idx])
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            self.loss_sum += loss
            self.correct += n_correct
            self.seen += len(idx)
            prog.global_step += 1
            prog.step_in_epoch = k + 1
            if not self.cuda:  # reading the loss is free on a CPU: catch NaN at once
                value = float(loss)
                if not math.isfinite(value):
                    self.nan_failure()
                clock.loss_since_event += value
            now = time.monotonic()
            clock.add_step(now - t0, len(idx))
            if now - clock.last_event >= cfg.step_event_interval or k + 1 == self.spe:
                yield self.step_event(now)
        return False

    def step_event(self, now: float) -> Step:
        cfg, prog, clock = self.cfg, self.prog, self.clock
        if self.cuda:
            # One device sync per event, not per step: the running loss is read only here.
            mean_loss = float(self.loss_sum) / max(prog.step_in_epoch, 1)
            if not math.isfinite(mean_loss):
                self.nan_failure()
        else:
            mean_loss = clock.loss_since_event / max(clock.steps_since_event, 1)
        dt = max(now - clock.last_event, 1e-9)
        event = Step(epoch=prog.epoch + 1, epochs=cfg.epochs, step=prog.global_step, total_steps=self.total_steps,
                     epoch_step=prog.step_in_epoch, steps_per_epoch=self.spe, loss=mean_loss,
                     lr=self.optimizer.param_groups[0]["lr"], images_per_s=round(clock.images_since_event / dt, 1),
                     elapsed_s=round(clock.elapsed(), 3),
                     eta_s=clock.eta(self.total_steps - prog.global_step, cfg.epochs - prog.epoch))
        clock.event_sent(now)
        return event

    def nan_failure(self) -> None:
        prog = self.prog
        last = f", last good model: last.safetensors (epoch {prog.epoch})" if prog.epoch else ""
        raise TrainingError("nan_loss", f"training loss became NaN/inf in epoch {prog.epoch + 1} "
                            f"(step {prog.global_step}); the run stopped{last}",
                            hint=f"lower --learning-rate (now {self.cfg.learning_rate:g}) or check the data")

    def end_epoch(self, model_meta) -> EpochEnd:
        """Validate, calibrate, step per-epoch schedulers, pick the best model, save model
        files and state; returns the EpochEnd event."""
        from mnist_desktop.core.checkpoint import save_model
        from training.evaluate import predict_logits

        cfg, prog, clock = self.cfg, self.prog, self.clock
        t_val = time.monotonic()
        train_loss = float(self.loss_sum) / self.spe  # mean of the epoch's step losses
        if not math.isfinite(train_loss):
            self.nan_failure()
        record: dict[str, Any] = {"epoch": prog.epoch + 1, "step": prog.global_step, "train_loss": train_loss,
                                  "train_accuracy": float(self.correct) / max(self.seen, 1), "val_loss": None,
                                  "val_accuracy": None, "lr": self.optimizer.param_groups[0]["lr"],
                                  "temperature": 1.0}
        self.perm = None
        prog.step_in_epoch = 0
        prog.epoch += 1
        if self.n_val:
            logits = predict_logits(self.saved_model, self.x_val, cfg.mean, cfg.std, cfg.eval_batch_size)
            record.update(_validation_metrics(logits, self.y_val))
        if self.scheduler is not None and not self.per_step:
            if cfg.scheduler == "plateau":
                self.scheduler.step(record["val_loss"] if record["val_loss"] is not None else train_loss)
            else:
                self.scheduler.step()
        is_best = _update_best(prog, record, cfg.select_metric)
        if cfg.patience and self.n_val and prog.bad_epochs >= cfg.patience and prog.epoch < cfg.epochs:
            prog.stop_reason = "early_stopping"
        elif prog.epoch >= cfg.epochs:
            prog.stop_reason = "completed"
        meta = model_meta(cfg, self.labels, record, self.fingerprint, self.n_train, self.n_val)
        save_model(self.last_path, self.saved_model, meta)
        if is_best:
            save_model(self.best_path, self.saved_model, meta)
        record["time_s"] = round(clock.epoch_time(), 3)
        prog.history.append(record)
        self.save_state()
        clock.add_validation(time.monotonic() - t_val)
        return EpochEnd(epoch=prog.epoch, epochs=cfg.epochs, step=prog.global_step, total_steps=self.total_steps,
                        train_loss=train_loss, train_accuracy=record["train_accuracy"], val_loss=record["val_loss"],
                        val_accuracy=record["val_accuracy"], lr=self.optimizer.param_groups[0]["lr"],
                        temperature=record["temperature"], is_best=is_best, best_epoch=prog.best_epoch,
                        best_val_accuracy=prog.best_val_accuracy, epoch_time_s=record["time_s"],
                        images_per_s=round(clock.train_images / max(clock.train_time, 1e-9), 1),
                        elapsed_s=round(clock.elapsed(), 3),
                        eta_s=0.0 if self.done else clock.eta(self.total_steps - prog.global_step,
                                                              cfg.epochs - prog.epoch),
                        last_model=str(self.last_path), best_model=str(self.best_path))


# --------------------------------------------------------------------------- the run

class _Run:
    def __init__(self, should_cancel: Callable[[], bool]):
        self.should_cancel = should_cancel
        self.cfg: TrainConfig | None = None
        self.dir: Path | None = None
        self.device: str | None = None
        self._log = None
        self._pending: list[str] = []

    # ------------------------------------------------------------------ logging
    @property
    def dir_str(self) -> str | None:
        return str(self.dir) if self.dir is not None else None

    def has_state(self) -> bool:
        return self.dir is not None and (self.dir / "state.pt").exists()

    def record(self, event: Event) -> None:
        """Append the event to progress.jsonl (buffered until the run folder exists)."""
        line = event.to_json()
        if self._log is None:
            self._pending.append(line)
            if self.dir is None:
                return
            self._log = open(self.dir / "progress.jsonl", "a", encoding="utf-8")
            lines, self._pending = self._pending, []
        else:
            lines = [line]
        self._log.write("".join(ln + "\n" for ln in lines))
        self._log.flush()

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def _check_cancel(self) -> None:
        if self.should_cancel():
            raise _Cancel()

    def _checked(self, loader):
        """``yield from`` a data loader, checking for cancellation after each event."""
        while True:
            try:
                event = next(loader)
            except StopIteration as stop:
                return stop.value
            yield event
            self._check_cancel()

    # ------------------------------------------------------------------ phases
    def execute(self, config: TrainConfig | None, resume, device: str | None) -> Iterator[Event]:
        import torch

        from mnist_desktop.core.torch_predictor import resolve_device

        if resume is not None:
            resume = Path(resume)
            cfg = read_config(resume)
            if not (resume / "state.pt").exists():
                raise ConfigError(f"cannot resume: {resume} has no state.pt (the run saved no epoch yet)")
            self.dir = resume
        elif config is None:
            raise ConfigError("no training config given")
        else:
            cfg = config
        if device:
            cfg = cfg.replace(device=device)
        cfg.validate()
        self.cfg = cfg
        from mnist_desktop.core.models import available_architectures
        if cfg.arch not in available_architectures():
            raise ConfigError(f"unknown architecture {cfg.arch!r}; known: {', '.join(available_architectures())}")
        self.device, message = resolve_device(cfg.device)
        if message:
            yield Log(level="warning", message=message)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)

        data = yield from self._load_data(cfg)
        train_set, val_set, test_set, fingerprint, outliers = data
        self._check_cancel()  # before a run folder is made for nothing
        if resume is None:
            self.dir = _new_run_dir(cfg)
            _write_json(self.dir / "config.json", cfg.to_dict())
        yield from self._fit(cfg, train_set, val_set, test_set, fingerprint, resume is not None, outliers)

    def _load_data(self, cfg: TrainConfig):
        from training import data as D

        options = cfg.preprocess_options()
        full, train_idx, val_idx = yield from self._checked(D.load_training_data(cfg))
        label_names = full.label_names
        train_set, val_set = full.subset(train_idx), full.subset(val_idx)
        if len(val_set) == 0:
            yield Log(level="warning", message="no validation data (val_fraction 0 or too little data): "
                      "the last epoch is the best, no early stopping, no temperature calibration")
        test_set = None
        if cfg.test_data:
            yield Status("data", f"loading test data {cfg.test_data}")
            test_set = yield from self._checked(D.load_source(
                cfg.test_data, train=False, split=cfg.test_split, data_root=cfg.data_root,
                download=cfg.download, options=options, label_names=label_names))
        outliers = None
        if cfg.outlier_images:
            from training.calibration import outlier_exposure_images

            yield Status("data", f"generating {cfg.outlier_images} non-digits for outlier exposure "
                                 f"(training seeds {cfg.seed})")
            outliers, _, _ = outlier_exposure_images(cfg.outlier_images, seed=cfg.seed, opts=options)
        return train_set, val_set, test_set, full.fingerprint(), outliers

    def _fit(self, cfg: TrainConfig, train_set, val_set, test_set, fingerprint: str, resumed: bool,
             outliers=None):
        loop = _Loop(cfg, self.device, self.dir, train_set, val_set, fingerprint, outliers)
        if resumed:
            for warning in loop.restore(_load_state(self.dir)):
                yield Log(level="warning", message=warning)
        yield loop.started(resumed, test_set, self.dir)
        while not loop.done:
            stopped = yield from loop.train_epoch(self.should_cancel)
            if stopped:
                loop.save_state()
                yield Cancelled(run_dir=str(self.dir), epoch=loop.prog.epoch + 1, step=loop.prog.global_step,
                                resumable=True, message=f"cancelled; continue with --resume {self.dir}")
                return
            yield loop.end_epoch(self._model_meta)
        yield from self._finish(cfg, loop, val_set, test_set)

    # ------------------------------------------------------------------ pieces
    def _model_meta(self, cfg: TrainConfig, labels, record, fingerprint, n_train, n_val):
        from mnist_desktop.core.checkpoint import ModelMeta, Normalization, UncertaintyRule

        metrics = {k: record[k] for k in ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                                          "val_ece") if record.get(k) is not None}
        return ModelMeta(
            arch=cfg.arch, arch_args=dict(cfg.arch_args), labels=list(labels),
            normalization=Normalization(cfg.mean, cfg.std), preprocess=cfg.preprocess_options().to_dict(),
            uncertainty=UncertaintyRule("max_prob", cfg.uncertainty_threshold, float(record["temperature"])),
            name=self.dir.name, description=f"{cfg.recipe} recipe ({cfg.arch}) trained on {cfg.data}",
            training={"config": cfg.to_dict(), "epoch": record["epoch"], "step": record["step"],
                      "run": self.dir.name, "n_train": n_train, "n_val": n_val,
                      "validation": f"seeded stratified {cfg.val_fraction:g} of the training data"},
            metrics=metrics, data_fingerprint=fingerprint)

    def _finish(self, cfg: TrainConfig, loop: _Loop, val_set, test_set):
        """Evaluate the best model, write the report and plots, export; then Finished."""
        from mnist_desktop.core.checkpoint import load_model

        prog = loop.prog
        self._check_cancel()
        yield Status("evaluate", "evaluating the best model")
        loaded = load_model(loop.best_path)
        reports = self._evaluate(cfg, loaded, loop, val_set, test_set)
        report, plots = self._write_report(cfg, loop, loaded, reports, val_set, test_set)
        report_path = self.dir / "report.json"
        split = "test" if "test" in reports else "validation" if reports else ""
        if split:
            r = reports[split]
            yield Evaluation(split=split, data=r["data"], n=r["n"], accuracy=r["accuracy"], macro_f1=r["macro_f1"],
                             ece=r["ece"], misclassified=r["misclassified_count"], report=str(report_path),
                             plots=plots)
        exports: dict[str, str] = {}
        for fmt in cfg.export:
            self._check_cancel()
            yield Status("export", f"exporting {fmt}")
            exported = _export(loaded, fmt, self.dir)
            if exported.path:
                exports[fmt] = exported.path
            yield exported
        if exports:
            report["exports"] = exports
            _write_json(report_path, report)
        metrics = {"val_accuracy": prog.best_val_accuracy, "val_loss": prog.best_val_loss}
        if "test" in reports:
            metrics.update(test_accuracy=reports["test"]["accuracy"], test_macro_f1=reports["test"]["macro_f1"],
                           test_ece=reports["test"]["ece"])
        yield Finished(run_dir=str(self.dir), reason=prog.stop_reason or "completed", epochs_done=prog.epoch,
                       best_epoch=prog.best_epoch, best_model=str(loop.best_path), last_model=str(loop.last_path),
                       report=str(report_path), metrics=metrics, exports=exports,
                       elapsed_s=round(loop.clock.elapsed(), 3))

    def _evaluate(self, cfg: TrainConfig, loaded, loop: _Loop, val_set, test_set) -> dict[str, Any]:
        """Reports of the best model on the validation data and, when given, the test data."""
        import torch

        from mnist_desktop.core.checkpoint import save_model
        from training.evaluate import evaluation_report, predict_logits

        model = loaded.model.to(self.device)
        reports: dict[str, Any] = {}
        if len(val_set):
            logits = predict_logits(model, loop.x_val, cfg.mean, cfg.std, cfg.eval_batch_size).cpu().numpy()
            reports["validation"] = evaluation_report(logits, val_set.labels, loaded.meta,
                                                      data="validation split", paths=val_set.paths)
        if test_set is not None:
            x_test = torch.from_numpy(np.ascontiguousarray(test_set.images)).to(self.device)
            logits = predict_logits(model, x_test, cfg.mean, cfg.std, cfg.eval_batch_size).cpu().numpy()
            t = reports["test"] = evaluation_report(logits, test_set.labels, loaded.meta,
                                                    data=test_set.description, paths=test_set.paths)
            # Measured once, at the end, for the model card only (never used for selection).
            loaded.meta.metrics.update({"test_accuracy": t["accuracy"], "test_macro_f1": t["macro_f1"],
                                        "test_ece": t["ece"], "test_data": test_set.description})
            save_model(loop.best_path, model, loaded.meta)
        return reports

    def _write_report(self, cfg: TrainConfig, loop: _Loop, loaded, reports, val_set, test_set):
        """report.json, report.txt and the PNG plots; returns (report, plot paths)."""
        from mnist_desktop.core.checkpoint import atomic_write_bytes
        from mnist_desktop.core.metrics import format_report
        from training.evaluate import report_plots
        from training.plots import plot_curves

        prog = loop.prog
        plots = [str(self.dir / "curves.png")]
        plot_curves(prog.history, plots[0])
        if "test" in reports:
            plots += report_plots(reports["test"], test_set.images, self.dir, "test")
        elif "validation" in reports:
            plots += report_plots(reports["validation"], val_set.images, self.dir, "validation")
        report = {"run_dir": str(self.dir), "config": cfg.to_dict(), "labels": loaded.meta.labels,
                  "best_epoch": prog.best_epoch, "epochs_done": prog.epoch, "stop_reason": prog.stop_reason,
                  "history": prog.history, "models": {"best": str(loop.best_path), "last": str(loop.last_path)},
                  "plots": plots, **reports}
        _write_json(self.dir / "report.json", report)
        text = [f"run: {self.dir}", f"best epoch: {prog.best_epoch} of {prog.epoch} ({prog.stop_reason})"]
        for name, r in reports.items():
            text += ["", f"== {name}: {r['data']}", format_report(r)]
        atomic_write_bytes(self.dir / "report.txt", ("\n".join(text) + "\n").encode("utf-8"))
        return report, plots


def _validation_metrics(logits, y) -> dict[str, Any]:
    import torch.nn.functional as F

    from training.calibration import fit_temperature
    from mnist_desktop.core.metrics import expected_calibration_error

    val_loss = float(F.cross_entropy(logits, y))
    val_acc = float((logits.argmax(1) == y).float().mean())
    z, t = logits.cpu().numpy().astype(np.float64), y.cpu().numpy()
    temperature = fit_temperature(z, t) if math.isfinite(val_loss) else 1.0
    zt = z / temperature
    p = np.exp(zt - zt.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return {"val_loss": val_loss, "val_accuracy": val_acc, "temperature": temperature,
            "val_ece": expected_calibration_error(p, t)}


def _update_best(prog: _Progress, record: dict[str, Any], metric: str) -> bool:
    acc, loss = record["val_accuracy"], record["val_loss"]
    if acc is None:  # no validation data: the latest model is the best we know
        prog.best_epoch = record["epoch"]
        return True
    if prog.best_epoch == 0 or metric == "last":
        better = True
    elif metric == "val_loss":
        better = loss < prog.best_val_loss
    else:
        better = acc > prog.best_val_accuracy or (acc == prog.best_val_accuracy and loss < prog.best_val_loss)
    if better:
        prog.best_epoch, prog.best_val_accuracy, prog.best_val_loss = record["epoch"], acc, loss
        prog.bad_epochs = 0
    else:
        prog.bad_epochs += 1
    return better


def _export(loaded, fmt: str, run_dir: Path) -> Exported:
    from mnist_desktop.core.checkpoint import CheckpointError
    from mnist_desktop.core.export import export_onnx, export_torchscript

    cpu = type(loaded)(model=loaded.model.to("cpu").eval(), meta=loaded.meta, path=loaded.path)
    target = run_dir / ("best.torchscript.pt" if fmt == "torchscript" else "best.onnx")
    try:
        with warnings.catch_warnings():
            # torch.jit and the ONNX exporter announce their deprecations on every call;
            # the export is verified for parity, so they are noise on the user's console.
            warnings.simplefilter("ignore", category=FutureWarning)
            warnings.simplefilter("ignore", category=DeprecationWarning)
            (export_torchscript if fmt == "torchscript" else export_onnx)(cpu, target)
    except CheckpointError as e:
        return Exported(format=fmt, error=str(e))
    except ImportError as e:
        return Exported(format=fmt, error=f"{fmt} export needs an optional package ({e.name or e}); "
                        "install mnist-desktop[export]")
    except Exception as e:  # exporters raise many types; the run itself succeeded
        return Exported(format=fmt, error=f"{fmt} export failed: {type(e).__name__}: "
                        f"{(str(e).strip().splitlines() or [''])[0][:160]}")
    return Exported(format=fmt, path=str(target))


# --------------------------------------------------------------------------- files

def _new_run_dir(cfg: TrainConfig) -> Path:
    base = Path(cfg.output).expanduser()
    stem = f"{cfg.name or cfg.recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    for i in range(1000):
        path = base / (stem if i == 0 else f"{stem}-{i + 1}")
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            continue
        except OSError as e:
            raise TrainingError("io", f"cannot create run folder {path}: {e.strerror or e}") from None
    raise TrainingError("io", f"cannot create a run folder under {base}")


def _write_json(path: Path, obj: Any) -> None:
    from mnist_desktop.core.checkpoint import atomic_write_bytes
    from training.events import _finite

    atomic_write_bytes(path, json.dumps(_finite(obj), indent=1, allow_nan=False).encode("utf-8"))


def _save_state(run_dir: Path, prog: _Progress, *, model, optimizer, scheduler, gen_shuffle, gen_aug, perm,
                loss_sum, correct, seen: int, fingerprint: str, n_train: int, ema=None) -> None:
    import dataclasses

    import torch

    from mnist_desktop.core.checkpoint import atomic_write

    meta = {"progress": dataclasses.asdict(prog), "seen": seen, "fingerprint": fingerprint, "n_train": n_train}
    state = {
        "format": STATE_FORMAT, "version": STATE_VERSION,
        "meta": json.dumps(meta),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "ema": {k: v.detach().cpu() for k, v in ema.state_dict().items()} if ema is not None else None,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else {},
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state() if gen_aug.device.type == "cuda" else None,
        "gen_shuffle": gen_shuffle.get_state(),
        "gen_aug": gen_aug.get_state(),
        "gen_aug_device": gen_aug.device.type,
        "perm": perm,
        "loss_sum": loss_sum.detach().cpu().clone(),
        "correct": correct.detach().cpu().clone(),
    }
    atomic_write(run_dir / "state.pt", lambda tmp: torch.save(state, tmp))


def _load_state(run_dir: Path) -> dict[str, Any]:
    import torch

    path = run_dir / "state.pt"
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # refuses pickled code; corrupt files raise various types
        raise ConfigError(f"cannot resume: {path} is not a readable training state "
                          f"({(str(e).strip().splitlines() or [type(e).__name__])[0][:120]})") from None
    if not isinstance(st, dict) or st.get("format") != STATE_FORMAT:
        raise ConfigError(f"cannot resume: {path} is not an mnist-desktop training state")
    if st.get("version", 0) > STATE_VERSION:
        raise ConfigError(f"cannot resume: {path} was written by a newer version")
    try:
        st["meta"] = json.loads(st["meta"])
        st["meta"]["progress"]
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"cannot resume: {path} has damaged metadata") from None
    return st
