"""Robustness report: generated mouse drawings, generated non-digits and the MNIST test set.

Measures a model file on

* N generated stroke digits (``purpose="evaluation"``) through the stroke path of
  preprocessing and through the image path in both polarities (half the renders clean,
  half with blur/noise/JPEG), broken down by style factor, artifact, digit and template;
* generated non-digits (evaluation seeds): the share flagged uncertain, per kind;
* the official MNIST test set, measured only: accuracy, ECE, share flagged uncertain.

With ``--calibrate --output MODEL`` it first fits the temperature on the validation split
of the 5k training subset (indices ``numpy.random.default_rng(VAL_SEED).permutation(5000)
[:500]``, as the first bundled model's training script held them out) and the uncertainty rule with
:func:`training.calibration.choose_threshold` on those digits plus generated
calibration non-digits, then writes the same weights with the new rule and all figures in
``meta.metrics`` to MODEL, and reports on that file. The test set never feeds a choice.

    python -m training.robustness                      # the bundled model
    python -m training.robustness --model m.safetensors --calibrate --output m-cal.safetensors

The JSON goes to ``--json`` (default: beside the reported model, ``<model>.robustness.json``)
and names the command that wrote it (``written_by``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from training import synth
from training.calibration import (choose_threshold, evaluate_nondigit_set, evaluate_nondigits,
                                            fit_temperature, flagged, nll, nondigit_set)
from mnist_desktop.core.checkpoint import LoadedModel, load_model, save_model
from mnist_desktop.core.data import load_idx_folder
from mnist_desktop.core.metrics import expected_calibration_error
from mnist_desktop.core.paths import default_model_path
from mnist_desktop.core.predictor import Predictor, apply_uncertainty
from mnist_desktop.core.torch_predictor import TorchPredictor
from mnist_desktop.core.preprocess import preprocess

GOALS = {"synthetic_gap_points": 1.0, "nondigit_flag_rate": 0.90, "test_flag_rate": 0.01, "test_ece": 0.015}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def batched_logits(predictor: Predictor, images: np.ndarray, batch: int = 512) -> np.ndarray:
    return np.concatenate([predictor.logits(images[i:i + batch]) for i in range(0, len(images), batch)])


def through_preprocess(images: np.ndarray, predictor: Predictor) -> np.ndarray:
    """MNIST images through the one preprocessing path (they come out unchanged or nearly)."""
    return np.stack([preprocess(im, predictor.options) for im in images])


def validation_split(data: str, seed: int, size: int, meta=None) -> tuple[np.ndarray, np.ndarray]:
    """The validation digits the model was never trained on.

    A model trained by :mod:`training` records its data and split (``data``, ``split``,
    ``val_fraction``, ``seed``/``val_seed`` in ``meta.training``): that data is loaded again
    and exactly those samples are used, so calibration never sees a training image, whether
    the model learned from the 5k subset or from torchvision's 60k. Otherwise the first
    ``size`` of ``default_rng(seed).permutation(5000)`` of ``data``'s 5k subset, the
    convention of the first bundled model's training script.
    """
    tr = _recorded_config(meta)
    if tr.get("data") and "val_fraction" in tr and "seed" in tr:
        from training.config import TrainConfig
        from training.data import load_training_data, run_loader

        cfg = TrainConfig.from_dict({**tr, "download": False})
        full, _, idx = run_loader(load_training_data(cfg))
        images = np.asarray(full.images)[idx]
        if images.dtype != np.uint8:
            images = np.clip(np.rint(images * 255), 0, 255).astype(np.uint8)
        return images.reshape(-1, 28, 28), np.asarray(full.labels)[idx]
    train = load_idx_folder(data, "train-5k")
    idx = np.random.default_rng(seed).permutation(len(train.labels))[:size]
    return train.images[idx], train.labels[idx]


# --------------------------------------------------------------------------- calibration

def calibrate(predictor: Predictor, args) -> tuple[Any, dict[str, Any]]:
    """Temperature from validation NLL, then the rule from validation digits and
    calibration non-digits."""
    images, labels = validation_split(args.data, args.val_seed, args.val_size, predictor.meta)
    val_logits = batched_logits(predictor, through_preprocess(images, predictor))
    temperature = fit_temperature(val_logits, labels)
    log(f"temperature {temperature:.4f} (validation NLL {nll(val_logits, labels):.4f} -> "
        f"{nll(val_logits, labels, temperature):.4f})")
    t0 = time.time()
    cal = nondigit_set(args.n_calibration, "calibration", args.calibration_seed, predictor.options)
    cal_logits = batched_logits(predictor, cal.images)
    log(f"{len(cal)} calibration non-digits ({len(cal.rejected)} refused as empty) in {time.time() - t0:.0f}s")
    choice = choose_threshold(val_logits, cal_logits, temperature, target_digit_rate=args.target_digit_rate)
    cal_eval = evaluate_nondigit_set(cal_logits, cal, choice)

    def ece(t: float) -> float:
        z = val_logits / t
        p = np.exp(z - z.max(1, keepdims=True))
        return expected_calibration_error(p / p.sum(1, keepdims=True), labels)

    figures = {
        "validation": {"split": _split_name(predictor.meta, args),
                       "n": int(len(labels)),
                       "accuracy": float((val_logits.argmax(1) == labels).mean()),
                       "nll_uncalibrated": nll(val_logits, labels), "nll": nll(val_logits, labels, temperature),
                       "ece_uncalibrated": ece(1.0), "ece": ece(temperature),
                       "digits_flagged": choice.digit_flag_rate},
        "calibration_nondigits": {"purpose": "calibration", "seed": args.calibration_seed,
                                  "n_generated": args.n_calibration, "paths": "mixed",
                                  "flagged": cal_eval["rate"],
                                  "per_kind": {k: v["rate"] for k, v in cal_eval["per_kind"].items()}},
        "choice": choice.to_dict(),
    }
    log(f"rule: {choice.method} threshold {choice.threshold:.6g} at T={temperature:.4f}: "
        f"{100 * choice.digit_flag_rate:.2f}% validation digits, "
        f"{100 * choice.nondigit_flag_rate:.2f}% calibration non-digits flagged")
    for m, c in choice.candidates.items():
        log(f"  {m:8s}: {100 * c['nondigit_flag_rate']:.2f}% calibration non-digits flagged")
    return choice, figures


def _recorded_config(meta) -> dict[str, Any]:
    """The TrainConfig a :mod:`training` run recorded in ``meta.training`` (or {})."""
    tr = (meta.training if meta is not None else {}) or {}
    cfg = tr.get("config", tr)
    return cfg if isinstance(cfg, dict) else {}


def _split_name(meta, args) -> str:
    tr = _recorded_config(meta)
    if "val_fraction" in tr and "seed" in tr:
        from training.config import recorded_split_seed

        seed = recorded_split_seed(tr)
        fold = int(tr.get("val_fold", -1))
        return (f"{tr.get('data')}, training.data.validation_split(labels, {tr['val_fraction']}, "
                f"seed={seed}{f', fold={fold}' if fold >= 0 else ''})")
    return f"train-5k, default_rng({args.val_seed}).permutation(5000)[:{args.val_size}]"


# --------------------------------------------------------------------------- measurements

def _figures(rows: list[tuple[bool, bool]]) -> dict[str, Any]:
    """Accuracy and share flagged uncertain of ``(correct, flagged)`` rows."""
    if not rows:
        return {"n": 0, "accuracy": None, "flagged_uncertain": None}
    ok, flag = np.asarray(rows, bool).T
    return {"n": len(rows), "accuracy": float(ok.mean()), "flagged_uncertain": float(flag.mean())}


def digit_report(predictor: Predictor, n: int, seed: int, purpose: str = "evaluation") -> dict[str, Any]:
    """Accuracy and share flagged uncertain on ``n`` generated digits through each path,
    with breakdowns by style factor, digit, template and (images) artifacts. Model
    selection (cross-validation) uses the ``calibration`` purpose, never ``evaluation``."""
    samples = list(synth.digit_samples(n, purpose, seed))
    out: dict[str, Any] = {"n_drawings": n, "purpose": purpose, "seed": seed}
    rule = predictor.meta.uncertainty
    for path in synth.PATHS:
        t0 = time.time()
        ps = synth.preprocess_samples(samples, path, predictor.options)
        logits = batched_logits(predictor, ps.images) if len(ps) else np.zeros((0, 10))
        rows = list(zip(logits.argmax(1) == ps.labels,
                        flagged(logits, rule.method, rule.threshold, rule.temperature)))
        groups: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        for i, row in enumerate(rows):
            for factor, on in synth.style_factors(ps.params[i]).items():
                if on:
                    groups["factor"][factor].append(row)
            groups["digit"][str(ps.labels[i])].append(row)
            groups["style"][ps.names[i]].append(row)
            groups["artifacts"][ps.artifacts[i]].append(row)
        # A refused drawing is a miss: the user drew a digit and got no answer.
        res = {**_figures(rows + [(False, True)] * len(ps.rejected)), "refused": len(ps.rejected)}
        for name, g in groups.items():
            res["by_" + name] = {k: _figures(v) for k, v in sorted(g.items())}
        if path != "stroke":
            res["clean"] = _figures(groups["artifacts"].get("clean", []))
            res["degraded"] = _figures([r for k, v in groups["artifacts"].items() if k != "clean" for r in v])
        out[path] = res
        log(f"digits {path:11s}: {100 * res['accuracy']:.2f}% of {res['n']} ({time.time() - t0:.0f}s)")
    images = ("image_dark", "image_light")

    def pooled(key: str | None, field: str) -> float:
        parts = [(out[p][key] if key else out[p]) for p in images]
        total = sum(f["n"] for f in parts)
        return sum(f[field] * f["n"] for f in parts if f["n"]) / total if total else float("nan")

    out["image_accuracy"] = pooled(None, "accuracy")
    out["image_clean_accuracy"] = pooled("clean", "accuracy")
    out["image_flagged_uncertain"] = pooled(None, "flagged_uncertain")
    out["image_clean_flagged_uncertain"] = pooled("clean", "flagged_uncertain")
    return out


def test_report(predictor: Predictor, data: str) -> dict[str, Any]:
    """MNIST test set, measured only: accuracy, ECE and flagged share under the model's rule."""
    test = load_idx_folder(data, "test")
    logits = batched_logits(predictor, through_preprocess(test.images, predictor))
    probs, unc, _ = apply_uncertainty(logits, predictor.meta)
    acc = float((probs.argmax(1) == test.labels).mean())
    return {"n": int(len(test.labels)), "accuracy": acc,
            "ece": expected_calibration_error(probs, test.labels),
            "ece_uncalibrated": expected_calibration_error(apply_uncertainty(
                logits, _with_temperature(predictor.meta, 1.0))[0], test.labels),
            "flagged_uncertain": float(unc.mean()),
            "per_class_recall": {lab: float((probs.argmax(1)[test.labels == i] == i).mean())
                                 for i, lab in enumerate(predictor.labels) if (test.labels == i).any()},
            "accuracy_unflagged": float((probs.argmax(1) == test.labels)[~unc].mean()) if (~unc).any() else None}


