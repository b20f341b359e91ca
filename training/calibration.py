"""Probability calibration and the "uncertain / not a digit" threshold.

Everything here is fitted on validation data (held out from training) and on generated
non-digits, never on the test set.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / T)``."""
    lp = _log_softmax(np.asarray(logits, np.float64) / temperature)
    return float(-lp[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, lo: float = 0.05, hi: float = 20.0) -> float:
    """Temperature ``T`` minimizing validation NLL of ``softmax(logits / T)``.

    NLL is unimodal in log T, so a golden-section search on log T is exact enough and has no
    dependency on an optimizer.
    """
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels, np.int64)
    a, b = np.log(lo), np.log(hi)
    g = (np.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = nll(logits, labels, np.exp(c)), nll(logits, labels, np.exp(d))
    for _ in range(60):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = nll(logits, labels, np.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = nll(logits, labels, np.exp(d))
    return float(np.exp((a + b) / 2))


# --------------------------------------------------------------------------- scores

METHODS = ("max_prob", "energy")


def max_prob_score(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Top softmax probability of ``logits / T`` (high = confident digit)."""
    z = np.asarray(logits, np.float64) / temperature
    return np.exp(_log_softmax(z).max(axis=1))


def energy_score(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Free energy ``-T * logsumexp(logits / T)`` (low = digit-like; Liu et al., 2020)."""
    z = np.asarray(logits, np.float64) / temperature
    zmax = z.max(axis=1)
    return -temperature * (zmax + np.log(np.exp(z - zmax[:, None]).sum(axis=1)))


def uncertainty_score(logits: np.ndarray, method: str, temperature: float = 1.0) -> np.ndarray:
    """The score an :class:`~mnist_desktop.core.checkpoint.UncertaintyRule` compares with
    its threshold: max probability (flag when below) or energy (flag when above)."""
    if method == "max_prob":
        return max_prob_score(logits, temperature)
    if method == "energy":
        return energy_score(logits, temperature)
    raise ValueError(f"unknown method {method!r}; one of {', '.join(METHODS)}")


def _badness(logits: np.ndarray, method: str, temperature: float) -> np.ndarray:
    # One orientation for both methods: higher = less digit-like, flagged when > cut.
    s = uncertainty_score(logits, method, temperature)
    return -s if method == "max_prob" else s


def _threshold_from_cut(method: str, cut: float) -> float:
    return -cut if method == "max_prob" else cut


def flagged(logits: np.ndarray, method: str, threshold: float, temperature: float = 1.0) -> np.ndarray:
    """Boolean mask of inputs the rule flags uncertain, exactly as
    :func:`mnist_desktop.core.predictor.apply_uncertainty` decides."""
    s = uncertainty_score(logits, method, temperature)
    return s < threshold if method == "max_prob" else s > threshold


# --------------------------------------------------------------------------- threshold

@dataclass
class ThresholdChoice:
    """The uncertainty rule picked by :func:`choose_threshold` and its figures.

    Attributes
    ----------
    method, threshold, temperature
        The rule (see :class:`~mnist_desktop.core.checkpoint.UncertaintyRule`).
    digit_flag_rate
        Fraction of the validation digits it flags.
    nondigit_flag_rate
        Fraction of the calibration non-digits it flags.
    target_digit_rate
        The rate of flagged validation digits aimed at.
    candidates
        The same figures for every method tried, keyed by method.
    """

    method: str
    threshold: float
    temperature: float
    digit_flag_rate: float
    nondigit_flag_rate: float
    target_digit_rate: float
    n_digits: int
    n_nondigits: int
    candidates: dict[str, dict[str, float]] = field(default_factory=dict)

    def rule(self):
        """As an :class:`~mnist_desktop.core.checkpoint.UncertaintyRule`."""
        from mnist_desktop.core.checkpoint import UncertaintyRule

        return UncertaintyRule(self.method, float(self.threshold), float(self.temperature))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def threshold_for_rate(digit_logits: np.ndarray, method: str, temperature: float, rate: float) -> float:
    """The threshold of ``method`` that flags at most ``rate`` of ``digit_logits``: the cut
    lies halfway between the last flagged and the first kept digit, so a digit scoring
    like the kept ones is not flagged by rounding."""
    b = np.sort(_badness(digit_logits, method, temperature))[::-1]
    if not len(b):
        raise ValueError("no digits to set the threshold on")
    k = int(math.floor(rate * len(b) + 1e-9))  # digits allowed to be flagged
    if k >= len(b):
        raise ValueError(f"rate {rate} flags every digit")
    upper = b[k - 1] if k > 0 else b[0] + max(1e-6, abs(b[0]) * 1e-6)
    cut = (upper + b[k]) / 2
    return _threshold_from_cut(method, float(cut))


def choose_threshold(digit_logits: np.ndarray, nondigit_logits: np.ndarray, temperature: float = 1.0,
                     target_digit_rate: float = 0.005, methods: Sequence[str] = METHODS) -> ThresholdChoice:
    """Pick the uncertainty rule and threshold from validation digits and calibration
    non-digits.

    For each method the threshold is set so that at most ``target_digit_rate`` of the
    validation digits are flagged; the method flagging the most non-digits wins (ties go
    to the earlier method in ``methods``). The default target of 0.5% leaves a margin under
    the product goal of 1%: 500 validation digits estimate a rate only roughly.

    Parameters
    ----------
    digit_logits
        ``(N, C)`` logits of validation digits (held out from training; never test data).
    nondigit_logits
        ``(M, C)`` logits of generated calibration non-digits (``purpose="calibration"``).
    temperature
        Logit temperature, normally from :func:`fit_temperature` on the same validation
        digits; it shapes both scores.
    target_digit_rate
        Largest fraction of validation digits to flag.
    methods
        Methods to try, from :data:`METHODS`.
    """
    digit_logits = np.asarray(digit_logits, np.float64)
    nondigit_logits = np.asarray(nondigit_logits, np.float64)
    if not len(nondigit_logits):
        raise ValueError("no non-digits to calibrate on")
    best: ThresholdChoice | None = None
    candidates: dict[str, dict[str, float]] = {}
    for method in methods:
        thr = threshold_for_rate(digit_logits, method, temperature, target_digit_rate)
        d_rate = float(flagged(digit_logits, method, thr, temperature).mean())
        n_rate = float(flagged(nondigit_logits, method, thr, temperature).mean())
        candidates[method] = {"threshold": thr, "digit_flag_rate": d_rate, "nondigit_flag_rate": n_rate}
        if best is None or n_rate > best.nondigit_flag_rate:
            best = ThresholdChoice(method, thr, float(temperature), d_rate, n_rate, float(target_digit_rate),
                                   len(digit_logits), len(nondigit_logits))
    assert best is not None, "methods must not be empty"
    best.candidates = candidates
    return best


# --------------------------------------------------------------------------- flag rates

def flag_rates(mask: np.ndarray, groups: Sequence[str] | None = None, rejected: Sequence[str] = ()
               ) -> dict[str, Any]:
    """Fraction flagged, overall and per group.

    Parameters
    ----------
    mask
        Flagged (True) per scored input.
    groups
        A group name per scored input (e.g. the non-digit kind).
    rejected
        A group name per input that preprocessing refused as empty: the user is told there
        is nothing to classify, so it counts as flagged.

    Returns
    -------
    dict
        ``{"n", "flagged", "rate", "rejected", "per_group": {name: {"n", "flagged", "rate",
        "rejected"}}}``.
    """
    mask = np.asarray(mask, bool)
    groups = list(groups) if groups is not None else ["all"] * len(mask)
    rejected = list(rejected)

    def figures(m: np.ndarray, n_rej: int) -> dict[str, Any]:
        n = int(len(m)) + n_rej
        k = int(m.sum()) + n_rej
        return {"n": n, "flagged": k, "rate": k / n if n else 0.0, "rejected": n_rej}

    out = figures(mask, len(rejected))
    names = sorted(set(groups) | set(rejected))
    g = np.asarray(groups, dtype=object)
    out["per_group"] = {name: figures(mask[g == name] if len(g) else mask[:0], rejected.count(name))
                        for name in names}
    return out


# --------------------------------------------------------------------------- generated non-digits

LogitsFn = Callable[[np.ndarray], np.ndarray]


def nondigit_set(n: int, purpose: str, seed: int = 0, opts=None, paths: str | Sequence[str] = "mixed"):
    """``n`` generated non-digits of ``purpose`` through the preprocessing path.

    Returns a :class:`~training.synth.PreprocessedSet`; purposes and their seed
    ranges are described in :mod:`training.synth`.
    """
    from training import synth

    return synth.preprocess_samples(synth.nondigit_samples(n, purpose, seed), paths, opts)


def _logits_in_batches(logits_fn: LogitsFn, images: np.ndarray, batch: int = 512) -> np.ndarray:
    if not len(images):
        return np.zeros((0, 0))
    return np.concatenate([logits_fn(images[i:i + batch]) for i in range(0, len(images), batch)])


def evaluate_nondigit_set(logits: np.ndarray, ps, rule) -> dict[str, Any]:
    """Flag rates of ``rule`` (anything with ``method``, ``threshold`` and ``temperature``)
    on a preprocessed non-digit set ``ps`` with its ``logits``: overall, per kind, per
    path, per template name, and for the kinds held out from training."""
    from training.synth import HELD_OUT_FROM_TRAINING

    logits = np.asarray(logits)
    mask = (flagged(logits, rule.method, rule.threshold, rule.temperature) if len(logits)
            else np.zeros(0, bool))
    rej = ps.rejected
    out = flag_rates(mask, ps.kinds, [r["kind"] for r in rej])
    out["per_kind"] = out.pop("per_group")
    out["per_path"] = flag_rates(mask, ps.paths, [r["path"] for r in rej])["per_group"]
    out["per_name"] = flag_rates(mask, [f"{k}/{m}" for k, m in zip(ps.kinds, ps.names)],
                                 [f"{r['kind']}/{r['name']}" for r in rej])["per_group"]
    unseen = [m in HELD_OUT_FROM_TRAINING.get(k, ()) for k, m in zip(ps.kinds, ps.names)]
    unseen_rej = [r for r in rej if r["name"] in HELD_OUT_FROM_TRAINING.get(r["kind"], ())]
    out["held_out_from_training"] = {k: v for k, v in flag_rates(
        mask[np.asarray(unseen, bool)] if len(mask) else mask, None, ["all"] * len(unseen_rej)).items()
        if k != "per_group"}
    out["rule"] = {"method": rule.method, "threshold": float(rule.threshold),
                   "temperature": float(rule.temperature)}
    return out


def evaluate_nondigits(logits_fn: LogitsFn, rule, n: int = 3000, seed: int = 0, opts=None,
                       paths: str | Sequence[str] = "mixed") -> dict[str, Any]:
    """Flag rates of ``rule`` on a freshly generated **evaluation** non-digit set.

    Parameters
    ----------
    logits_fn
        ``(N, 28, 28)`` [0, 1] images -> ``(N, C)`` logits, e.g. ``Predictor.logits``.
    rule
        The uncertainty rule (``UncertaintyRule`` or :class:`ThresholdChoice`).
    n, seed
        Size and seed of the set (``purpose="evaluation"``); use another seed than any
        set the threshold was chosen on. Sample ``i`` does not depend on ``n``.
    opts
        The model's preprocessing options.
    paths
        See :func:`training.synth.preprocess_samples`.

    Returns
    -------
    dict
        As :func:`evaluate_nondigit_set`, plus ``purpose``, ``seed`` and ``n_generated``.
    """
    ps = nondigit_set(n, "evaluation", seed, opts, paths)
    out = evaluate_nondigit_set(_logits_in_batches(logits_fn, ps.images), ps, rule)
    out.update({"purpose": "evaluation", "seed": int(seed), "n_generated": int(n),
                "paths": paths if isinstance(paths, str) else list(paths)})
    return out


def outlier_exposure_images(n: int, seed: int = 0, opts=None) -> tuple[np.ndarray, list[str], list[str]]:
    """``n`` non-digit training images for outlier exposure (Hendrycks et al., 2019).

    Drawn from the ``train`` purpose (seeds 1,000,000 + ``seed``), which never shares a
    generator with the calibration or evaluation sets and never draws the kinds held out
    for evaluation (:data:`training.synth.HELD_OUT_FROM_TRAINING`). A typical
    use trains the model to output the uniform distribution on them (cross-entropy to
    uniform targets, weight about 0.5), which separates max-probability scores of digits
    and non-digits far better.

    Returns
    -------
    images : ndarray
        ``(n, 28, 28)`` float32 in [0, 1], exactly what the model sees (both paths).
    kinds, names : list of str
        Kind and template name per image.

    Notes
    -----
    Inputs that preprocessing refuses as empty are skipped and more are drawn, so the
    result always has ``n`` images. Cost: about 3 ms per image on one CPU core.
    """
    from training import synth

    images, kinds, names = [], [], []
    start = 0
    while len(images) < n:
        want = n - len(images)
        ps = synth.preprocess_samples(synth.nondigit_samples(want, "train", seed, start=start), "mixed", opts)
        images.extend(ps.images)
        kinds += ps.kinds
        names += ps.names
        start += want
    return np.stack(images[:n]).astype(np.float32), kinds[:n], names[:n]
