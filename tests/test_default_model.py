"""The committed default model: its model card's figures hold on the real test set."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_desktop.core.checkpoint import read_meta


@pytest.mark.slow
def test_model_card_accuracy_holds_through_the_classify_path(default_model, mnist_test, mnist_test_classified):
    meta = read_meta(default_model)
    recorded = meta.metrics.get("test_accuracy")
    assert recorded is not None, "the default model must record its MNIST test accuracy"
    rc, rows = mnist_test_classified   # mnist-desktop classify of the 10,000 test PNGs
    assert rc == 0
    assert len(rows) == 10000
    pred = {int(r["path"][-9:-4]): r["prediction"] for r in rows}
    acc = float(np.mean([pred[i] == str(y) for i, y in enumerate(mnist_test.labels)]))
    assert abs(acc - recorded) <= 0.0005, (acc, recorded)


def test_model_card_sits_beside_the_model_and_matches_it(default_model):
    meta = read_meta(default_model)
    card = default_model.with_suffix(".md")
    if meta.name == "starter":
        pytest.skip("the starter model has no model card")
    text = card.read_text(encoding="utf-8")
    assert f"{100 * meta.metrics['test_accuracy']:.2f}%" in text
    assert "python -m training.flagship" in text
    # A sanity floor (a broken or wrong model scores far lower); the goal is reported
    # in the card and the notes, not asserted.
    assert meta.metrics["test_accuracy"] >= 0.985
    # self-describing: everything needed to use the model is in the file
    assert meta.labels == [str(i) for i in range(10)] and meta.preprocess and meta.versions
    assert meta.uncertainty.temperature > 0 and meta.data_fingerprint.startswith("sha256:")
