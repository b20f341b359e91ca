"""A CTC line reader for numbers: reads a whole line of digits without cutting it.

    python -m training.line_reader --minutes 8 --out /tmp/line-reader.safetensors

Why: :func:`mnist_desktop.core.numbers.read_number` over-segments and regroups. Where
neighbours' strokes interpenetrate (a 1 inside an 8), no top-to-bottom cut separates them;
on touching numbers made from validation digits even an oracle choice among its candidates
reads only 69% of 4-digit numbers. A small CRNN trained with CTC on whole lines reads them
without a cut (see the session note of 2026-12-06 for the figures).

This module is the recipe, not yet a shipped model: it trains on numbers composed
(:mod:`training.number_synth`) from the bundled training digits outside the default model's
validation split and measures on numbers made from that validation split. The MNIST test
set is not used. Weights are saved as safetensors with their settings in the metadata
(no pickle).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from mnist_desktop.core.line_reader import BLANK, HEIGHT, STRIDE, greedy_decode, line_from_ink

REPO = Path(__file__).resolve().parents[1]
STYLES = ("separated", "close", "touching", "touching")   # half of the training lines touch
__all__ = ["BLANK", "HEIGHT", "STRIDE", "greedy_decode", "line_image", "build_model", "train", "export_onnx"]


def line_image(source, options=None) -> np.ndarray:
    """The float ink line (``HEIGHT`` rows, 0 = background, 1 = ink) of an image of a
    number: the app's own path (:func:`mnist_desktop.core.numbers.ink_map`, then
    :func:`mnist_desktop.core.line_reader.line_from_ink`)."""
    from mnist_desktop.core.numbers import ink_map
    from mnist_desktop.core.preprocess import EmptyInputError, PreprocessOptions

    ink, _ = ink_map(source, options or PreprocessOptions())
    line = line_from_ink(ink)
    if line is None:
        raise EmptyInputError()
    return line.pixels


def make_lines(images: np.ndarray, labels: np.ndarray, count: int, seed: int,
               lengths: tuple[int, int] = (1, 6)) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``count`` composed numbers of ``lengths[0]..lengths[1]`` digits as ink lines:
    ``(uint8 lines padded to a common width, their widths, their texts)``."""
    from training.number_synth import number_image

    rng = np.random.default_rng([seed, 0x11E])
    lines, texts = [], []
    for _ in range(count):
        n = int(rng.integers(lengths[0], lengths[1] + 1))
        img, text = number_image(images, labels, rng, n, STYLES[int(rng.integers(0, len(STYLES)))])
        lines.append(line_image(img))
        texts.append(text)
    return (*_pad(lines), texts)


