"""What the installable program relies on: resources ship as package data, and child
processes start through the app's own command (never ``python -m``)."""

from pathlib import Path

from mnist_desktop.core.app_command import app_command
from mnist_desktop.core.paths import default_model_path, resources_dir

REPO = Path(__file__).resolve().parents[1]


def test_resources_found_in_checkout_and_samples_cover_every_digit():
    assert default_model_path().is_file()
    digits = {p.name[0] for p in (resources_dir() / "samples").glob("*.png")}
    assert digits == set("0123456789")


def test_setup_maps_resources_as_package_data():
    text = (REPO / "setup.py").read_text()
    assert '"mnist_desktop.resources": "resources"' in text


def test_cross_validation_folds_run_through_the_app_command():
    from training.cv import fold_command

    cmd = fold_command(["--recipe", "mlp"], 5, 0, Path("out"), "cv")
    start = app_command("train")
    assert cmd[:len(start)] == start and "--val-fold" in cmd