def _with_temperature(meta, t: float):
    import copy

    m = copy.deepcopy(meta)
    m.uncertainty.temperature = t
    return m


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    test, dig, nd = report["mnist_test"], report["synthetic_digits"], report["nondigits"]
    worst_path = min(dig["stroke"]["accuracy"], dig["image_clean_accuracy"])
    gap = 100 * (test["accuracy"] - worst_path)
    return {
        "mnist_test_accuracy": test["accuracy"],
        "synthetic_stroke_accuracy": dig["stroke"]["accuracy"],
        "synthetic_image_clean_accuracy": dig["image_clean_accuracy"],
        "synthetic_image_all_accuracy": dig["image_accuracy"],
        "synthetic_gap_points": gap,
        "nondigit_flag_rate": nd["rate"],
        "test_flag_rate": test["flagged_uncertain"],
        "test_ece": test["ece"],
        "goals": {
            "synthetic_gap_points": gap <= GOALS["synthetic_gap_points"],
            "nondigit_flag_rate": nd["rate"] >= GOALS["nondigit_flag_rate"],
            "test_flag_rate": test["flagged_uncertain"] <= GOALS["test_flag_rate"],
            "test_ece": test["ece"] <= GOALS["test_ece"],
        },
    }


def print_report(report: dict[str, Any]) -> None:
    s, dig, nd = report["summary"], report["synthetic_digits"], report["nondigits"]
    rule = report["rule"]
    ok = lambda b: "ok  " if b else "FAIL"  # noqa: E731
    print(f"model: {report['model']}")
    print(f"rule: {rule['method']} threshold {rule['threshold']:.6g}, temperature {rule['temperature']:.4f}")
    print(f"MNIST test accuracy          {100 * s['mnist_test_accuracy']:.2f}%")
    print(f"synthetic digits, strokes     {100 * s['synthetic_stroke_accuracy']:.2f}%  (n={dig['stroke']['n']})")
    print(f"synthetic digits, clean image {100 * s['synthetic_image_clean_accuracy']:.2f}%  (both polarities)")
    print(f"synthetic digits, all images  {100 * s['synthetic_image_all_accuracy']:.2f}%  (half with blur/noise/JPEG)")
    print(f"[{ok(s['goals']['synthetic_gap_points'])}] gap to MNIST test (worst of strokes / clean image): "
          f"{s['synthetic_gap_points']:.2f} points (goal <= {GOALS['synthetic_gap_points']})")
    print(f"synthetic digits flagged uncertain: strokes {100 * dig['stroke']['flagged_uncertain']:.2f}%, "
          f"clean images {100 * dig['image_clean_flagged_uncertain']:.2f}%, "
          f"all images {100 * dig['image_flagged_uncertain']:.2f}%")
    print(f"[{ok(s['goals']['nondigit_flag_rate'])}] non-digits flagged: {100 * s['nondigit_flag_rate']:.2f}% "
          f"(goal >= {100 * GOALS['nondigit_flag_rate']:.0f}%)")
    print(f"[{ok(s['goals']['test_flag_rate'])}] MNIST test digits flagged: {100 * s['test_flag_rate']:.2f}% "
          f"(goal <= {100 * GOALS['test_flag_rate']:.0f}%)")
    print(f"[{ok(s['goals']['test_ece'])}] MNIST test ECE: {100 * s['test_ece']:.2f}% "
          f"(goal <= {100 * GOALS['test_ece']:.1f}%)")
    print("\naccuracy by style factor      strokes  img-dark  img-light")
    for f in dig["stroke"]["by_factor"]:
        row = [dig[p]["by_factor"].get(f, {}).get("accuracy") for p in synth.PATHS]
        n = dig["stroke"]["by_factor"].get(f, {}).get("n", 0)
        print(f"  {f:12s} (n={n:4d})      " + "  ".join(f"{100 * a:7.2f}" if a is not None else "      -"
                                                      for a in row))
    for p in ("stroke", "image_dark"):
        worst = sorted(dig[p]["by_style"].items(), key=lambda kv: kv[1]["accuracy"])[:5]
        print(f"  least accurate templates, {p}: " + ", ".join(f"{k} {100 * v['accuracy']:.1f}%" for k, v in worst))
    print("images by artifacts           accuracy dark/light   flagged dark/light")
    for k in sorted(dig["image_dark"]["by_artifacts"]):
        cells = [dig[p]["by_artifacts"].get(k, {}).get(f) for f in ("accuracy", "flagged_uncertain")
                 for p in ("image_dark", "image_light")]
        print(f"  {k:18s}     " + "  ".join(f"{100 * x:7.2f}" if x is not None else "      -" for x in cells))
    print(f"\nnon-digits flagged by kind (evaluation seed {nd['seed']}, n={nd['n']})")
    for k, v in nd["per_kind"].items():
        print(f"  {k:10s} {100 * v['rate']:6.2f}%  (n={v['n']}, refused as empty {v['rejected']})")
    for k, v in nd["per_path"].items():
        print(f"  path {k:11s} {100 * v['rate']:6.2f}%  (n={v['n']})")
    h = nd["held_out_from_training"]
    print(f"  kinds held out from training: {100 * h['rate']:.2f}% (n={h['n']})")
    worst = sorted(nd["per_name"].items(), key=lambda kv: kv[1]["rate"])[:8]
    print("  least flagged: " + ", ".join(f"{k} {100 * v['rate']:.0f}%" for k, v in worst))


