"""``python -m training``: train a model from a recipe, with a progress bar or JSON lines.

The command parses its flags into a :class:`~training.config.TrainConfig` (recipe preset +
overrides), runs :func:`training.engine.train` and shows its events: a progress bar on
stderr, or with ``--progress-json`` one JSON object per line on stdout (protocol in
:mod:`training.events`). Ctrl-C (SIGINT) or SIGTERM cancels cleanly: the run saves its
state and ``--resume RUN_DIR`` continues it. With ``--control-stdin`` a line ``cancel`` on
stdin does the same (for parent processes on any platform).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from typing import Any, Sequence

from training.config import ConfigError, TrainConfig
from training.events import PROTOCOL_VERSION, Failed
from training.recipes import RECIPES, recipe_config, recipes_help

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 130

EPILOG = f"""\
recipes:
{recipes_help()}

data (--data, --extra-data, --test-data):
  PATH                 IDX folder (train / train-5k / test splits) or labelled image
                       folder (PATH/<label>/*.png), images go through the app's preprocessing
  corrections:[DIR]    the app's corrected drawings (default: the user data folder)
  torchvision:NAME     mnist, fashion-mnist, kmnist, emnist-balanced, emnist-letters,
                       emnist-digits (downloaded into --data-root when online)
  Validation data is a seeded part of the training data (--val-fraction); the test data
  is only measured at the end, never used to pick a model.

examples:
  python -m training --recipe flagship --data ../shared/data/mnist --test-data ../shared/data/mnist
  python -m training --recipe mlp --data torchvision:mnist --epochs 3 --export torchscript,onnx
  python -m training --resume runs/flagship-20260101-120000

output: a run folder (--output, default runs/) with config.json, progress.jsonl,
last.safetensors, best.safetensors, state.pt, report.json/.txt and PNG plots.
--progress-json prints protocol v{PROTOCOL_VERSION} events (see training/events.py) on stdout.

exit status: 0 finished, 1 training failed (NaN loss, out of memory, export error),
2 bad usage, config or data, 130 cancelled (resumable)
"""

# flag -> TrainConfig field, for plain value overrides
_FIELDS = {
    "data": "data", "data_root": "data_root", "split": "split", "test_data": "test_data",
    "test_split": "test_split", "limit": "limit", "arch": "arch", "epochs": "epochs",
    "batch_size": "batch_size", "learning_rate": "learning_rate", "optimizer": "optimizer",
    "momentum": "momentum", "weight_decay": "weight_decay", "scheduler": "scheduler",
    "label_smoothing": "label_smoothing", "mean": "mean", "std": "std", "seed": "seed",
    "device": "device", "threads": "threads", "val_fraction": "val_fraction", "val_seed": "val_seed", "val_fold": "val_fold", "patience": "patience",
    "select_metric": "select_metric", "output": "output", "name": "name",
    "uncertainty_threshold": "uncertainty_threshold", "eval_batch_size": "eval_batch_size",
    "step_event_interval": "step_event_interval", "distill_weight": "distill_weight",
    "distill_temperature": "distill_temperature", "outlier_images": "outlier_images",
    "outlier_weight": "outlier_weight", "ema_decay": "ema_decay",
}
_AUGMENT = ("rotation", "translate", "scale", "shear", "elastic_alpha", "elastic_sigma", "elastic_p", "thickness",
            "european")
_RESUME_OK = {"device", "threads", "step_event_interval"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Train an mnist-desktop model from a named recipe; flags override the recipe.")
    p.add_argument("--recipe", default=None, metavar="NAME", help=f"one of: {', '.join(RECIPES)} (default flagship)")
    p.add_argument("--config", metavar="FILE", help="start from a TrainConfig JSON file (e.g. a run's config.json)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run exactly")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    p.add_argument("--list-recipes", action="store_true", help="list the recipes and exit")

    d = p.add_argument_group("data")
    d.add_argument("--data", metavar="SPEC", help="training data (see below)")
    d.add_argument("--extra-data", action="append", metavar="SPEC", help="more training data (repeatable)")
    d.add_argument("--data-root", metavar="DIR", help="torchvision dataset folder")
    d.add_argument("--no-download", action="store_true", help="never download torchvision datasets")
    d.add_argument("--split", metavar="NAME", help="IDX training split (default: train, then train-5k)")
    d.add_argument("--test-data", metavar="SPEC", help="data for the final report (measured only)")
    d.add_argument("--test-split", metavar="NAME", help="IDX test split (default test)")
    d.add_argument("--labels", metavar="A,B,...", help="class names (default: from the data)")
    d.add_argument("--limit", type=int, metavar="N", help="use a seeded subset of N images of --data")
    d.add_argument("--val-seed", type=int, metavar="N", help="seed of the validation split (default: --seed)")
    d.add_argument("--val-fold", type=int, metavar="K",
                   help="cross-validation: validate on fold K of round(1/val-fraction) stratified folds")
    d.add_argument("--val-fraction", type=float, metavar="F", help="fraction held out for validation")

    m = p.add_argument_group("model and optimization")
    m.add_argument("--arch", help="architecture from the model zoo")
    m.add_argument("--arch-arg", action="append", metavar="KEY=VALUE", help="architecture argument (repeatable)")
    m.add_argument("--epochs", type=int, metavar="N")
    m.add_argument("--batch-size", type=int, metavar="N")
    m.add_argument("--learning-rate", "--lr", type=float, dest="learning_rate", metavar="LR")
    m.add_argument("--optimizer", choices=["sgd", "adam", "adamw"])
    m.add_argument("--momentum", type=float, metavar="M")
    m.add_argument("--weight-decay", type=float, metavar="WD")
    m.add_argument("--scheduler", choices=["none", "onecycle", "plateau", "cosine", "step"])
    m.add_argument("--scheduler-arg", action="append", metavar="KEY=VALUE", help="scheduler argument (repeatable)")
    m.add_argument("--label-smoothing", type=float, metavar="EPS")
    m.add_argument("--patience", type=int, metavar="N", help="early stopping after N epochs without a new best (0 = off)")
    m.add_argument("--select-metric", choices=["val_accuracy", "val_loss", "last"],
                   help="which epoch's model is best.safetensors: best validation accuracy (default), "
                        "lowest validation loss, or simply the last one")
    m.add_argument("--ema-decay", type=float, metavar="D",
                   help="keep a moving average of the weights (decay D per step, e.g. 0.998); "
                        "the average is what is validated and saved (0 = off)")
    m.add_argument("--teacher", action="append", metavar="MODEL",
                   help="distill from this model file (repeatable: the teachers' mean prediction)")
    m.add_argument("--distill-weight", type=float, metavar="W", help="weight of the distillation loss, 0..1")
    m.add_argument("--distill-temperature", type=float, metavar="T", help="softening temperature (default 2)")
    m.add_argument("--outlier-images", type=int, metavar="N",
                   help="outlier exposure: N generated non-digits trained towards 'no idea' (uniform)")
    m.add_argument("--outlier-weight", type=float, metavar="W", help="weight of the outlier-exposure loss (default 0.5)")

    a = p.add_argument_group("augmentation (on the training device)")
    a.add_argument("--rotation", type=float, metavar="DEG")
    a.add_argument("--translate", type=float, metavar="FRAC")
    a.add_argument("--scale", type=float, metavar="FRAC")
    a.add_argument("--shear", type=float, metavar="DEG")
    a.add_argument("--elastic-alpha", type=float, metavar="PX", help="RMS elastic displacement in pixels")
    a.add_argument("--elastic-sigma", type=float, metavar="PX")
    a.add_argument("--elastic-p", type=float, metavar="P")
    a.add_argument("--thickness", type=float, metavar="F", help="stroke thickness change, 0..1")
    a.add_argument("--european", type=float, metavar="P",
                   help="share of 1s drawn with a European flag/foot and of 7s with a crossbar, 0..1")
    a.add_argument("--no-augment", action="store_true", help="switch all augmentation off")

    i = p.add_argument_group("input")
    i.add_argument("--mean", type=float, metavar="M", help="normalization mean")
    i.add_argument("--std", type=float, metavar="S", help="normalization std")
    i.add_argument("--blur-sigma", type=float, metavar="PX", help="preprocessing Gaussian blur (applied at inference too)")
    i.add_argument("--preprocess-option", action="append", metavar="KEY=VALUE",
                   help="any PreprocessOptions field (repeatable)")

    r = p.add_argument_group("run")
    r.add_argument("--seed", type=int, metavar="N")
    r.add_argument("--device", metavar="DEV", help="auto, cpu, cuda or cuda:N")
    r.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch (default: torch's choice)")
    r.add_argument("--nice", type=int, default=0, metavar="N",
                   help="run below normal CPU priority (as nice -n N; Linux also SCHED_BATCH, SCHED_IDLE at 19), so an "
                        "app that started the run stays responsive")
    r.add_argument("--output", metavar="DIR", help="parent folder of run folders (default runs)")
    r.add_argument("--name", help="run folder name prefix (default: the recipe)")
    r.add_argument("--export", metavar="FORMATS", help="torchscript,onnx: export the best model")
    r.add_argument("--uncertainty-threshold", type=float, metavar="P")
    r.add_argument("--eval-batch-size", type=int, metavar="N")
    r.add_argument("--step-event-interval", type=float, metavar="S", help="seconds between step events")
    r.add_argument("--progress-json", action="store_true", help="print JSON-lines events on stdout")
    r.add_argument("--control-stdin", action="store_true", help="a line 'cancel' on stdin cancels the run")
    r.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    return p


def _key_values(items: Sequence[str] | None, flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields that the command line sets."""
    o: dict[str, Any] = {f: getattr(args, a) for a, f in _FIELDS.items() if getattr(args, a) is not None}
    if args.extra_data:
        o["extra_data"] = list(args.extra_data)
    if args.teacher:
        o["teachers"] = list(args.teacher)
    if args.no_download:
        o["download"] = False
    if args.labels:
        o["labels"] = [s.strip() for s in args.labels.split(",") if s.strip()]
    if args.export:
        o["export"] = [s.strip().lower() for s in args.export.split(",") if s.strip()]
    if args.arch_arg:
        o["arch_args"] = _key_values(args.arch_arg, "--arch-arg")
    if args.scheduler_arg:
        o["scheduler_args"] = _key_values(args.scheduler_arg, "--scheduler-arg")
    pre = _key_values(args.preprocess_option, "--preprocess-option")
    if args.blur_sigma is not None:
        pre["blur_sigma"] = args.blur_sigma
    if pre:
        o["preprocess"] = pre
    aug = {k: getattr(args, k) for k in _AUGMENT if getattr(args, k) is not None}
    if args.no_augment:
        aug.update(rotation=0.0, translate=0.0, scale=0.0, shear=0.0, elastic_alpha=0.0, thickness=0.0,
                   european=0.0)
    if aug:
        o["augment"] = aug
    return o


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Recipe (or ``--config`` file) plus command-line overrides, validated."""
    overrides = overrides_from_args(args)
    if args.name is not None and not args.name:
        raise ConfigError("--name '' is empty: a run name is one folder name")
    if args.config:
        try:
            with open(args.config, encoding="utf-8") as f:
                base = TrainConfig.from_json(f.read())
        except OSError as e:
            raise ConfigError(f"cannot read {args.config}: {e.strerror or e}") from None
        if args.recipe:
            raise ConfigError("give either --recipe or --config, not both")
    else:
        base = recipe_config(args.recipe or "flagship")
    # Dict-valued fields extend the recipe's (e.g. --arch-arg dropout=0.2 keeps its width),
    # unless the architecture or scheduler they belong to changes.
    if "preprocess" in overrides:
        overrides["preprocess"] = {**base.preprocess, **overrides["preprocess"]}
    for owner, key in (("arch", "arch_args"), ("scheduler", "scheduler_args")):
        if overrides.get(owner, getattr(base, owner)) != getattr(base, owner):
            overrides.setdefault(key, {})
        elif key in overrides:
            overrides[key] = {**getattr(base, key), **overrides[key]}
    return base.replace(**overrides) if overrides else base


# --------------------------------------------------------------------------- output

def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _pct(x: float | None) -> str:
    return "  n/a " if x is None else f"{100 * x:6.2f}%"


class ProgressPrinter:
    """Human output on stderr: a one-line progress bar (redrawn on a terminal) and one line
    per epoch."""

    def __init__(self, stream=None, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.quiet = quiet
        self._bar = False

    def _line(self, text: str) -> None:
        if self._bar:
            self.stream.write("\r\033[K")
            self._bar = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def _redraw(self, text: str) -> None:
        if self.quiet or not self.tty:
            return
        self.stream.write("\r\033[K" + text)
        self.stream.flush()
        self._bar = True

    def show(self, ev) -> None:
        t = ev.type
        if t == "status":
            if ev.total:
                self._redraw(f"{ev.message}: {ev.done}/{ev.total}")
            else:
                self._line(ev.message)
        elif t == "log":
            self._line(f"{ev.level}: {ev.message}")
        elif t == "run_started":
            what = "resuming" if ev.resumed else "training"
            self._line(f"{what} {ev.recipe} ({ev.arch}, {ev.num_parameters:,} parameters) on {ev.device}: "
                       f"{ev.n_train} train / {ev.n_val} validation images, {ev.epochs} epochs x "
                       f"{ev.steps_per_epoch} steps of {ev.batch_size}\nrun folder: {ev.run_dir}")
        elif t == "step":
            frac = ev.epoch_step / max(ev.steps_per_epoch, 1)
            bar = "#" * int(frac * 20) + "-" * (20 - int(frac * 20))
            self._redraw(f"epoch {ev.epoch}/{ev.epochs} [{bar}] {100 * frac:3.0f}%  loss {ev.loss:.4f}  "
                         f"lr {ev.lr:.2e}  {ev.images_per_s:,.0f} img/s  ETA {_fmt_time(ev.eta_s)}")
        elif t == "epoch_end":
            val = "" if ev.val_loss is None else f"  val loss {ev.val_loss:.4f} acc {_pct(ev.val_accuracy)}"
            self._line(f"epoch {ev.epoch:>3}/{ev.epochs}  train loss {ev.train_loss:.4f} acc "
                       f"{_pct(ev.train_accuracy)}{val}  lr {ev.lr:.2e}  {ev.epoch_time_s:.1f}s"
                       f"{'  *best' if ev.is_best else ''}  ETA {_fmt_time(ev.eta_s)}")
        elif t == "evaluation":
            self._line(f"{ev.split} ({ev.data}): accuracy {_pct(ev.accuracy).strip()}, macro F1 {ev.macro_f1:.4f}, "
                       f"ECE {100 * ev.ece:.2f}%, {ev.misclassified} misclassified\nreport: {ev.report}")
        elif t == "exported":
            self._line(f"exported {ev.format}: {ev.path}" if ev.path else f"export {ev.format} failed: {ev.error}")
        elif t == "finished":
            self._line(f"finished ({ev.reason}) after {ev.epochs_done} epochs in {_fmt_time(ev.elapsed_s)}; "
                       f"best epoch {ev.best_epoch}\nbest model: {ev.best_model}")
        elif t == "cancelled":
            self._line(ev.message or "cancelled")
        elif t == "failed":
            self._line(f"training: error: {ev.message}" + (f"\n  hint: {ev.hint}" if ev.hint else ""))


class _CancelFlag:
    """Set by SIGINT/SIGTERM (a second Ctrl-C aborts at once) or a ``cancel`` stdin line."""

    def __init__(self):
        self.event = threading.Event()
        self._previous: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.event.is_set()

    def _handler(self, signum, frame):
        if self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.event.set()
        print("\ncancelling after the current step (Ctrl-C again to abort)...", file=sys.stderr, flush=True)

    def install(self, control_stdin: bool) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        if control_stdin:
            threading.Thread(target=self._read_stdin, daemon=True).start()

    def _read_stdin(self) -> None:
        for line in sys.stdin:
            if line.strip().lower() == "cancel":
                self.event.set()
                return

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _emit(ev, cancel: _CancelFlag) -> None:
    """One protocol line on stdout. When the reader has gone away (broken pipe: the GUI
    closed or crashed), cancel the run so it saves its state instead of training blind."""
    try:
        sys.stdout.write(ev.to_json() + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):  # ValueError: stdout already closed
        cancel.event.set()
        try:
            # Point stdout at the null device so later writes and the exit flush stay quiet.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = build_parser()
    if prog:
        parser.prog = prog
    args = parser.parse_args(argv)
    if args.list_recipes:
        print(recipes_help())
        return EXIT_OK

    def fail(message: str) -> int:
        if args.progress_json:
            print(Failed(kind="config", message=message).to_json(), flush=True)
        print(f"training: error: {message}", file=sys.stderr)
        return EXIT_USAGE

    try:
        if args.resume:
            extra = set(overrides_from_args(args)) - _RESUME_OK
            if extra or args.recipe or args.config:
                return fail("--resume continues a run with its own settings; only --device, --threads "
                            f"and output flags may be given (remove: {', '.join(sorted(extra)) or '--recipe/--config'})")
            config = None
        else:
            config = config_from_args(args)
            if args.print_config:
                print(config.to_json())
                return EXIT_OK
            if not config.data:
                return fail("no training data: give --data PATH or --data torchvision:NAME")
    except ConfigError as e:
        return fail(str(e))

    if args.nice > 0:
        from mnist_desktop.core.priority import lower_priority
        lower_priority(args.nice)

    from training.engine import train

    printer = ProgressPrinter(quiet=args.quiet)
    cancel = _CancelFlag()
    cancel.install(args.control_stdin)
    code = EXIT_FAILED
    export_failed = False
    try:
        for ev in train(config, resume=args.resume, device=args.device if args.resume else None,
                        should_cancel=cancel):
            if args.progress_json:
                _emit(ev, cancel)
            else:
                printer.show(ev)
            if ev.type == "finished":
                code = EXIT_FAILED if export_failed else EXIT_OK
            elif ev.type == "exported" and ev.error:
                export_failed = True
                if args.progress_json:
                    printer.show(ev)
            elif ev.type == "cancelled":
                code = EXIT_CANCELLED
            elif ev.type == "failed":
                code = EXIT_USAGE if ev.kind in ("config", "data", "download") else EXIT_FAILED
                if args.progress_json:
                    printer.show(ev)  # the one-line message on stderr as well
        return code
    except KeyboardInterrupt:
        print("training: aborted", file=sys.stderr)
        return EXIT_CANCELLED
    finally:
        cancel.uninstall()


if __name__ == "__main__":
    sys.exit(main())
