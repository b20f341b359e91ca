"""The epoch loop: the steps of one epoch, then the epoch's end (validation, best model,
model files, state).

:func:`train_epoch` reads like pytorch/examples' ``train()``; the step itself (augment,
forward, loss, backward, update) is :class:`training.step.StepFunction`. Cancellation is
checked between two steps, so a cancelled epoch is saved mid-way and resumes exactly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator
from typing import Any

from training.events import EpochEnd, Step
from training.failures import TrainingError
from training.report import model_meta, update_best, validation_metrics
from training.session import Session
from training.state import save_state


def train_epoch(s: Session, should_cancel: Callable[[], bool]) -> Generator[Step, None, bool]:
    """Run the remaining steps of the current epoch, yielding Step events; returns True
    when cancelled (between two steps)."""
    s.model.train()
    for idx in remaining_batches(s):
        if should_cancel():
            return True
        t0 = time.monotonic()
        loss, n_correct = s.step_fn(s.x_train[idx], s.y_train[idx])
        update_weight_average(s)
        add_to_epoch_sums(s, loss, n_correct, len(idx))
        now = time.monotonic()
        s.clock.add_step(now - t0, len(idx))
        if step_event_due(s, now):
            yield step_event(s, now)
    return False


def remaining_batches(s: Session):
    """Index batches of the epoch's steps not done yet: a new epoch draws its shuffle order
    and zeroes its sums; an epoch cancelled mid-way continues in its saved order."""
    import torch

    if s.perm is None:
        s.perm = torch.randperm(s.n_train, generator=s.gen_shuffle)
        s.loss_sum.zero_()
        s.correct.zero_()
        s.seen = 0
    perm, bs = s.perm.to(s.device), s.cfg.batch_size
    return (perm[k * bs:(k + 1) * bs] for k in range(s.prog.step_in_epoch, s.spe))


def update_weight_average(s: Session) -> None:
    """Fold the new weights into the exponential moving average, when the run keeps one."""
    if s.ema is not None:
        s.ema.update_parameters(s.model)


def add_to_epoch_sums(s: Session, loss, n_correct, n_images: int) -> None:
    """Count a finished step in the epoch's running sums and the progress."""
    s.loss_sum += loss
    s.correct += n_correct
    s.seen += n_images
    s.prog.global_step += 1
    s.prog.step_in_epoch += 1
    if not s.cuda:  # reading the loss is free on a CPU: catch NaN at once
        value = float(loss)
        if not math.isfinite(value):
            nan_failure(s)
        s.clock.loss_since_event += value


def step_event_due(s: Session, now: float) -> bool:
    """Whether to report: ``step_event_interval`` seconds since the last event, or the
    epoch's last step."""
    return now - s.clock.last_event >= s.cfg.step_event_interval or s.prog.step_in_epoch == s.spe


def step_event(s: Session, now: float) -> Step:
    """The Step event for the steps since the last one."""
    cfg, prog, clock = s.cfg, s.prog, s.clock
    if s.cuda:
        # One device sync per event, not per step: the running loss is read only here.
        mean_loss = float(s.loss_sum) / max(prog.step_in_epoch, 1)
        if not math.isfinite(mean_loss):
            nan_failure(s)
    else:
        mean_loss = clock.loss_since_event / max(clock.steps_since_event, 1)
    dt = max(now - clock.last_event, 1e-9)
    event = Step(epoch=prog.epoch + 1, epochs=cfg.epochs, step=prog.global_step, total_steps=s.total_steps,
                 epoch_step=prog.step_in_epoch, steps_per_epoch=s.spe, loss=mean_loss,
                 lr=s.optimizer.param_groups[0]["lr"], images_per_s=round(clock.images_since_event / dt, 1),
                 elapsed_s=round(clock.elapsed(), 3),
                 eta_s=clock.eta(s.total_steps - prog.global_step, cfg.epochs - prog.epoch))
    clock.event_sent(now)
    return event


