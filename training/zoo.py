"""Train every reference recipe on the same data and write the results table.

    python -m training.zoo --data ../shared/data/mnist     # -> docs/results/MODELS.md, models.json

Each recipe runs with its published settings (:mod:`training.recipes`) through the same
training engine as ``python -m training``; validation comes from the training data, and
the test set is measured once per model at the end. The table lists test accuracy, macro
F1, calibration error, parameters, training time on this machine and single-image CPU
latency (one thread, median). The shipped default model is measured the same way and
listed beside them. The table's first line names the command that wrote it; the figures
also go to ``docs/results/models.json``. The cross-validation summaries in
``docs/results/cv`` (``python -m training.cv``) get a section of their own, with links to
the decision records in ``docs/decisions``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from training.recipes import RECIPES, recipe_config

REFERENCE = ["mlp", "cnn_mlp", "mnistnet", "cnn3", "conv3_gap"]
PUBLISHED = {  # what each reference reports when trained on all 60,000 images
    "mlp": "92-96%", "cnn_mlp": "99.1%", "mnistnet": "99.30%", "cnn3": "99.35%", "conv3_gap": "~98%",
}


def single_image_latency_ms(model_path: str | Path, iterations: int = 500, backend: str = "torch",
                            rounds: int = 5) -> float:
    """Median forward + softmax time of one 28x28 image on one CPU thread; ``backend``
    ``onnx`` times the ONNX copy beside the model (what the app's canvas runs on a CPU).

    The ``iterations`` are split into ``rounds`` with a short pause between them and the
    lowest round median is reported (as ``timeit`` advises): on a shared machine one busy
    second otherwise moves the figure by 25% (0.46 to 0.58 ms, same model, minutes apart).
    """
    import numpy as np
    import torch

    from mnist_desktop.core.torch_predictor import TorchPredictor

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if backend == "onnx":
            from mnist_desktop.core.onnx_predictor import OnnxPredictor

            pred = OnnxPredictor(Path(model_path).with_suffix(".onnx"), 1, source=model_path)
        else:
            pred = TorchPredictor.from_file(model_path, "cpu")
        x = np.random.default_rng(0).random((1, 28, 28), dtype=np.float32)
        for _ in range(50):
            pred.probabilities(x)
        medians = []
        rounds = max(1, rounds)
        per_round = max(1, iterations // rounds)
        for r in range(rounds):
            if r:
                time.sleep(0.2)
            ts = []
            for _ in range(per_round):
                t0 = time.perf_counter()
                pred.probabilities(x)
                ts.append(time.perf_counter() - t0)
            medians.append(float(np.median(ts)))
        return min(medians) * 1e3
    finally:
        torch.set_num_threads(threads)


def measure_model(model_path: str | Path, data: str) -> dict[str, Any]:
    """Test metrics of a model file on the IDX ``test`` split (raw tensors)."""
    import numpy as np

    from mnist_desktop.core.data import load_idx_folder
    from mnist_desktop.core.metrics import classification_report
    from mnist_desktop.core.models import count_parameters
    from mnist_desktop.core.torch_predictor import TorchPredictor

    pred = TorchPredictor.from_file(model_path, "cpu")
    test = load_idx_folder(data, "test")
    images = test.images.astype(np.float32) / 255.0
    if pred.options.blur_sigma > 0:  # the recipe's preprocessing blur acts on 28x28 input too
        from mnist_desktop.core.preprocess import gaussian_blur
        images = gaussian_blur(images, pred.options.blur_sigma)
    probs = np.concatenate([pred.probabilities(images[i:i + 1000])[0] for i in range(0, len(images), 1000)])
    rep = classification_report(test.labels, probs, pred.labels)
    from mnist_desktop.core.models import build_model

    meta = pred.meta  # count the trained architecture, not the fused inference copy
    params = count_parameters(build_model(meta.arch, num_classes=meta.num_classes, **meta.arch_args))
    return {"accuracy": rep["accuracy"], "macro_f1": rep["macro_f1"], "ece": rep["ece"],
            "parameters": params, "size_kb": Path(model_path).stat().st_size / 1024}


def run_recipe(name: str, data: str, runs: str, seed: int, epochs: int | None, threads: int = 0) -> dict[str, Any]:
    from training.engine import train
    from training.events import Failed, Finished

    overrides: dict[str, Any] = {"data": data, "test_data": data, "output": runs, "seed": seed,
                                 "threads": threads}
    if epochs:
        overrides["epochs"] = epochs
    cfg = recipe_config(name).replace(name=f"zoo-{name}", **overrides)
    t0 = time.perf_counter()
    finished = None
    for ev in train(cfg):
        if isinstance(ev, Failed):
            raise SystemExit(f"{name}: training failed: {ev.message}")
        if isinstance(ev, Finished):
            finished = ev
        if getattr(ev, "type", "") == "epoch_end":
            print(f"  {name}: epoch {ev.epoch}/{ev.epochs} val acc "
                  f"{(ev.val_accuracy or 0) * 100:.2f}%", file=sys.stderr, flush=True)
    train_s = time.perf_counter() - t0
    assert finished is not None
    out = measure_model(finished.best_model, data)
    out.update({"recipe": name, "epochs": finished.epochs_done, "train_s": train_s,
                "model": finished.best_model, "config": cfg.to_dict(),
                "latency_ms": single_image_latency_ms(finished.best_model)})
    return out


def _without_options(argv: list[str], names: tuple[str, ...]) -> list[str]:
    """``argv`` less the options ``names`` and their values (``--name value`` or ``--name=value``)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in names:
            skip = True
        elif a.split("=", 1)[0] not in names:
            out.append(a)
    return out


def cv_section(folder: Path, decisions: Path | None = None, links_from: Path = Path(".")) -> list[str]:
    """Markdown for the cross-validation summaries (``python -m training.cv``) in ``folder``,
    followed by the list of decision records in ``decisions`` (see :func:`decisions_section`)."""
    summaries = sorted(Path(folder).glob("*.cv.json")) if folder and Path(folder).is_dir() else []
    if not summaries:
        return []
    lines = ["## How the flagship's augmentation was chosen", "",
             "5-fold cross-validation on the 5k training subset (`python -m training.cv`): every",
             "training image is held out once, so a choice is judged on 5,000 validation images instead",
             "of one 500-image split. Drawings are generated stroke-drawn digits from the `calibration`",
             "seeds (1,000 per fold, stroke and image paths); the test set plays no part.", "",
             "| variant | training command (after `--recipe flagship --data ...`) | out-of-fold accuracy | "
             "errors / 5,000 | drawings, stroke path | drawings, image path | weakest drawing styles |",
             "|---|---|---|---|---|---|---|"]
    for path in summaries:
        s = json.loads(path.read_text(encoding="utf-8"))
        cmd = " ".join(_without_options(s.get("command", []), ("--recipe", "--data", "--threads")))
        weakest = sorted(s.get("drawings_by_style", {}).items(), key=lambda kv: kv[1])[:3]
        lines.append(f"| {path.name.removesuffix('.cv.json')} | `{cmd or '(recipe)'}` | "
                     f"{100 * s['oof_accuracy']:.2f}% | {s['errors']} | "
                     f"{100 * s.get('drawings_stroke', float('nan')):.2f}% | "
                     f"{100 * s.get('drawings_image', float('nan')):.2f}% | "
                     + ", ".join(f"{k} {100 * v:.0f}%" for k, v in weakest) + " |")
    return lines + [""] + decisions_section(decisions, links_from)


def decisions_section(folder: Path | None, links_from: Path = Path(".")) -> list[str]:
    """Markdown list of the decision records (``NNNN-*.md``, title from the first line) in
    ``folder``, linked relative to ``links_from`` (the folder of the file that lists them)."""
    records = sorted(Path(folder).glob("[0-9][0-9][0-9][0-9]-*.md")) if folder and Path(folder).is_dir() else []
    if not records:
        return []
    lines = ["## Decisions", "",
             "The choice above and every default model's shipping rule, written before the run it",
             f"decided on, with its outcome (`{Path(folder).as_posix()}/`):", ""]
    for path in records:
        title = path.read_text(encoding="utf-8").splitlines()[0].lstrip("# ").strip()
        lines.append(f"- [{title}]({Path(os.path.relpath(path, links_from)).as_posix()})")
    return lines + [""]


def markdown(rows: list[dict[str, Any]], data: str, command: str, cv_dir: Path | None = None,
             decisions_dir: Path | None = None, links_from: Path = Path(".")) -> str:
    lines = [
        "# Model zoo: results on MNIST from 5,000 training images",
        "",
        f"Produced by `{command}` on {platform.machine()} with {_cpu_count()} CPU cores, no GPU.",
        "",
        "Every model is trained on the 5,000-image MNIST training subset (`train-5k`, 10% of it",
        "held out for validation and checkpoint selection) and measured once on the official",
        "10,000-image MNIST test set. The published figures of the reference recipes were obtained",
        "with all 60,000 training images; here they get 1/12 of that.",
        "",
        "| model | recipe settings | test accuracy | published (60k) | macro F1 | ECE | parameters | "
        "epochs | train time | CPU latency (1 image, 1 thread) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        summary = RECIPES[r["recipe"]].summary if r["recipe"] in RECIPES else r.get("summary", "")
        lines.append(
            f"| {r['recipe']} | {summary} | **{100 * r['accuracy']:.2f}%** | "
            f"{PUBLISHED.get(r['recipe'], '-')} | {r['macro_f1']:.4f} | {100 * r['ece']:.2f}% | "
            f"{r['parameters']:,} | {r.get('epochs', '-')} | "
            f"{_fmt_time(r.get('train_s'))} | {r['latency_ms']:.3f} ms"
            + (f" (ONNX Runtime, what the app runs: {r['onnx_latency_ms']:.3f} ms)" if r.get("onnx_latency_ms") else "")
            + " |")
    lines += ["", "Per-class precision, recall and F1, the confusion matrix and the misclassified",
              "examples of each run are in its run folder (`report.json`, plots). The shipped model's",
              "card (`resources/models/default.md`) has its full figures and exact command.", "",
              "## The flagship on the full 60,000-image MNIST", "",
              "On a machine with internet, one command downloads MNIST through torchvision and builds",
              "the same flagship (teachers, distilled student, outlier exposure, calibration, card):", "",
              "    python -m training.flagship --data torchvision:mnist --data-root ~/mnist-data \\",
              "        --test-data ../shared/data/mnist --output my-flagship.safetensors", "",
              "(`--test-data` names an IDX folder with the official `t10k` files; validation comes from",
              "the 60k training images.) Expected: about 99.5% test accuracy. That is an estimate, not",
              "a measurement: this machine cannot download the full set. It rests on the reference",
              "recipes reaching 99.30-99.35% from 60k with weaker augmentation, and on the flagship",
              "beating the best of them by about half a point when both learn from the same 5k.", "",
              "Time: every stage sees 12 times the images of the 5k run, so on 2 CPU cores like this",
              "machine's, about 12 times the 5k run's 1.6 hours (about 20 hours); training runs on a",
              "CUDA GPU when there is one (`--device auto`, the default; `--device cuda` insists). Runs",
              "resume: pass a stopped run's folder to `--teacher-runs` / `--student-run`.", ""]
    lines += (cv_section(cv_dir, decisions_dir, links_from) if cv_dir
              else decisions_section(decisions_dir, links_from))
    return "\n".join(lines)


def _fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def _cpu_count() -> int:
    import os
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.zoo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/mnist", help="IDX folder with train(-5k) and test splits")
    ap.add_argument("--recipes", default=",".join(REFERENCE), help="comma-separated recipe names")
    ap.add_argument("--runs", default="runs", help="folder for the run folders")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads per run (0 = default)")
    ap.add_argument("--epochs", type=int, default=None, help="override every recipe's epochs (quick look)")
    ap.add_argument("--shipped", default=None, help="also list this model file (default: the bundled model)")
    ap.add_argument("--output", default="docs/results/MODELS.md", help="the results table (markdown)")
    ap.add_argument("--json", default="docs/results/models.json", help="also write the figures as JSON here")
    ap.add_argument("--cv", default="docs/results/cv", help="folder of cross-validation summaries to include")
    ap.add_argument("--decisions", default="docs/decisions", help="folder of decision records to list")
    ap.add_argument("--reuse", action="store_true",
                    help="keep the recipes already measured in --json instead of training them again")
    args = ap.parse_args(argv)

    from mnist_desktop.core.paths import default_model_path

    previous = {}
    if args.reuse and args.json and Path(args.json).exists():
        previous = {r["recipe"]: r for r in json.loads(Path(args.json).read_text(encoding="utf-8"))
                    if r["recipe"] in RECIPES}
    rows = []
    for name in [n.strip() for n in args.recipes.split(",") if n.strip()]:
        if name in previous:
            print(f"{name}: reusing the figures in {args.json}", file=sys.stderr)
            rows.append(previous[name])
            continue
        print(f"training {name} ...", file=sys.stderr, flush=True)
        rows.append(run_recipe(name, args.data, args.runs, args.seed, args.epochs, args.threads))
        r = rows[-1]
        print(f"{name}: test accuracy {100 * r['accuracy']:.2f}%, {r['parameters']:,} parameters, "
              f"{r['train_s']:.0f} s, {r['latency_ms']:.3f} ms", flush=True)
    shipped = Path(args.shipped) if args.shipped else default_model_path()
    if shipped.exists():
        from mnist_desktop.core.checkpoint import read_meta

        meta = read_meta(shipped)
        r = measure_model(shipped, args.data)
        r.update({"recipe": f"{meta.arch} (shipped default)", "summary": meta.description,
                  "epochs": meta.training.get("epochs", "-"), "train_s": meta.training.get("train_s"),
                  "latency_ms": single_image_latency_ms(shipped)})
        if shipped.with_suffix(".onnx").is_file():   # what the app runs on a CPU
            r["onnx_latency_ms"] = single_image_latency_ms(shipped, backend="onnx")
        rows.append(r)
        print(f"shipped: test accuracy {100 * r['accuracy']:.2f}%", flush=True)
    command = "python -m training.zoo " + " ".join(a for a in (argv if argv is not None else sys.argv[1:])
                                                   if a not in ("--reuse",))
    out = Path(args.output)
    text = markdown(rows, args.data, command.strip(), Path(args.cv) if args.cv else None,
                    Path(args.decisions) if args.decisions else None, out.parent)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str), encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
