"""``python -m training.cv``: k-fold cross-validation of a training command.

    python -m training.cv --folds 5 --jobs 2 --output runs/cv --name thick0 -- \\
        --recipe flagship --data ../shared/data/mnist --thickness 0 --threads 1

Everything after ``--`` is a ``python -m training`` command line. Each fold runs it as a
separate process with ``--val-fraction 1/K --val-fold k`` (stratified, seeded folds that
cover every training sample once), so a recipe choice is judged on all the training
data held out in turn instead of one small validation split: on the 5,000-image MNIST
subset one 500-image split moves in steps of 0.2 points, the five folds together in steps
of 0.02. Optionally each fold's model is also measured on ``--drawings`` generated
stroke-drawn digits (the ``calibration`` seeds of :mod:`training.synth`, never
the evaluation seeds), through both the stroke and the image path.

The summary (out-of-fold accuracy, per-fold figures, per-class recall, drawings) is
printed and written to ``<summary-dir>/<name>.cv.json`` (default ``docs/results/cv``,
where ``python -m training.zoo`` renders it; the fold runs stay under ``--output``). It
records the training command (``command``) and the cross-validation command that wrote it
(``written_by``). The test set is never touched: leave ``--test-data`` out of the command.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fold_command(train_args: list[str], folds: int, fold: int, out_dir: Path, name: str) -> list[str]:
    from mnist_desktop.core.app_command import app_command

    # The app's own training subcommand, so that cross-validation also runs from the frozen
    # program (which has no ``python -m``).
    return [*app_command("train", *train_args), "--val-fraction", repr(1.0 / folds),
            "--val-fold", str(fold), "--output", str(out_dir), "--name", f"{name}-fold{fold}", "--progress-json"]


def _run_dir(log_path: Path) -> Path | None:
    """The run folder of a finished fold, from its JSON-lines progress."""
    run_dir = None
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict) and ev.get("type") == "finished":
            run_dir = ev.get("run_dir")
    return Path(run_dir) if run_dir else None


def run_folds(train_args: list[str], folds: int, jobs: int, out_dir: Path, name: str,
              only: list[int] | None = None) -> dict[int, Path]:
    """Run the folds, ``jobs`` at a time; returns ``{fold: run_dir}``. A failed fold stops
    the whole cross-validation with its log's last lines."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pending = list(only if only is not None else range(folds))
    running: dict[int, tuple[subprocess.Popen, Path, Any]] = {}
    done: dict[int, Path] = {}
    t0 = time.time()
    try:
        while pending or running:
            while pending and len(running) < jobs:
                k = pending.pop(0)
                log_path = out_dir / f"{name}-fold{k}.jsonl"
                fh = open(log_path, "w", encoding="utf-8")
                err = open(out_dir / f"{name}-fold{k}.log", "w", encoding="utf-8")
                cmd = fold_command(train_args, folds, k, out_dir, name)
                log(f"fold {k}: {' '.join(cmd[1:])}")
                running[k] = (subprocess.Popen(cmd, stdout=fh, stderr=err, stdin=subprocess.DEVNULL), log_path,
                              (fh, err))
            time.sleep(1.0)
            for k, (proc, log_path, files) in list(running.items()):
                if proc.poll() is None:
                    continue
                for f in files:
                    f.close()
                del running[k]
                run_dir = _run_dir(log_path)
                if proc.returncode != 0 or run_dir is None:
                    tail = (out_dir / f"{name}-fold{k}.log").read_text(errors="replace").strip().splitlines()[-5:]
                    raise SystemExit(f"fold {k} failed (exit {proc.returncode}):\n" + "\n".join(tail))
                done[k] = run_dir
                log(f"fold {k}: finished in {(time.time() - t0) / 60:.1f} min -> {run_dir}")
    finally:
        for proc, _, files in running.values():
            proc.terminate()
            for f in files:
                f.close()
    return done


