"""Average trained flagship models into one model file.

    python -m training.ensemble C.safetensors D.safetensors --output resources/models/default.safetensors

The members' logits are averaged, folded exactly into one network
(:func:`mnist_desktop.core.models.fold_ensemble`: grouped convolutions, one forward pass),
and the result goes through the flagship's last stages: calibration on the validation
split (temperature and uncertainty rule), the measurements, an ONNX copy and a model card.

The members must be ``flagship`` networks of one width with the same labels, normalization
and preprocessing, and they must share one validation split: calibration fits on it, so it
must hold no training image of any member. Anything else is refused with one line.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

COMMAND = "python -m training.ensemble"
# What decides a run's validation samples (training.data.load_training_data).
SPLIT_KEYS = ("data", "data_root", "split", "limit", "extra_data", "labels", "val_fraction", "val_fold")


class EnsembleError(ValueError):
    """Members that cannot be averaged into one model; the message says why."""


def split_of(cfg: dict[str, Any]) -> tuple:
    """What decides the validation samples of the run that recorded ``cfg``."""
    from training.config import recorded_split_seed

    key = tuple(repr(cfg.get(k)) for k in SPLIT_KEYS)
    # --limit thins the data with the run's seed before the split.
    return key + (recorded_split_seed(cfg), cfg.get("seed") if cfg.get("limit") else None)


def fold_files(paths: list[str | Path], description: str | None = None):
    """``(model, meta)``: the members in ``paths`` averaged in one network, described by a
    fresh :class:`ModelMeta` (no uncertainty rule yet: calibration sets it). Raises
    :class:`EnsembleError` for members that cannot be averaged, and CheckpointError for
    unusable files."""
    from mnist_desktop.core.checkpoint import ModelMeta, UncertaintyRule, load_model
    from mnist_desktop.core.models import fold_ensemble
    from mnist_desktop.core.onnx_predictor import file_sha256

    if len(paths) < 2:
        raise EnsembleError("an ensemble needs at least two member models")
    loaded = [load_model(p) for p in paths]
    first = loaded[0].meta
    for path, member in zip(paths, loaded):
        m = member.meta
        name = Path(path).name
        if m.arch != "flagship":
            raise EnsembleError(f"{name}: architecture {m.arch!r}; only flagship models can be averaged")
        if m.arch_args != first.arch_args:
            raise EnsembleError(f"{name}: {m.arch_args} differs from the first member's {first.arch_args}")
        for field, what in (("labels", "class labels"), ("normalization", "normalization"),
                            ("preprocess", "preprocessing options")):
            if getattr(m, field) != getattr(first, field):
                raise EnsembleError(f"{name}: other {what} than the first member")
        cfg = (m.training or {}).get("config")
        if not isinstance(cfg, dict):
            raise EnsembleError(f"{name}: records no training run, so its validation split is unknown")
        if split_of(cfg) != split_of(first.training["config"]):
            raise EnsembleError(f"{name}: trained with another validation split than the first member; "
                                "calibration would see its training images")
    model = fold_ensemble([m.model for m in loaded])
    members = [{"file": Path(p).name, "sha256": file_sha256(p), "description": m.meta.description,
                "config": m.meta.training["config"],
                "test_accuracy": m.meta.metrics.get("test_accuracy"),
                "val_loss": (m.meta.metrics.get("calibration", {}).get("validation", {}) or {}).get("nll_uncalibrated")}
               for p, m in zip(paths, loaded)]
    meta = ModelMeta(
        arch="flagship_ensemble", arch_args={"width": first.arch_args.get("width", 16), "members": len(loaded)},
        labels=list(first.labels), normalization=first.normalization, preprocess=dict(first.preprocess),
        uncertainty=UncertaintyRule(),
        name="flagship",
        description=description or (
            f"Flagship: {len(loaded)} compact CNNs averaged in one network, each trained on the 5,000-image "
            "MNIST subset with heavy augmentation, distilled from a wider ensemble, with outlier exposure "
            "to generated non-digits; calibrated."),
        # ``config`` is the first member's run: every member shares its validation split, which
        # calibration reads from here (training.robustness.validation_split).
        training={"config": first.training["config"], "ensemble": {"members": members}},
        data_fingerprint=first.data_fingerprint,
    )
    return model, meta


def main(argv: list[str] | None = None) -> int:
    from training import flagship

    ap = argparse.ArgumentParser(prog=COMMAND, description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("members", nargs="+", help="flagship model files (2 or more)")
    ap.add_argument("--output", required=True, help="the averaged, calibrated model file")
    ap.add_argument("--test-data", default="../shared/data/mnist",
                    help="IDX folder with the MNIST test set (measurement only)")
    ap.add_argument("--member-commands", nargs="*", default=None, metavar="COMMAND",
                    help="for the model card: the command that trained each member, in order")
    ap.add_argument("--target-digit-rate", type=float, default=0.005,
                    help="share of validation digits the uncertainty rule may flag")
    ap.add_argument("--n-digits", type=int, default=5000, help="generated digit drawings to measure")
    ap.add_argument("--n-nondigits", type=int, default=3000, help="generated evaluation non-digits")
    ap.add_argument("--n-calibration", type=int, default=3000, help="generated calibration non-digits")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    args = ap.parse_args(argv)
    if args.member_commands is not None and len(args.member_commands) != len(args.members):
        ap.error("--member-commands needs one command per member")
    import torch

    from mnist_desktop.core.checkpoint import CheckpointError, save_model

    if args.threads:
        torch.set_num_threads(args.threads)
    command = COMMAND + " " + shlex.join(argv if argv is not None else sys.argv[1:])
    t0 = time.time()
    try:
        model, meta = fold_files(args.members)
    except (EnsembleError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.member_commands:
        for member, cmd in zip(meta.training["ensemble"]["members"], args.member_commands):
            member["command"] = cmd
    flagship.log(f"folded {len(args.members)} members into one {meta.arch} {meta.arch_args}")
    with tempfile.TemporaryDirectory(prefix="ensemble-") as tmp:
        folded = Path(tmp) / "folded.safetensors"
        save_model(folded, model, meta)
        flagship.finish(folded, args, command, t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