def _pad(lines: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Float ink lines as one uint8 array padded to the widest, and their widths."""
    arr = np.zeros((len(lines), HEIGHT, max(x.shape[1] for x in lines)), np.uint8)
    for k, x in enumerate(lines):
        arr[k, :, :x.shape[1]] = np.round(x * 255)
    return arr, np.array([x.shape[1] for x in lines])


def build_model(channels: tuple[int, int, int, int] = (32, 64, 96, 128), hidden: int = 128):
    """The CRNN: five 3x3 conv layers (two 2x2 pools, one 2x1) over the 24-px line, one
    column of features per 4 input columns, two residual temporal convs, 11 classes."""
    import torch.nn as nn
    import torch.nn.functional as F

    class LineReader(nn.Module):
        def __init__(self):
            super().__init__()
            c = channels

            def block(i, o):
                return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

            self.features = nn.Sequential(*block(1, c[0]), nn.MaxPool2d(2), *block(c[0], c[1]), nn.MaxPool2d(2),
                                          *block(c[1], c[2]), *block(c[2], c[2]), nn.MaxPool2d((2, 1)),
                                          *block(c[2], c[3]))
            self.proj = nn.Linear(3 * c[3], hidden)
            self.temporal = nn.Sequential(nn.Conv1d(hidden, hidden, 3, padding=1), nn.ReLU(inplace=True),
                                          nn.Conv1d(hidden, hidden, 3, padding=1), nn.ReLU(inplace=True))
            self.out = nn.Linear(hidden, BLANK + 1)

        def forward(self, x):            # (B, 1, 24, W) -> (W / 4, B, 11) log probabilities
            f = self.features(x)
            b, c_, h, t = f.shape
            f = F.relu(self.proj(f.permute(0, 3, 1, 2).reshape(b, t, c_ * h))).transpose(1, 2)
            f = f + self.temporal(f)
            return self.out(f.transpose(1, 2)).log_softmax(-1).transpose(0, 1)

    return LineReader()


def _batch(lines, widths, idx, rng=None):
    """A padded float batch (widths rounded up to the stride) and each line's frames;
    with ``rng``, width (0.8-1.25x), boldness and contrast augmentation."""
    import torch
    import torch.nn.functional as F

    xs = []
    for k in idx:
        x = lines[k][:, :widths[k]].astype(np.float32) / 255.0
        if rng is not None:
            t = torch.from_numpy(x)[None, None]
            t = F.interpolate(t, size=(HEIGHT, max(8, int(round(x.shape[1] * rng.uniform(0.8, 1.25))))),
                              mode="bilinear", align_corners=False)
            if rng.random() < 0.25:
                t = F.max_pool2d(t, 3, 1, 1)
            x = t[0, 0].numpy() * rng.uniform(0.7, 1.0)
        xs.append(x)
    width = int(math.ceil(max(x.shape[1] for x in xs) / STRIDE) * STRIDE)
    batch = np.zeros((len(xs), 1, HEIGHT, width), np.float32)
    for k, x in enumerate(xs):
        batch[k, 0, :, :x.shape[1]] = x
    return torch.from_numpy(batch), [int(math.ceil(x.shape[1] / STRIDE)) for x in xs]


def train(lines, widths, texts, seconds: float | None = None, steps: int | None = None,
          batch_size: int = 64, lr: float = 2e-3, seed: int = 0, log=print):
    """Train a line reader with CTC for ``seconds`` (or ``steps``), cosine learning rate,
    batches of similar widths. Returns ``(model, losses)``."""
    import torch
    import torch.nn.functional as F

    if (seconds is None) == (steps is None):
        raise ValueError("give seconds or steps")
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 0xC7C])
    model = build_model()
    opt = torch.optim.AdamW(model.parameters(), lr, weight_decay=1e-4)
    order = np.argsort(widths, kind="stable")
    targets = [torch.tensor([int(c) for c in t], dtype=torch.long) for t in texts]
    losses: list[float] = []
    t0 = time.perf_counter()
    step = 0

    def progress() -> float:
        return (time.perf_counter() - t0) / seconds if seconds is not None else step / steps

    model.train()
    while progress() < 1.0:
        chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        rng.shuffle(chunks)
        for idx in chunks:
            done = progress()
            if done >= 1.0:
                break
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * done))
            x, frames = _batch(lines, widths, idx, rng)
            lp = model(x)
            tl = [targets[k] for k in idx]
            loss = F.ctc_loss(lp, torch.cat(tl), torch.tensor([min(f, lp.shape[0]) for f in frames]),
                              torch.tensor([len(t) for t in tl]), blank=BLANK, zero_infinity=True)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
            if log and step % 500 == 0:
                log(f"step {step}: CTC loss {np.mean(losses[-100:]):.3f}")
    model.eval()
    return model, losses


def read_lines(model, lines, widths, batch_size: int = 128) -> list[str]:
    import torch

    out: list[str] = []
    with torch.no_grad():
        for i in range(0, len(widths), batch_size):
            idx = list(range(i, min(i + batch_size, len(widths))))
            x, frames = _batch(lines, widths, idx)
            best = model(x).argmax(-1).T.numpy()
            out += [greedy_decode(b[:f]) for b, f in zip(best, frames)]
    return out


def save(model, path: Path, meta: dict) -> None:
    """Weights as safetensors, ``meta`` (JSON) in its metadata: no pickle."""
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"line_reader": json.dumps(meta)})


def load(path: Path):
    """A line reader from :func:`save`'s file, and its metadata."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        meta = json.loads((f.metadata() or {}).get("line_reader", "{}"))
    model = build_model()
    model.load_state_dict(load_file(str(path)))
    model.eval()
    return model, meta


def export_onnx(model, models_dir: Path, meta: dict, atol: float = 1e-4) -> Path:
    """Write ``line-reader.onnx`` (dynamic width) and ``line-reader.json`` (its SHA-256,
    which the app checks before it runs the file, and ``meta``) into ``models_dir``, after
    checking ONNX Runtime's answers against torch's on lines of several widths."""
    import io

    import onnxruntime as ort
    import torch

    from mnist_desktop.core.line_reader import MANIFEST_FILE, MODEL_FILE, file_sha256

    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    buf = io.BytesIO()
    torch.onnx.export(model, (torch.zeros(1, 1, HEIGHT, 64),), buf, input_names=["line"],
                      output_names=["log_probs"],
                      dynamic_axes={"line": {0: "batch", 3: "width"}, "log_probs": {0: "frames", 1: "batch"}},
                      opset_version=17, dynamo=False)
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for width in (8, 36, 128, 400):
        x = rng.random((1, 1, HEIGHT, width), dtype=np.float32)
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        got = sess.run(None, {"line": x})[0]
        if got.shape != want.shape or not np.allclose(got, want, atol=atol):
            raise RuntimeError(f"ONNX export differs from torch at width {width}")
    onnx_path = models_dir / MODEL_FILE
    tmp = onnx_path.with_suffix(".onnx.tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(onnx_path)
    manifest = {"about": "The CTC line reader for numbers (training/line_reader.py). The app runs "
                         f"{MODEL_FILE} only when its SHA-256 is this one (mnist_desktop/core/line_reader.py).",
                "onnx_sha256": file_sha256(onnx_path), "height": HEIGHT, "stride": STRIDE, "blank": BLANK,
                "trained_on": "numbers composed from the bundled 5k MNIST training subset, outside the "
                              "default model's validation split (0.1, seed 0); the MNIST test set is not used",
                **meta}
    (models_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return onnx_path


def development_digits(validation: bool):
    """The bundled training digits outside (or, ``validation``, inside) the default
    model's validation split (0.1, seed 0)."""
    from mnist_desktop.core.data import load_idx_folder
    from training.data import validation_split

    split = load_idx_folder(REPO / "resources/data/mnist-5k", "train-5k")
    train_idx, val_idx = validation_split(split.labels, 0.1, 0)
    idx = val_idx if validation else train_idx
    return split.images[idx], split.labels[idx]


def measure(model, count: int = 200, seed: int = 0, lengths=(2, 4), styles=("separated", "close", "touching")):
    """Exact-number accuracy on numbers made from the validation digits, per style and
    length (the same seeds as :mod:`training.number_bench`)."""
    from training.number_bench import SEED_OF_STYLE
    from training.number_synth import number_image

    images, labels = development_digits(validation=True)
    table = {}
    for style in styles:
        for n in lengths:
            rng = np.random.default_rng([seed, n, SEED_OF_STYLE[style]])
            pairs = [number_image(images, labels, rng, n, style) for _ in range(count)]
            got = read_lines(model, *_pad([line_image(img) for img, _ in pairs]))
            table[(style, n)] = float(np.mean([g == t for g, (_, t) in zip(got, pairs)]))
    return table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=8.0, help="training time (default 8)")
    p.add_argument("--lines", type=int, default=160_000, help="composed training lines (default 160,000)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="where to write the weights (.safetensors)")
    p.add_argument("--export", metavar="DIR", help="also write line-reader.onnx and line-reader.json "
                   "into DIR (resources/models ships them)")
    p.add_argument("--from-weights", action="store_true",
                   help="do not train: load --out and export or measure it")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.from_weights:
        model, meta = load(Path(args.out))
        if args.export:
            print(f"wrote {export_onnx(model, Path(args.export), meta)}")
        for (style, n), acc in measure(model).items():
            print(f"validation digits, {style}, {n} digits: {100 * acc:.1f}% exact")
        return 0
    images, labels = development_digits(validation=False)
    t0 = time.perf_counter()
    lines, widths, texts = make_lines(images, labels, args.lines, args.seed)
    print(f"{args.lines} lines composed in {time.perf_counter() - t0:.0f} s")
    model, losses = train(lines, widths, texts, seconds=60 * args.minutes, seed=args.seed,
                          log=lambda m: print(m, flush=True))
    meta = {"lines": args.lines, "minutes": args.minutes, "seed": args.seed, "steps": len(losses),
            "height": HEIGHT}
    save(model, Path(args.out), meta)
    print(f"wrote {args.out}")
    if args.export:
        print(f"wrote {export_onnx(model, Path(args.export), meta)}")
    for (style, n), acc in measure(model).items():
        print(f"validation digits, {style}, {n} digits: {100 * acc:.1f}% exact")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
