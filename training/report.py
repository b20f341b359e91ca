"""What a run reports about its models: validation metrics after each epoch, which model is
the best, the metadata the model files carry, the end-of-run report and the exports."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from training.events import Exported
from training.session import Session
from training.state import Progress, write_json


def validation_metrics(logits, y) -> dict[str, Any]:
    """Loss, accuracy, fitted temperature and calibration error (ECE after temperature
    scaling) of validation ``logits`` against labels ``y``."""
    import torch.nn.functional as F

    from mnist_desktop.core.metrics import expected_calibration_error
    from training.calibration import fit_temperature

    val_loss = float(F.cross_entropy(logits, y))
    val_acc = float((logits.argmax(1) == y).float().mean())
    z, t = logits.cpu().numpy().astype(np.float64), y.cpu().numpy()
    temperature = fit_temperature(z, t) if math.isfinite(val_loss) else 1.0
    zt = z / temperature
    p = np.exp(zt - zt.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return {"val_loss": val_loss, "val_accuracy": val_acc, "temperature": temperature,
            "val_ece": expected_calibration_error(p, t)}


def update_best(prog: Progress, record: dict[str, Any], metric: str) -> bool:
    """Whether the epoch of ``record`` is the best yet by ``metric``; updates the best and
    the count of epochs without improvement (early stopping) in ``prog``."""
    acc, loss = record["val_accuracy"], record["val_loss"]
    if acc is None:  # no validation data: the latest model is the best we know
        prog.best_epoch = record["epoch"]
        return True
    if prog.best_epoch == 0 or metric == "last":
        better = True
    elif metric == "val_loss":
        better = loss < prog.best_val_loss
    else:
        better = acc > prog.best_val_accuracy or (acc == prog.best_val_accuracy and loss < prog.best_val_loss)
    if better:
        prog.best_epoch, prog.best_val_accuracy, prog.best_val_loss = record["epoch"], acc, loss
        prog.bad_epochs = 0
    else:
        prog.bad_epochs += 1
    return better


def model_meta(s: Session, record: dict[str, Any]):
    """The :class:`~mnist_desktop.core.checkpoint.ModelMeta` of the model saved after the
    epoch of ``record``: architecture, labels, preprocessing, calibration, training, metrics."""
    from mnist_desktop.core.checkpoint import ModelMeta, Normalization, UncertaintyRule

    cfg = s.cfg
    metrics = {k: record[k] for k in ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                                      "val_ece") if record.get(k) is not None}
    return ModelMeta(
        arch=cfg.arch, arch_args=dict(cfg.arch_args), labels=list(s.labels),
        normalization=Normalization(cfg.mean, cfg.std), preprocess=cfg.preprocess_options().to_dict(),
        uncertainty=UncertaintyRule("max_prob", cfg.uncertainty_threshold, float(record["temperature"])),
        name=s.dir.name, description=f"{cfg.recipe} recipe ({cfg.arch}) trained on {cfg.data}",
        training={"config": cfg.to_dict(), "epoch": record["epoch"], "step": record["step"],
                  "run": s.dir.name, "n_train": s.n_train, "n_val": s.n_val,
                  "validation": f"seeded stratified {cfg.val_fraction:g} of the training data"},
        metrics=metrics, data_fingerprint=s.fingerprint)


def evaluate_best(s: Session, loaded, val_set, test_set) -> dict[str, Any]:
    """Reports of the best model ``loaded`` on the validation data and, when given, the test
    data; the test figures also go into ``best.safetensors``'s metadata."""
    import torch

    from mnist_desktop.core.checkpoint import save_model
    from training.evaluate import evaluation_report, predict_logits

    cfg = s.cfg
    model = loaded.model.to(s.device)
    reports: dict[str, Any] = {}
    if len(val_set):
        logits = predict_logits(model, s.x_val, cfg.mean, cfg.std, cfg.eval_batch_size).cpu().numpy()
        reports["validation"] = evaluation_report(logits, val_set.labels, loaded.meta,
                                                  data="validation split", paths=val_set.paths)
    if test_set is not None:
        x_test = torch.from_numpy(np.ascontiguousarray(test_set.images)).to(s.device)
        logits = predict_logits(model, x_test, cfg.mean, cfg.std, cfg.eval_batch_size).cpu().numpy()
        t = reports["test"] = evaluation_report(logits, test_set.labels, loaded.meta,
                                                data=test_set.description, paths=test_set.paths)
        # Measured once, at the end, for the model card only (never used for selection).
        loaded.meta.metrics.update({"test_accuracy": t["accuracy"], "test_macro_f1": t["macro_f1"],
                                    "test_ece": t["ece"], "test_data": test_set.description})
        save_model(s.best_path, model, loaded.meta)
    return reports


