"""The stroke-drawing generator: determinism, seeds, templates, rendering, non-digits."""

from __future__ import annotations

import numpy as np
import pytest

from training import synth
from mnist_desktop.core.paths import default_model_path
from mnist_desktop.core.preprocess import preprocess


def _points(sample: synth.SynthSample) -> list[np.ndarray]:
    return [s.points for s in sample.drawing.strokes]


def test_digits_are_deterministic_and_independent_of_set_size():
    a = list(synth.digit_samples(6, "evaluation", seed=3))
    b = list(synth.digit_samples(6, "evaluation", seed=3))
    tail = list(synth.digit_samples(2, "evaluation", seed=3, start=4))
    for x, y in zip(a, b):
        assert x.name == y.name and x.pen_width == y.pen_width
        assert all(np.array_equal(p, q) for p, q in zip(_points(x), _points(y)))
    for x, y in zip(a[4:], tail):
        assert all(np.array_equal(p, q) for p, q in zip(_points(x), _points(y)))
    assert np.array_equal(np.asarray(a[0].render("dark_on_light")), np.asarray(b[0].render("dark_on_light")))
    assert [s.label for s in a] == [0, 1, 2, 3, 4, 5]


def test_purposes_and_seeds_give_different_drawings():
    first = {p: next(synth.digit_samples(1, p, seed=0)) for p in synth.PURPOSE_SEED_BASE}
    other_seed = next(synth.digit_samples(1, "evaluation", seed=1))
    drawings = [*first.values(), other_seed]
    for i in range(len(drawings)):
        for j in range(i + 1, len(drawings)):
            assert not np.array_equal(_points(drawings[i])[0], _points(drawings[j])[0])


@pytest.mark.parametrize("bad", [("evaluation", -1), ("evaluation", synth.SEEDS_PER_PURPOSE), ("test", 0)])
def test_seed_ranges_are_enforced(bad):
    purpose, seed = bad
    with pytest.raises(ValueError):
        next(synth.digit_samples(1, purpose, seed))


@pytest.mark.parametrize("label", range(10))
def test_every_digit_style_draws_inside_its_canvas(label):
    for style in synth.DIGIT_STYLES[label]:
        for k in range(3):
            s = synth.generate_digit(np.random.default_rng([label, k]), label, style)
            w, h = s.drawing.canvas_size
            assert 280 <= w <= 600 and 280 <= h <= 600
            pts = np.vstack(_points(s))
            assert pts[:, 0].min() >= 0 and pts[:, 0].max() <= w
            assert pts[:, 1].min() >= 0 and pts[:, 1].max() <= h
            assert ((pts[:, 2] > 0) & (pts[:, 2] <= 1)).all()
            assert s.name == f"{label}/{style}" and s.pen_width >= 1.5
            x = preprocess(s.drawing)
            assert x.shape == (28, 28) and x.max() > 0.5


def test_render_polarities_and_pen_width():
    s = synth.generate_digit(np.random.default_rng(5), 8)
    dark = np.asarray(synth.render_drawing(s.drawing, 10, "dark_on_light"), np.float32)
    light = np.asarray(synth.render_drawing(s.drawing, 10, "light_on_dark"), np.float32)
    assert dark.shape == (s.drawing.canvas_size[1], s.drawing.canvas_size[0])
    assert np.allclose(dark + light, 255)  # exact negatives with pure levels
    assert dark[0, 0] == 255 and dark.min() == 0
    thin = (np.asarray(synth.render_drawing(s.drawing, 3)) < 128).sum()
    fat = (np.asarray(synth.render_drawing(s.drawing, 20)) < 128).sum()
    assert fat > 3 * thin
    # Both polarities through the image path give the same model input.
    a = preprocess(s.render("dark_on_light", artifacts=None))
    b = preprocess(s.render("light_on_dark", artifacts=None))
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95


