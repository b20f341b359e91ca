"""``mnist-desktop --self-test``: does this installation (installed, editable or frozen)
work end to end? Each check prints one line; the caller exits 0 when all passed.

1. the bundled model loads (ONNX Runtime on the CPU, as ``classify`` does);
2. the bundled sample images of every digit (``resources/samples/<digit>-*.png``) are
   classified through ``classify``'s path and every answer is checked;
3. one tiny training run goes through the app's own ``train`` subcommand, started the
   way the GUI starts it (:func:`~mnist_desktop.core.app_command.app_command`), so a
   frozen program proves that it can re-invoke itself. The lite flavour (no torch)
   skips this check with the reason; a skip is not a failure.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PASS, FAIL, SKIP = "ok", "FAILED", "skipped"


@dataclass
class Check:
    name: str
    outcome: str
    detail: str

    def line(self) -> str:
        return f"[{self.outcome}] {self.name}: {self.detail}"


def _samples() -> list[Path]:
    from mnist_desktop.core.paths import resources_dir

    return sorted((resources_dir() / "samples").glob("*.png"))


def check_model() -> tuple[Check, object | None]:
    from mnist_desktop.service.models import CheckpointError, ModelChoice, load_predictor

    try:
        loaded = load_predictor(ModelChoice(None, "cpu"))
    except CheckpointError as e:
        return Check("bundled model", FAIL, str(e)), None
    return Check("bundled model", PASS, loaded.describe()), loaded


def check_samples(loaded) -> Check:
    from mnist_desktop.core.batch import classify_files

    files = _samples()
    digits = {f.name[0] for f in files}
    if len(digits) < 10:
        return Check("sample images", FAIL, f"found samples of {len(digits)} digit(s) in "
                     f"{files[0].parent if files else 'resources/samples'}, expected all 10")
    results = list(classify_files(files, loaded.predictor, workers=0))
    wrong = [f"{Path(r.path).name} -> {r.error or r.prediction}" for r, f in zip(results, files)
             if not r.ok or r.prediction != f.name[0]]
    if wrong:
        return Check("sample images", FAIL, f"{len(wrong)} of {len(files)} wrong: {', '.join(wrong[:5])}")
    return Check("sample images", PASS, f"{len(files)} of {len(files)} right (every digit)")


def check_training(timeout: float = 300) -> Check:
    from mnist_desktop.core.app_command import app_command
    from mnist_desktop.core.flavour import training_unavailable_reason
    from mnist_desktop.core.paths import resources_dir

    reason = training_unavailable_reason()
    if reason:
        return Check("training", SKIP, "training needs the full program (this build has no torch)")
    data = resources_dir() / "data" / "mnist-5k"
    with tempfile.TemporaryDirectory(prefix="mnist-self-test-") as out:
        cmd = app_command("train", "--recipe", "mlp", "--data", str(data), "--limit", "200", "--epochs", "1",
                          "--threads", "1", "--output", out, "--quiet")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                                  stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as e:
            return Check("training", FAIL, f"could not run {cmd[0]} train: {e}")
        models = list(Path(out).glob("*/best.safetensors"))
        if proc.returncode != 0 or not models:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return Check("training", FAIL, f"'train' exited {proc.returncode}: {tail[:200]}")
        from mnist_desktop.core.checkpoint import check_model as check_file

        try:
            check_file(models[0])
        except Exception as e:  # the new model must load like any other
            return Check("training", FAIL, f"the trained model does not load: {e}")
    return Check("training", PASS, "one tiny run through the 'train' subcommand wrote a loadable model")


def run_self_test(say: Callable[[str], None] = print) -> list[Check]:
    """Run every check, printing a line each; returns them (failed ones have outcome FAILED)."""
    checks = []
    model, loaded = check_model()
    checks.append(model)
    say(model.line())
    if loaded is not None:
        c = check_samples(loaded)
        checks.append(c)
        say(c.line())
    c = check_training()
    checks.append(c)
    say(c.line())
    return checks
