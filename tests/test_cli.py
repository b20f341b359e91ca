"""``mnist-desktop classify`` / ``evaluate`` / ``export``: exit codes, CSV/JSON, reports."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mnist_desktop.cli import main


def _write_digits(folder, mnist_test, indices, labelled=False):
    paths = []
    for i in indices:
        d = folder / str(mnist_test.labels[i]) if labelled else folder
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"img_{i:05d}.png"
        Image.fromarray(mnist_test.images[i]).save(p)
        paths.append(p)
    return paths


@pytest.mark.smoke
def test_classify_csv_format_and_success_exit(tmp_path, mnist_test, default_model, capsys):
    _write_digits(tmp_path, mnist_test, range(20))
    rc = main(["classify", str(tmp_path), "--model", str(default_model), "--device", "cpu"])
    out = capsys.readouterr()
    assert rc == 0
    rows = list(csv.reader(io.StringIO(out.out)))
    assert rows[0] == ["path", "prediction", "confidence", "uncertain", "error"] + [f"p_{d}" for d in range(10)]
    assert len(rows) == 21
    correct = sum(r[1] == str(mnist_test.labels[int(r[0][-9:-4])]) for r in rows[1:])
    assert correct >= 19
    for r in rows[1:]:
        probs = [float(x) for x in r[5:]]
        assert abs(sum(probs) - 1) < 1e-3 and r[4] == "" and r[3] in ("true", "false")
        assert float(r[2]) == pytest.approx(max(probs), abs=1e-5)


def test_classify_bad_file_gets_error_row_and_nonzero_exit(tmp_path, mnist_test, default_model, capsys):
    _write_digits(tmp_path, mnist_test, range(3))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "empty.png").write_bytes(b"")
    Image.new("L", (40, 40), 255).save(tmp_path / "blank.png")
    out_csv = tmp_path / "out" / "results.csv"
    rc = main(["classify", str(tmp_path), "--model", str(default_model), "-o", str(out_csv)])
    err = capsys.readouterr().err
    assert rc == 1
    rows = {r["path"].split("/")[-1]: r for r in csv.DictReader(open(out_csv))}
    assert len(rows) == 6
    assert rows["broken.png"]["error"] and rows["broken.png"]["prediction"] == ""
    assert "empty" in rows["empty.png"]["error"]
    assert "nothing to classify" in rows["blank.png"]["error"]
    assert rows["img_00000.png"]["error"] == ""
    assert "broken.png" in err and "3 failed" in err


def test_classify_json_topk_and_labelled_folders(tmp_path, mnist_test, default_model, capsys):
    _write_digits(tmp_path / "data", mnist_test, range(40), labelled=True)
    out = tmp_path / "r.json"
    rc = main(["classify", str(tmp_path / "data"), "--recursive", "--model", str(default_model),
               "--output", str(out), "--top-k", "2"])
    err = capsys.readouterr().err
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["labels"] == [str(i) for i in range(10)] and len(data["results"]) == 40
    r = data["results"][0]
    assert len(r["top_k"]) == 2 and r["top_k"][0]["label"] == r["prediction"]
    assert r["true_label"] == r["path"].split("/")[-2]
    assert "accuracy" in err and "confusion matrix" in err


def test_classify_usage_and_model_errors(tmp_path, default_model, capsys):
    assert main(["classify", str(tmp_path), "--model", str(default_model)]) == 2  # nothing found
    (tmp_path / "bad.safetensors").write_bytes(b"junk")
    Image.new("L", (28, 28)).save(tmp_path / "x.png")
    assert main(["classify", str(tmp_path / "x.png"), "--model", str(tmp_path / "bad.safetensors")]) == 3
    assert main(["classify", str(tmp_path / "x.png"), "--model", str(default_model), "-o", "x.txt"]) == 2
    assert "cannot load model" in capsys.readouterr().err


def test_classify_help_documents_exit_status():
    out = subprocess.run([sys.executable, "-m", "mnist_desktop", "classify", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "exit status" in out and "--top-k" in out and "--recursive" in out


@pytest.mark.slow
def test_png_export_of_mnist_test_matches_raw_tensor_accuracy(mnist_test, mnist_test_classified, default_model):
    """The preprocessing path leaves MNIST-style input alone: accuracy through PNG files and
    the classify engine is within 0.1 point of evaluating the raw tensors."""
    from mnist_desktop.core.torch_predictor import TorchPredictor

    pred = TorchPredictor.from_file(default_model, "cpu")
    raw = np.concatenate([pred.probabilities(mnist_test.images[i:i + 2000].astype(np.float32) / 255)[0]
                          for i in range(0, 10000, 2000)])
    raw_acc = float((raw.argmax(1) == mnist_test.labels).mean())
    rc, results = mnist_test_classified   # mnist-desktop classify of the 10,000 test PNGs
    assert rc == 0 and len(results) == 10000 and all(r["error"] == "" for r in results)
    png_acc = float(np.mean([int(r["prediction"]) == y for r, y in zip(results, mnist_test.labels)]))
    assert abs(png_acc - raw_acc) <= 0.001, (png_acc, raw_acc)


@pytest.mark.slow
def test_evaluate_reports_everything(mnist_dir, default_model, capsys):
    rc = main(["evaluate", "--model", str(default_model), "--data", str(mnist_dir), "--json"])
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["n"] == 10000 and rep["accuracy"] > 0.98
    assert set(rep["per_class"]["3"]) == {"precision", "recall", "f1", "support"}
    assert np.array(rep["confusion_matrix"]).sum() == 10000
    assert 0 <= rep["ece"] < 0.1
    rc = main(["evaluate", "--model", str(default_model), "--data", str(mnist_dir)])
    text = capsys.readouterr().out
    assert rc == 0 and "accuracy" in text and "confusion matrix" in text and "calibration" in text


def test_evaluate_labelled_image_folder_and_bad_data(tmp_path, mnist_test, default_model, capsys):
    _write_digits(tmp_path / "set", mnist_test, range(30), labelled=True)
    assert main(["evaluate", "--model", str(default_model), "--data", str(tmp_path / "set"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 30
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", "--model", str(default_model), "--data", str(tmp_path / "empty")]) == 2
    assert "no labelled images" in capsys.readouterr().err


def test_export_command(tmp_path, default_model, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", "--model", str(default_model), "--format", "onnx", "-o", str(out)]) == 0
    assert out.exists() and "verified" in capsys.readouterr().out


def test_train_subcommand_is_the_training_cli(tmp_path):
    """``mnist-desktop train`` takes the training CLI's flags (the frozen program trains
    by running itself), through the same argv the app uses for its children."""
    from mnist_desktop.core.app_command import app_command

    out = subprocess.run(app_command("train", "--recipe", "mlp", "--data", "x", "--print-config"),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    config = json.loads(out.stdout)
    assert config["arch"] == "mlp" and config["data"] == "x" and config["batch_size"] == 32
    bad = subprocess.run(app_command("train", "--epochs", "0", "--data", "x"), capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "epochs" in bad.stderr
