""""Unsure between two digits": fitting a model's near-tie margin on its validation digits.

The energy rule of a checkpoint flags inputs that are not digits; it misses the digits a
model hesitates over (a blurry 7 read as "1, 56%", 7 at 43%), where most of its errors
are. :attr:`~mnist_desktop.core.model_meta.UncertaintyRule.tie_margin` flags those too:
the top two calibrated probabilities closer than the margin. The margin is fitted here
on the validation digits the checkpoint records (:func:`training.robustness.validation_split`,
never the test set) as the widest margin that keeps the share of validation digits
flagged, by either rule, within a budget.

    python -m training.ties --model resources/models/default.safetensors --write
    python -m training.ties --model resources/models/default.safetensors --measure-test   # once, to report

``--write`` stores the margin in the model file's metadata (the weights are untouched)
and, for a model listed in ``resources/models/trusted-onnx.json``, records its new
SHA-256 there, so its shipped ONNX copy stays trusted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np

#: The share of validation digits flagged (both rules together) that the margin aims at:
#: under the product's 1.5% budget of flagged test digits, with room for the estimate's
#: noise on 500 validation digits.
TARGET_FLAG_RATE = 0.01


def margins(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability per row."""
    top2 = np.partition(np.asarray(probs, np.float64), -2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def fit_tie_margin(probs: np.ndarray, not_a_digit: np.ndarray, target_rate: float = TARGET_FLAG_RATE) -> float:
    """The tie margin that flags at most ``target_rate`` of these validation digits,
    counting those the not-a-digit rule already flags (``not_a_digit``).

    The cut lies halfway between the last margin flagged and the first kept, so a digit
    scoring like the kept ones is not flagged by rounding. 0 when the budget is spent.
    """
    probs = np.asarray(probs)
    not_a_digit = np.asarray(not_a_digit, bool)
    allowed = int(math.floor(target_rate * len(probs) + 1e-9)) - int(not_a_digit.sum())
    m = np.sort(margins(probs[~not_a_digit]))
    if allowed <= 0 or not len(m):
        return 0.0
    if allowed >= len(m):
        return 1.0
    return float((m[allowed - 1] + m[allowed]) / 2)


def _figures(predictor, images: np.ndarray, labels: np.ndarray) -> dict:
    from mnist_desktop.core.predictor import NOT_A_DIGIT, UNSURE, uncertainty_reasons

    probs, unc, score = predictor.probabilities(images)
    reasons = np.asarray(uncertainty_reasons(probs, score, predictor.meta))
    wrong = probs.argmax(1) != labels
    return {"n": int(len(labels)), "accuracy": float(1 - wrong.mean()), "errors": int(wrong.sum()),
            "flagged": float(unc.mean()), "flagged_n": int(unc.sum()),
            "errors_flagged": int((unc & wrong).sum()),
            "errors_flagged_share": float((unc & wrong).sum() / max(1, wrong.sum())),
            "flagged_not_a_digit": int((reasons == NOT_A_DIGIT).sum()),
            "flagged_unsure": int((reasons == UNSURE).sum())}


def _load(model: str):
    from mnist_desktop.core.onnx_predictor import OnnxPredictor
    from mnist_desktop.core.torch_predictor import TorchPredictor

    onnx = Path(model).with_suffix(".onnx")
    if onnx.exists():
        try:
            return OnnxPredictor(onnx, source=model)
        except Exception:   # an untrusted or stale copy: the torch predictor gives the same answers
            pass
    from mnist_desktop.core.checkpoint import load_model

    return TorchPredictor(load_model(model), device="cpu")


def _through_preprocess(images: np.ndarray, options) -> np.ndarray:
    from mnist_desktop.core.preprocess import preprocess

    return np.stack([preprocess(im, options) for im in images])


def write_margin(model: str, tie_margin: float, fitted: dict) -> str:
    """Store ``tie_margin`` (and how it was fitted) in the model file's metadata; update
    its entry in ``trusted-onnx.json`` when it has one. Returns the new SHA-256."""
    from mnist_desktop.core.checkpoint import load_model, save_model

    loaded = load_model(model)
    old = hashlib.sha256(Path(model).read_bytes()).hexdigest()
    meta = loaded.meta
    meta.uncertainty.tie_margin = float(tie_margin)
    meta.metrics.setdefault("calibration", {})
    if isinstance(meta.metrics["calibration"], dict):
        meta.metrics["calibration"]["tie_margin"] = fitted
    save_model(model, loaded.model, meta)
    new = hashlib.sha256(Path(model).read_bytes()).hexdigest()
    onnx = Path(model).with_suffix(".onnx")
    if onnx.exists():   # the copy records its source's SHA-256 and metadata: export it again
        from mnist_desktop.core.export import export_onnx

        export_onnx(load_model(model), onnx)
    trusted = Path(model).parent / "trusted-onnx.json"
    if trusted.exists():
        doc = json.loads(trusted.read_text())
        for entry in doc.get("copies", []):
            if entry.get("model") == Path(model).name and entry.get("model_sha256") == old:
                entry["model_sha256"] = new
                if onnx.exists() and entry.get("onnx") == onnx.name:
                    entry["onnx_sha256"] = hashlib.sha256(onnx.read_bytes()).hexdigest()
        trusted.write_text(json.dumps(doc, indent=2) + "\n")
    return new


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.ties", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="", help="model file (default: the bundled model)")
    ap.add_argument("--data", default="../shared/data/mnist", help="the model's training data (its validation split)")
    ap.add_argument("--target", type=float, default=TARGET_FLAG_RATE,
                    help="share of validation digits flagged by both rules together")
    ap.add_argument("--write", action="store_true", help="store the fitted margin in the model file")
    ap.add_argument("--measure-test", action="store_true",
                    help="report the model's figures on the MNIST test set (measuring only: changes nothing)")
    args = ap.parse_args(argv)
    from mnist_desktop.core.paths import default_model_path
    from mnist_desktop.core.predictor import apply_uncertainty, near_ties
    from training.robustness import batched_logits, validation_split

    model = args.model or str(default_model_path())
    predictor = _load(model)
    if not args.measure_test:
        images, labels = validation_split(args.data, 0, 500, predictor.meta)
        logits = batched_logits(predictor, _through_preprocess(images, predictor.options))
        rule = predictor.meta.uncertainty
        saved, rule.tie_margin = rule.tie_margin, 0.0
        probs, nad, _ = apply_uncertainty(logits, predictor.meta)
        margin = fit_tie_margin(probs, nad, args.target)
        rule.tie_margin = saved
        flagged = nad | near_ties(probs, margin)
        wrong = probs.argmax(1) != labels
        fitted = {"data": "validation split recorded in the checkpoint", "n": int(len(labels)),
                  "target_flag_rate": args.target, "tie_margin": margin,
                  "validation_flagged": float(flagged.mean()), "validation_errors": int(wrong.sum()),
                  "validation_errors_flagged": int((flagged & wrong).sum())}
        print(json.dumps(fitted, indent=1))
        if args.write:
            sha = write_margin(model, margin, fitted)
            print(f"wrote tie_margin {margin:.6f} into {model} (sha256 {sha})", file=sys.stderr)
        return 0
    from mnist_desktop.core.data import load_idx_folder

    test = load_idx_folder(args.data, "test")
    images = _through_preprocess(test.images, predictor.options)
    figures = _figures(predictor, images, np.asarray(test.labels))
    figures["tie_margin"] = predictor.meta.uncertainty.tie_margin
    print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
