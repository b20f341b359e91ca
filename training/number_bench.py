"""Exact-number accuracy of :func:`mnist_desktop.core.numbers.read_number`.

    python -m training.number_bench                     # develop: validation digits + drawings
    python -m training.number_bench --measure-test --output docs/results/numbers.md
                                                        # and once: numbers made from MNIST test digits

Numbers of 2-6 digits are composed by :mod:`training.number_synth` (separated, close
and touching digits; scan-like polarity at random); a reading counts only when every digit is
right and none is missing or extra. The develop run also reads generated stroke drawings
(the canvas path). The MNIST test set is for measuring only: nothing is tuned on it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SEED_OF_STYLE = {"separated": 0, "touching": 1, "close": 2}   # the numbers of a style stay the same


def _predictor(model: str | None):
    from mnist_desktop.core.onnx_predictor import OnnxPredictor, onnx_for

    source = Path(model) if model else REPO / "resources/models/default.safetensors"
    return OnnxPredictor(onnx_for(source), source=source)


def measure_images(predictor, images, labels, lengths, styles, count, seed, config=None) -> dict:
    from mnist_desktop.core.numbers import read_number
    from training.number_synth import number_image

    out = {}
    for style in styles:
        for n in lengths:
            rng = np.random.default_rng([seed, n, SEED_OF_STYLE[style]])
            right = digits_found = 0
            t0 = time.perf_counter()
            for _ in range(count):
                img, text = number_image(images, labels, rng, n, style)
                reading = read_number(predictor, img, config=config)
                right += reading.text == text
                digits_found += len(reading.digits) == n
            out[(style, n)] = (right / count, digits_found / count, (time.perf_counter() - t0) / count)
    return out


def measure_drawings(predictor, lengths, count, seed) -> dict:
    from mnist_desktop.core.numbers import read_number
    from training.number_synth import number_drawing

    out = {}
    for n in lengths:
        rng = np.random.default_rng([seed, n, 99])
        right = found = 0
        t0 = time.perf_counter()
        for _ in range(count):
            drawing, text = number_drawing(rng, n)
            reading = read_number(predictor, drawing)
            right += reading.text == text
            found += len(reading.digits) == n
        out[("drawn", n)] = (right / count, found / count, (time.perf_counter() - t0) / count)
    return out


def _print(title: str, table: dict) -> None:
    print(title)
    print(f"{'kind':<10} {'digits':>6} {'exact':>8} {'count ok':>9} {'ms/number':>10}")
    for (kind, n), (exact, found, sec) in table.items():
        print(f"{kind:<10} {n:>6} {100 * exact:>7.1f}% {100 * found:>8.1f}% {1000 * sec:>10.1f}")


def _markdown(title: str, table: dict) -> str:
    rows = [f"### {title}", "", "| kind | digits | exact number | digit count right | ms per number |",
            "|---|---:|---:|---:|---:|"]
    for (kind, n), (exact, found, sec) in table.items():
        rows.append(f"| {kind} | {n} | {100 * exact:.1f}% | {100 * found:.1f}% | {1000 * sec:.1f} |")
    return "\n".join(rows) + "\n"


def _cpu() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "unknown CPU"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="model file (default: the bundled model)")
    p.add_argument("--count", type=int, default=200, help="numbers per length and style (default 200)")
    p.add_argument("--lengths", default="2,3,4,5,6")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--measure-test", action="store_true",
                   help="numbers made from MNIST test digits (measuring only; run once)")
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "mnist"),
                   help="MNIST IDX folder for --measure-test")
    p.add_argument("--output", help="also write the tables (and this command) to a Markdown file")
    args = p.parse_args(argv)
    import sys

    from mnist_desktop.core.data import load_idx_folder

    lengths = [int(x) for x in args.lengths.split(",")]
    predictor = _predictor(args.model)
    styles = ["separated", "close", "touching"]
    sections = []
    from mnist_desktop.core.numbers import SegmentationConfig
    from training.line_reader import development_digits

    alone = SegmentationConfig(line_reader=False)
    images, labels = development_digits(validation=True)
    for config, how in ((None, "with the line reader"), (alone, "segmentation alone")):
        table = measure_images(predictor, images, labels, lengths, styles, args.count, args.seed, config)
        if config is None:
            table.update(measure_drawings(predictor, lengths, args.count, args.seed))
        title = (f"Develop, {how}: validation digits (the default model's held-out 500 of the bundled "
                 f"subset){' and generated drawings' if config is None else ''} ({args.count} numbers per row)")
        _print(title, table)
        sections.append(_markdown(title, table))
    if args.measure_test:
        split = load_idx_folder(Path(args.data), "test")
        for config, how in ((None, "with the line reader"), (alone, "segmentation alone")):
            table = measure_images(predictor, split.images, split.labels, lengths, styles, args.count,
                                   args.seed, config)
            title = f"Measured once, {how}: numbers made from MNIST test digits ({args.count} numbers per row)"
            _print(title, table)
            sections.append(_markdown(title, table))
    if args.output:
        command = "python -m training.number_bench " + " ".join(sys.argv[1:] if argv is None else argv)
        head = ("# Reading numbers: exact-number accuracy\n\n"
                f"Written by `{command.strip()}` (model: {predictor.path.name}, ONNX Runtime, "
                f"{_cpu()}).\n\n"
                "A number counts as read only when every digit is right and none is missing or extra. "
                "Images come from `training/number_synth.py`: digits 80-100% of the line height on a "
                "drifting baseline, `separated` 2-9 px apart (28-px digits), `close` moved together while "
                "their ink stays 2-3 px apart (boxes may overlap), `touching` moved together "
                "until their ink touches and 0-2 px further; half dark on light. `drawn` numbers are "
                "generated stroke digits (`training.synth`) written side by side on the canvas path (the line "
                "reader reads images only). The line reader trained on numbers made from the bundled "
                "digits outside the validation split (`python -m training.line_reader`).\n\n")
        Path(args.output).write_text(head + "\n".join(sections), encoding="utf-8")
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