def test_artifacts_are_seeded_and_change_the_image():
    s = next(synth.digit_samples(1, "evaluation", seed=7))
    clean = np.asarray(s.render("dark_on_light", artifacts=None), np.int16)
    art = synth.Artifacts(blur_sigma=1.0, noise_sigma=0.03, jpeg_quality=40)
    once = np.asarray(s.render("dark_on_light", artifacts=art), np.int16)
    again = np.asarray(s.render("dark_on_light", artifacts=art), np.int16)
    assert np.array_equal(once, again)
    assert once.shape == clean.shape and np.abs(once - clean).mean() > 1.0
    assert synth.artifacts_label(art) == "blur+noise+jpeg" and synth.artifacts_label(None) == "clean"


def test_style_factors_cover_the_variation():
    samples = list(synth.digit_samples(200, "evaluation", seed=0))
    factors = [synth.style_factors(s.params) for s in samples]
    for name in ("small", "large", "thin_pen", "fat_pen", "off_centre", "rotated", "slanted", "tablet"):
        share = np.mean([f[name] for f in factors])
        assert 0.05 < share < 0.7, (name, share)
    assert len({s.name for s in samples}) >= 25  # most templates appear


def test_bundled_model_reads_generated_digits():
    """Generated digits are recognizable: the bundled model reads > 90% of 200 of them
    through the stroke path, and > 90% of 100 clean renders through the image path."""
    import torch

    from mnist_desktop.core.torch_predictor import TorchPredictor

    torch.set_num_threads(1)
    predictor = TorchPredictor.from_file(default_model_path(), device="cpu")
    samples = list(synth.digit_samples(200, "evaluation", seed=0))
    ps = synth.preprocess_samples(samples, "stroke", predictor.options)
    assert len(ps) == 200 and not ps.rejected
    assert (predictor.logits(ps.images).argmax(1) == ps.labels).mean() > 0.90
    images = np.stack([preprocess(s.render(synth.POLARITIES[i % 2], artifacts=None), predictor.options)
                       for i, s in enumerate(samples[:100])])
    labels = np.array([s.label for s in samples[:100]])
    assert (predictor.logits(images).argmax(1) == labels).mean() > 0.90


def test_letters_exclude_digit_lookalikes():
    assert not set(synth.LETTERS) & set(synth.EXCLUDED_LOOKALIKES)
    for kind, names in synth.HELD_OUT_FROM_TRAINING.items():
        assert kind in synth.NONDIGIT_KINDS


@pytest.mark.parametrize("kind", synth.NONDIGIT_KINDS)
def test_every_nondigit_name_generates(kind):
    names = {"letter": synth.LETTERS, "scribble": synth.SCRIBBLES, "shape": synth.SHAPES,
             "blob": synth.BLOBS, "noise": synth.NOISES, "multi": synth.MULTIS}[kind]
    for name in names:
        s = synth.generate_nondigit(np.random.default_rng(1), kind, name)
        assert s.label == -1 and s.kind == kind and s.name == name
        img = s.render("light_on_dark")
        assert img.mode == "L" and img.size == tuple(s.params["canvas"])
        if kind == "noise":
            assert s.drawing is None
        else:
            assert preprocess(s.drawing).shape == (28, 28)


@pytest.mark.slow
def test_nondigit_sets_mix_kinds_and_paths_and_keep_training_apart():
    samples = list(synth.nondigit_samples(150, "evaluation", seed=0))
    assert {s.kind for s in samples} == set(synth.NONDIGIT_KINDS)
    ps = synth.preprocess_samples(samples, "mixed")
    assert set(ps.paths) == set(synth.PATHS)
    assert len(ps) + len(ps.rejected) == 150
    assert ps.images.shape == (len(ps), 28, 28) and (ps.labels == -1).all()
    again = synth.preprocess_samples(synth.nondigit_samples(150, "evaluation", seed=0), "mixed")
    assert again.paths == ps.paths and np.array_equal(again.images, ps.images)
    train = list(synth.nondigit_samples(300, "train", seed=0))
    assert not [s for s in train if s.name in synth.HELD_OUT_FROM_TRAINING[s.kind]]


def test_digit_images_for_training():
    x, y = synth.digit_images(20, "train", seed=4)
    assert x.shape == (20, 28, 28) and x.dtype == np.float32
    assert list(y) == [i % 10 for i in range(20)]
    x2, _ = synth.digit_images(20, "train", seed=4)
    assert np.array_equal(x, x2)