def summarize(run_dirs: dict[int, Path], drawings: int = 0, threads: int = 1) -> dict[str, Any]:
    """Out-of-fold figures from the folds' ``report.json`` (and generated drawings)."""
    folds, confusion = [], None
    for k, run_dir in sorted(run_dirs.items()):
        report = json.loads((Path(run_dir) / "report.json").read_text(encoding="utf-8"))
        val = report["validation"]
        cm = np.asarray(val["confusion_matrix"], np.int64)
        confusion = cm if confusion is None else confusion + cm
        row = {"fold": k, "run_dir": str(run_dir), "n": val["n"], "accuracy": val["accuracy"],
               "best_epoch": report.get("best_epoch"), "labels": val["labels"]}
        if drawings:
            row["drawings"] = _drawings(Path(run_dir) / "best.safetensors", drawings, threads)
        folds.append(row)
    n = int(confusion.sum())
    correct = int(np.trace(confusion))
    recall = confusion.diagonal() / np.maximum(confusion.sum(1), 1)
    out: dict[str, Any] = {
        "folds": folds, "n": n, "oof_accuracy": correct / n, "errors": n - correct,
        "per_class_recall": dict(zip(folds[0]["labels"], map(float, recall))),
        "confusion_matrix": confusion.tolist(),
    }
    if drawings:
        for key in ("stroke", "image"):
            out[f"drawings_{key}"] = float(np.mean([f["drawings"][key] for f in folds]))
        out["drawings_by_style"] = {
            s: float(np.mean([f["drawings"]["by_style"][s] for f in folds]))
            for s in folds[0]["drawings"]["by_style"]}
    return out


def _drawings(model_path: Path, n: int, threads: int) -> dict[str, Any]:
    import torch

    from mnist_desktop.core.torch_predictor import TorchPredictor
    from training import robustness

    torch.set_num_threads(max(1, threads))
    rep = robustness.digit_report(TorchPredictor.from_file(model_path, device="cpu"), n, 0, purpose="calibration")
    styles = rep["stroke"]["by_style"]
    return {"stroke": rep["stroke"]["accuracy"], "image": rep["image_accuracy"],
            "by_style": {s: (styles[s]["accuracy"] + rep["image_dark"]["by_style"][s]["accuracy"]
                             + rep["image_light"]["by_style"][s]["accuracy"]) / 3 for s in styles}}


def print_summary(name: str, s: dict[str, Any]) -> None:
    print(f"{name}: out-of-fold accuracy {100 * s['oof_accuracy']:.2f}% ({s['errors']} errors in {s['n']})")
    print("  folds: " + ", ".join(f"{100 * f['accuracy']:.2f}%" for f in s["folds"]))
    print("  recall: " + " ".join(f"{k}:{100 * v:.1f}" for k, v in s["per_class_recall"].items()))
    if "drawings_stroke" in s:
        print(f"  drawings (calibration seeds): stroke {100 * s['drawings_stroke']:.2f}%, "
              f"image {100 * s['drawings_image']:.2f}%")
        low = sorted(s["drawings_by_style"].items(), key=lambda kv: kv[1])[:5]
        print("  weakest styles: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in low))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    written_by = shlex.join(["python", "-m", "training.cv", *argv])
    train_args: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, train_args = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(prog="python -m training.cv", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=1, help="folds trained at the same time")
    ap.add_argument("--only", type=int, nargs="*", help="run only these folds")
    ap.add_argument("--output", default="runs/cv", help="folder of the fold runs")
    ap.add_argument("--summary-dir", default="docs/results/cv",
                    help="folder of the summary NAME.cv.json (training.zoo renders docs/results/cv)")
    ap.add_argument("--name", required=True, help="name of this variant")
    ap.add_argument("--drawings", type=int, default=0,
                    help="also measure each fold model on this many generated drawings (calibration seeds)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the drawings measurement")
    ap.add_argument("--summarize", nargs="*", metavar="RUN",
                    help="do not train: summarize these finished fold runs")
    args = ap.parse_args(argv)
    if args.folds < 2:
        ap.error("--folds must be at least 2")
    if any(a.startswith("--test-data") for a in train_args):
        ap.error("leave --test-data out: cross-validation never looks at the test set")
    out = Path(args.output)
    if args.summarize:
        run_dirs = dict(enumerate(map(Path, args.summarize)))
    else:
        if not train_args:
            ap.error("give the training command after --")
        run_dirs = run_folds(train_args, args.folds, args.jobs, out, args.name, args.only)
    summary = summarize(run_dirs, args.drawings, args.threads)
    summary["command"] = train_args
    summary["written_by"] = written_by
    summary_dir = Path(args.summary_dir)
    summary_dir.mkdir(parents=True, exist_ok=True)
    path = summary_dir / f"{args.name}.cv.json"
    path.write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print_summary(args.name, summary)
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