# --------------------------------------------------------------------------- main

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(default_model_path()), help="model file to measure")
    ap.add_argument("--data", default="../shared/data/mnist", help="IDX folder with t10k-* and train-5k-*")
    ap.add_argument("--n-digits", type=int, default=5000, help="generated digit drawings")
    ap.add_argument("--n-nondigits", type=int, default=3000, help="generated evaluation non-digits")
    ap.add_argument("--n-check", type=int, default=300,
                    help="size of the non-digit subset whose figure the test suite re-computes")
    ap.add_argument("--digit-seed", type=int, default=0, help="evaluation seed of the digit drawings")
    ap.add_argument("--nondigit-seed", type=int, default=0, help="evaluation seed of the non-digits")
    ap.add_argument("--calibrate", action="store_true", help="fit temperature and threshold, write --output")
    ap.add_argument("--output", help="calibrated model file to write (with --calibrate)")
    ap.add_argument("--val-seed", type=int, default=0, help="seed of the validation permutation")
    ap.add_argument("--val-size", type=int, default=500)
    ap.add_argument("--n-calibration", type=int, default=3000, help="generated calibration non-digits")
    ap.add_argument("--calibration-seed", type=int, default=0)
    ap.add_argument("--target-digit-rate", type=float, default=0.005,
                    help="largest share of validation digits flagged (margin under the 1%% goal)")
    ap.add_argument("--json", help="where to write the JSON report")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch default)")
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    if args.calibrate and not args.output:
        build_parser().error("--calibrate needs --output MODEL")
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    t_start = time.time()
    loaded: LoadedModel = load_model(args.model)
    predictor = TorchPredictor(loaded, device="cpu")
    calibration = None
    report_path = Path(args.model)
    if args.calibrate:
        choice, calibration = calibrate(predictor, args)
        predictor.meta.uncertainty = choice.rule()
        report_path = Path(args.output)
    report: dict[str, Any] = {"model": str(report_path), "source_model": str(args.model),
                              "rule": vars(predictor.meta.uncertainty).copy()}
    if calibration:
        report["calibration"] = calibration
    report["mnist_test"] = test_report(predictor, args.data)
    log(f"MNIST test: {100 * report['mnist_test']['accuracy']:.2f}%")
    t0 = time.time()
    report["nondigits"] = evaluate_nondigits(predictor.logits, predictor.meta.uncertainty, args.n_nondigits,
                                             args.nondigit_seed, predictor.options)
    log(f"non-digits: {100 * report['nondigits']['rate']:.2f}% flagged ({time.time() - t0:.0f}s)")
    check = evaluate_nondigits(predictor.logits, predictor.meta.uncertainty, args.n_check,
                               args.nondigit_seed, predictor.options)
    report["nondigit_check"] = {k: check[k] for k in ("n_generated", "seed", "purpose", "paths", "n",
                                                      "flagged", "rate", "rejected")}
    report["synthetic_digits"] = digit_report(predictor, args.n_digits, args.digit_seed)
    report["summary"] = summarize(report)
    report["seconds"] = round(time.time() - t_start, 1)
    report["written_by"] = "python -m training.robustness " + " ".join(argv)
    if args.calibrate:
        write_calibrated(args, report)
    json_path = Path(args.json) if args.json else report_path.with_name(report_path.name + ".robustness.json")
    json_path.write_text(json.dumps(report, indent=1, sort_keys=True, default=float))
    print_report(report)
    print(f"\nJSON: {json_path}" + (f"\ncalibrated model: {args.output}" if args.calibrate else ""))
    return 0


