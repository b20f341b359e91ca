"""A whole training run as a generator of progress events, resumable at any moment.

:func:`train` yields :mod:`training.events` objects and checks ``should_cancel`` between
steps; the CLI turns them into a progress bar or JSON lines, the GUI into widget updates,
tests into assertions. It never raises for bad data, NaN loss or out-of-memory: those end
the stream with a :class:`~training.events.Failed` event carrying a one-line message
(:mod:`training.failures`). The run folder is described in :mod:`training.state`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from training.config import ConfigError, TrainConfig
from training.events import Cancelled, Comparison, Evaluation, Event, Failed, Finished, Log, Status
from training.failures import RunCancelled, failed_event
from training.loop import end_epoch, train_epoch
from training.report import evaluate_best, export, write_report
from training.session import Session
from training.state import load_state, new_run_dir, read_config, restore_state, save_state, write_json


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
    run = Run(should_cancel or (lambda: False))
    try:
        for event in run.execute(config, resume, device):
            run.record(event)
            yield event
    except Exception as e:  # every way a run stops early ends the stream with one event
        event = run.last_event(e)
        run.record_if_possible(event)  # the disk may be what failed: the event goes out anyway
        yield event
    finally:
        run.close()


class Run:
    """One call of :func:`train`: the phases of a run (config, data, training, report) and
    its event log ``progress.jsonl``.

    Parameters
    ----------
    should_cancel
        Polled between steps and phases.
    """

    def __init__(self, should_cancel: Callable[[], bool]):
        self.should_cancel = should_cancel
        self.cfg: TrainConfig | None = None
        self.dir: Path | None = None
        self.device: str | None = None
        self._log = None
        self._log_failed = False
        self._pending: list[str] = []
        self.compare_set = None      # a fine-tune's held-out data (cfg.compare_data)

    # ------------------------------------------------------------------ phases
    def execute(self, config: TrainConfig | None, resume, device: str | None) -> Iterator[Event]:
        """The run's events up to ``Finished`` (or a mid-epoch ``Cancelled``); raises
        for everything that ends it otherwise."""
        cfg = self._config(config, resume, device)
        yield from self._set_up(cfg)
        data = yield from self._load_data(cfg)
        train_set, val_set, test_set, fingerprint, outliers = data
        self._check_cancel()  # before a run folder is made for nothing
        if resume is None:
            self.dir = new_run_dir(cfg)
            write_json(self.dir / "config.json", cfg.to_dict())
        yield from self._fit(cfg, train_set, val_set, test_set, fingerprint, resume is not None, outliers)

    def _config(self, config: TrainConfig | None, resume, device: str | None) -> TrainConfig:
        """The run's validated config: the given one, or the run folder's when resuming."""
        from mnist_desktop.core.models import available_architectures

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
        if cfg.arch not in available_architectures():
            raise ConfigError(f"unknown architecture {cfg.arch!r}; known: {', '.join(available_architectures())}")
        return cfg

    def _set_up(self, cfg: TrainConfig) -> Iterator[Event]:
        """Pick the device and the thread count."""
        import torch

        from mnist_desktop.core.torch_predictor import resolve_device

        self.device, message = resolve_device(cfg.device)
        if message:
            yield Log(level="warning", message=message)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)

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
        if cfg.compare_data:
            yield Status("data", f"loading held-out data {cfg.compare_data}")
            self.compare_set = yield from self._checked(D.load_source(
                cfg.compare_data, train=False, data_root=cfg.data_root, download=cfg.download,
                options=options, label_names=label_names))
        outliers = None
        if cfg.outlier_images:
            from training.calibration import outlier_exposure_images

            yield Status("data", f"generating {cfg.outlier_images} non-digits for outlier exposure "
                                 f"(training seeds {cfg.seed})")
            outliers, _, _ = outlier_exposure_images(cfg.outlier_images, seed=cfg.seed, opts=options)
        return train_set, val_set, test_set, full.fingerprint(), outliers

    def _fit(self, cfg: TrainConfig, train_set, val_set, test_set, fingerprint: str, resumed: bool,
             outliers=None):
        session = Session(cfg, self.device, self.dir, train_set, val_set, fingerprint, outliers)
        if resumed:
            for warning in restore_state(session, load_state(self.dir)):
                yield Log(level="warning", message=warning)
        yield session.started(resumed, test_set)
        while not session.done:
            cancelled = yield from train_epoch(session, self.should_cancel)
            if cancelled:
                save_state(session)
                yield Cancelled(run_dir=str(self.dir), epoch=session.prog.epoch + 1,
                                step=session.prog.global_step, resumable=True,
                                message=f"cancelled; continue with --resume {self.dir}")
                return
            yield end_epoch(session)
        yield from self._finish(session, val_set, test_set)

    def _finish(self, session: Session, val_set, test_set):
        """Evaluate the best model, write the report and plots, export; then Finished."""
        from mnist_desktop.core.checkpoint import load_model

        prog = session.prog
        self._check_cancel()
        yield Status("evaluate", "evaluating the best model")
        loaded = load_model(session.best_path)
        reports = evaluate_best(session, loaded, val_set, test_set)
        report, plots = write_report(session, loaded, reports, val_set, test_set)
        report_path = self.dir / "report.json"
        split = "test" if "test" in reports else "validation" if reports else ""
        if split:
            r = reports[split]
            yield Evaluation(split=split, data=r["data"], n=r["n"], accuracy=r["accuracy"], macro_f1=r["macro_f1"],
                             ece=r["ece"], misclassified=r["misclassified_count"], report=str(report_path),
                             plots=plots)
        if session.cfg.init_model:
            self._check_cancel()
            yield Status("evaluate", "measuring the model before and after fine-tuning")
            comparison = compare_models(session, loaded, val_set, self.compare_set)
            report["finetune"] = comparison.to_dict()
            write_json(report_path, report)
            yield comparison
        exports: dict[str, str] = {}
        for fmt in session.cfg.export:
            self._check_cancel()
            yield Status("export", f"exporting {fmt}")
            exported = export(loaded, fmt, self.dir)
            if exported.path:
                exports[fmt] = exported.path
            yield exported
        if exports:
            report["exports"] = exports
            write_json(report_path, report)
        metrics = {"val_accuracy": prog.best_val_accuracy, "val_loss": prog.best_val_loss}
        if "test" in reports:
            metrics.update(test_accuracy=reports["test"]["accuracy"], test_macro_f1=reports["test"]["macro_f1"],
                           test_ece=reports["test"]["ece"])
        yield Finished(run_dir=str(self.dir), reason=prog.stop_reason or "completed", epochs_done=prog.epoch,
                       best_epoch=prog.best_epoch, best_model=str(session.best_path),
                       last_model=str(session.last_path), report=str(report_path), metrics=metrics,
                       exports=exports, elapsed_s=round(session.clock.elapsed(), 3))

    # ------------------------------------------------------------------ ending
    def last_event(self, e: Exception) -> Cancelled | Failed:
        """The event that ends a run stopped by ``e``: cancelled between phases, or failed."""
        if isinstance(e, RunCancelled):
            resumable = self.has_state()
            return Cancelled(run_dir=self.dir_str, resumable=resumable,
                             message=f"cancelled; continue with --resume {self.dir}" if resumable else "cancelled")
        return failed_event(e, self.dir, self.has_state(), self.device, self.cfg.batch_size if self.cfg else 0)

    @property
    def dir_str(self) -> str | None:
        return str(self.dir) if self.dir is not None else None

    def has_state(self) -> bool:
        return self.dir is not None and (self.dir / "state.pt").exists()

    def _check_cancel(self) -> None:
        if self.should_cancel():
            raise RunCancelled()

    def _checked(self, loader):
        """``yield from`` a data loader, checking for cancellation after each event."""
        while True:
            try:
                event = next(loader)
            except StopIteration as stop:
                return stop.value
            yield event
            self._check_cancel()

    # ------------------------------------------------------------------ logging
    def record(self, event: Event) -> None:
        """Append the event to progress.jsonl (buffered until the run folder exists).

        Raises OSError (a full disk...) naming the file; the log is not written again.
        """
        if self._log_failed:
            return
        line = event.to_json()
        if self._log is None:
            self._pending.append(line)
            if self.dir is None:
                return
            lines, self._pending = self._pending, []
        else:
            lines = [line]
        path = self.dir / "progress.jsonl"
        try:
            if self._log is None:
                self._log = open(path, "ab", buffering=0)  # unbuffered: nothing left to flush later
                if self._log.tell() and not _ends_with_newline(path):
                    lines.insert(0, "")  # a line cut short by an earlier full disk stays apart
            append(self._log, "".join(ln + "\n" for ln in lines).encode("utf-8"))
        except OSError as e:
            self._log_failed = True
            raise OSError(e.errno, e.strerror, str(path)) from e

    def record_if_possible(self, event: Event) -> None:
        """:meth:`record`, ignoring a failure to write."""
        try:
            self.record(event)
        except OSError:
            pass

    def close(self) -> None:
        if self._log is not None:
            try:
                self._log.close()
            except OSError:
                pass
            self._log = None


def compare_models(session: Session, after, val_set, held_out) -> Comparison:
    """Accuracy (argmax) of the fine-tune's starting model and of its result ``after`` on
    the validation data and the held-out data (either may be empty or None)."""
    import numpy as np
    import torch

    from mnist_desktop.core.checkpoint import load_model
    from training.evaluate import predict_logits

    cfg = session.cfg
    before = load_model(cfg.init_model)
    sets = {"validation": val_set, "held_out": held_out}
    out = Comparison(init_model=cfg.init_model)
    for name, data in sets.items():
        if data is None or len(data) == 0:
            continue
        out.data[name] = "validation split" if name == "validation" else data.description
        x = torch.from_numpy(np.ascontiguousarray(data.images)).to(session.device)
        for which, loaded in (("before", before), ("after", after)):
            model = loaded.model.to(session.device)
            pred = predict_logits(model, x, cfg.mean, cfg.std, cfg.eval_batch_size).argmax(1).cpu().numpy()
            correct = int((pred == data.labels).sum())
            getattr(out, which)[name] = {"n": len(data), "correct": correct, "accuracy": correct / len(data)}
    return out


def append(f, data: bytes) -> None:
    """Write all of ``data`` to the unbuffered file ``f`` (a write may be partial)."""
    view = memoryview(data)
    while view:
        n = f.write(view)
        view = view[n:]


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, 2)
        return f.read(1) == b"\n"
