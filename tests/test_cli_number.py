"""``mnist-desktop classify --number``: number columns in CSV and JSON, from worker
processes and in-process, on generated multi-digit PNGs."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from mnist_desktop.cli import main
from training.number_synth import number_image

REPO_5K = __import__("pathlib").Path(__file__).resolve().parents[1] / "resources" / "data" / "mnist-5k"


@pytest.fixture(scope="module")
def digits():
    from mnist_desktop.core.data import load_idx_folder
    return load_idx_folder(REPO_5K, "train-5k")


def _write_numbers(folder, digits, seed=7, count=6):
    """PNG files of 1-4 digit numbers; returns {file name: digits}."""
    rng = np.random.default_rng(seed)
    truth = {}
    for k in range(count):
        n = 1 + k % 4
        img, text = number_image(digits.images, digits.labels, rng, n, "separated")
        name = f"num_{k:02d}.png"
        Image.fromarray(img).save(folder / name)
        truth[name] = text
    return truth


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["2", "0"])
def test_classify_number_csv_columns(tmp_path, digits, default_model, capsys, workers):
    truth = _write_numbers(tmp_path, digits)
    (tmp_path / "blank.png").write_bytes(b"")
    rc = main(["classify", str(tmp_path), "--model", str(default_model), "--device", "cpu",
               "--number", "--workers", workers])
    out = capsys.readouterr().out
    rows = list(csv.reader(out.splitlines()))
    assert rc == 1   # the empty file
    assert rows[0][:7] == ["path", "prediction", "confidence", "uncertain", "error", "number", "number_confidence"]
    assert rows[0][7:] == [f"p_{d}" for d in range(10)]
    by_name = {r[0].split("/")[-1]: dict(zip(rows[0], r)) for r in rows[1:]}
    assert by_name["blank.png"]["number"] == "" and by_name["blank.png"]["error"]
    right = sum(by_name[name]["number"] == text for name, text in truth.items())
    assert right >= len(truth) - 1
    for name, text in truth.items():
        row = by_name[name]
        assert 0.0 <= float(row["number_confidence"]) <= 1.0
        if len(text) == 1:   # a single digit reads as without --number
            assert row["number"] == row["prediction"]
            assert float(row["number_confidence"]) == pytest.approx(float(row["confidence"]), abs=1e-6)


@pytest.mark.slow
def test_classify_number_json_fields(tmp_path, digits, default_model, capsys):
    truth = _write_numbers(tmp_path, digits, seed=11, count=4)
    out_json = tmp_path / "out.json"
    rc = main(["classify", str(tmp_path), "--model", str(default_model), "--device", "cpu",
               "--number", "-o", str(out_json), "-q"])
    assert rc == 0
    recs = {r["path"].split("/")[-1]: r for r in json.loads(out_json.read_text())["results"]}
    assert set(recs) == set(truth)
    for rec in recs.values():
        assert isinstance(rec["number"], str) and 0.0 <= rec["number_confidence"] <= 1.0
    assert sum(recs[n]["number"] == t for n, t in truth.items()) >= len(truth) - 1


def test_classify_without_number_has_no_number_columns(tmp_path, digits, default_model, capsys):
    _write_numbers(tmp_path, digits, count=2)
    out_json = tmp_path / "out.json"
    assert main(["classify", str(tmp_path), "--model", str(default_model), "--workers", "0",
                 "-o", str(out_json), "-q"]) == 0
    rec = json.loads(out_json.read_text())["results"][0]
    assert "number" not in rec