def write_calibrated(args, report: dict[str, Any]) -> None:
    """Same weights, new rule, figures in ``meta.metrics``. Loaded afresh: the predictor's
    network was fused for inference and no longer matches the architecture's state dict."""
    fresh = load_model(args.model)
    meta = fresh.meta
    from mnist_desktop.core.checkpoint import UncertaintyRule

    meta.uncertainty = UncertaintyRule(**report["rule"])
    s, nd, test = report["summary"], report["nondigits"], report["mnist_test"]
    metrics = dict(meta.metrics)
    metrics.setdefault("test_ece_uncalibrated", test["ece_uncalibrated"])
    metrics["test_ece"] = test["ece"]
    metrics["test_accuracy"] = test["accuracy"]
    metrics["test_data"] = f"MNIST official test set ({test['n']} images), through the preprocessing path"
    metrics["test_per_class_recall"] = test["per_class_recall"]
    metrics["test_flagged_uncertain"] = test["flagged_uncertain"]
    metrics["calibration"] = report["calibration"]
    metrics["not_a_digit"] = {
        "evaluation": {"purpose": "evaluation", "seed": nd["seed"], "n_generated": nd["n_generated"],
                       "paths": nd["paths"], "n": nd["n"], "rate": nd["rate"],
                       "per_kind": {k: v["rate"] for k, v in nd["per_kind"].items()},
                       "held_out_from_training": nd["held_out_from_training"]["rate"]},
        "check": report["nondigit_check"],
        "mnist_test_flagged": test["flagged_uncertain"],
        "command": "python -m training.robustness " + " ".join(args.argv),
    }
    dig = report["synthetic_digits"]
    metrics["synthetic_digits"] = {"n_drawings": args.n_digits, "seed": args.digit_seed,
                                   "stroke_accuracy": s["synthetic_stroke_accuracy"],
                                   "image_clean_accuracy": s["synthetic_image_clean_accuracy"],
                                   "image_accuracy": s["synthetic_image_all_accuracy"],
                                   "stroke_flagged": dig["stroke"]["flagged_uncertain"],
                                   "image_clean_flagged": dig["image_clean_flagged_uncertain"]}
    meta.metrics = metrics
    save_model(args.output, fresh.model, meta)


if __name__ == "__main__":
    raise SystemExit(main())