def write_report(s: Session, loaded, reports: dict[str, Any], val_set, test_set):
    """report.json, report.txt and the PNG plots; returns (report, plot paths)."""
    from mnist_desktop.core.checkpoint import atomic_write_bytes
    from mnist_desktop.core.metrics import format_report
    from training.evaluate import report_plots
    from training.plots import plot_curves

    prog = s.prog
    plots = [str(s.dir / "curves.png")]
    plot_curves(prog.history, plots[0])
    if "test" in reports:
        plots += report_plots(reports["test"], test_set.images, s.dir, "test")
    elif "validation" in reports:
        plots += report_plots(reports["validation"], val_set.images, s.dir, "validation")
    report = {"run_dir": str(s.dir), "config": s.cfg.to_dict(), "labels": loaded.meta.labels,
              "best_epoch": prog.best_epoch, "epochs_done": prog.epoch, "stop_reason": prog.stop_reason,
              "history": prog.history, "models": {"best": str(s.best_path), "last": str(s.last_path)},
              "plots": plots, **reports}
    write_json(s.dir / "report.json", report)
    text = [f"run: {s.dir}", f"best epoch: {prog.best_epoch} of {prog.epoch} ({prog.stop_reason})"]
    for name, r in reports.items():
        text += ["", f"== {name}: {r['data']}", format_report(r)]
    atomic_write_bytes(s.dir / "report.txt", ("\n".join(text) + "\n").encode("utf-8"))
    return report, plots


def export(loaded, fmt: str, run_dir: Path) -> Exported:
    """Export the best model as ``fmt`` (``"torchscript"`` or ``"onnx"``) into ``run_dir``;
    a failed export is reported in the event, never raised (the run itself succeeded)."""
    from mnist_desktop.core.checkpoint import CheckpointError
    from mnist_desktop.core.export import export_onnx, export_torchscript

    cpu = type(loaded)(model=loaded.model.to("cpu").eval(), meta=loaded.meta, path=loaded.path)
    target = run_dir / ("best.torchscript.pt" if fmt == "torchscript" else "best.onnx")
    try:
        with warnings.catch_warnings():
            # torch.jit and the ONNX exporter announce their deprecations on every call;
            # the export is verified for parity, so they are noise on the user's console.
            warnings.simplefilter("ignore", category=FutureWarning)
            warnings.simplefilter("ignore", category=DeprecationWarning)
            (export_torchscript if fmt == "torchscript" else export_onnx)(cpu, target)
    except CheckpointError as e:
        return Exported(format=fmt, error=str(e))
    except ImportError as e:
        return Exported(format=fmt, error=f"{fmt} export needs an optional package ({e.name or e}); "
                        "install mnist-desktop[export]")
    except Exception as e:  # exporters raise many types; the run itself succeeded
        return Exported(format=fmt, error=f"{fmt} export failed: {type(e).__name__}: "
                        f"{(str(e).strip().splitlines() or [''])[0][:160]}")
    return Exported(format=fmt, path=str(target))