def nan_failure(s: Session) -> None:
    """Stop the run: the loss is no longer finite."""
    prog = s.prog
    last = f", last good model: last.safetensors (epoch {prog.epoch})" if prog.epoch else ""
    raise TrainingError("nan_loss", f"training loss became NaN/inf in epoch {prog.epoch + 1} "
                        f"(step {prog.global_step}); the run stopped{last}",
                        hint=f"lower --learning-rate (now {s.cfg.learning_rate:g}) or check the data")


def end_epoch(s: Session) -> EpochEnd:
    """Validate, calibrate, step per-epoch schedulers, pick the best model, save model
    files and state; returns the EpochEnd event."""
    from mnist_desktop.core.checkpoint import save_model
    from training.evaluate import predict_logits

    cfg, prog, clock = s.cfg, s.prog, s.clock
    t_val = time.monotonic()
    record = close_epoch(s)
    if s.n_val:
        logits = predict_logits(s.saved_model, s.x_val, cfg.mean, cfg.std, cfg.eval_batch_size)
        record.update(validation_metrics(logits, s.y_val))
    step_epoch_scheduler(s, record)
    is_best = update_best(prog, record, cfg.select_metric)
    if cfg.patience and s.n_val and prog.bad_epochs >= cfg.patience and prog.epoch < cfg.epochs:
        prog.stop_reason = "early_stopping"
    elif prog.epoch >= cfg.epochs:
        prog.stop_reason = "completed"
    meta = model_meta(s, record)
    save_model(s.last_path, s.saved_model, meta)
    if is_best:
        save_model(s.best_path, s.saved_model, meta)
    record["time_s"] = round(clock.epoch_time(), 3)
    prog.history.append(record)
    save_state(s)
    clock.add_validation(time.monotonic() - t_val)
    return epoch_end_event(s, record, is_best)


def close_epoch(s: Session) -> dict[str, Any]:
    """The epoch's history record from its training sums (validation still empty); the
    progress moves on to the next epoch."""
    train_loss = float(s.loss_sum) / s.spe  # mean of the epoch's step losses
    if not math.isfinite(train_loss):
        nan_failure(s)
    record: dict[str, Any] = {"epoch": s.prog.epoch + 1, "step": s.prog.global_step, "train_loss": train_loss,
                              "train_accuracy": float(s.correct) / max(s.seen, 1), "val_loss": None,
                              "val_accuracy": None, "lr": s.optimizer.param_groups[0]["lr"], "temperature": 1.0}
    s.perm = None
    s.prog.step_in_epoch = 0
    s.prog.epoch += 1
    return record


def step_epoch_scheduler(s: Session, record: dict[str, Any]) -> None:
    """Step a per-epoch schedule; plateau watches the validation loss (else the training loss)."""
    if s.scheduler is not None and not s.per_step:
        if s.cfg.scheduler == "plateau":
            s.scheduler.step(record["val_loss"] if record["val_loss"] is not None else record["train_loss"])
        else:
            s.scheduler.step()


def epoch_end_event(s: Session, record: dict[str, Any], is_best: bool) -> EpochEnd:
    cfg, prog, clock = s.cfg, s.prog, s.clock
    return EpochEnd(epoch=prog.epoch, epochs=cfg.epochs, step=prog.global_step, total_steps=s.total_steps,
                    train_loss=record["train_loss"], train_accuracy=record["train_accuracy"],
                    val_loss=record["val_loss"], val_accuracy=record["val_accuracy"],
                    lr=s.optimizer.param_groups[0]["lr"], temperature=record["temperature"], is_best=is_best,
                    best_epoch=prog.best_epoch, best_val_accuracy=prog.best_val_accuracy,
                    epoch_time_s=record["time_s"],
                    images_per_s=round(clock.train_images / max(clock.train_time, 1e-9), 1),
                    elapsed_s=round(clock.elapsed(), 3),
                    eta_s=0.0 if s.done else clock.eta(s.total_steps - prog.global_step, cfg.epochs - prog.epoch),
                    last_model=str(s.last_path), best_model=str(s.best_path))
