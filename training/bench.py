"""``python -m training.bench``: training throughput of every recipe on this machine.

For each recipe it builds the recipe's model, optimizer, scheduler and augmentation, puts a
60,000-image training set on the device (Fashion-MNIST from
``/usr/share/datasets/fashion-mnist`` when installed, else random images; throughput does not
depend on the pixel values) and times the very step function the training loop runs
(:class:`training.engine.StepFunction`: augmentation, forward, loss, backward, update) on
batch index gathers, with no DataLoader. To stay quick it times a limited number of steps
(``--seconds`` per recipe after warm-up) and extrapolates to a full 60,000-image epoch; the
output says so. Validation and checkpointing, a few percent of an epoch, are not included.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

FASHION = Path("/usr/share/datasets/fashion-mnist")
EPOCH_IMAGES = 60_000


def load_bench_images() -> tuple[np.ndarray, np.ndarray, str]:
    """60,000 training images + labels (uint8) and a description of where they came from."""
    from mnist_desktop.core.data import DataError, load_idx_folder

    try:
        s = load_idx_folder(FASHION, "train")
        return s.images, s.labels, f"Fashion-MNIST train ({len(s.labels):,} images, {FASHION})"
    except DataError:
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (EPOCH_IMAGES, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, EPOCH_IMAGES).astype(np.int64)
        return images, labels, f"synthetic random images ({EPOCH_IMAGES:,}; {FASHION} not installed)"


def _sync(device: str) -> None:
    import torch
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_recipe(name: str, x, y, device: str, seconds: float, max_steps: int, batch_size: int | None = None) -> dict:
    """Time the training step of recipe ``name`` on device-resident ``x``/``y``."""
    import torch

    from mnist_desktop.core.models import build_model, count_parameters
    from training.engine import StepFunction, make_optimizer, make_scheduler, steps_per_epoch
    from training.recipes import recipe_config

    cfg = recipe_config(name, **({"batch_size": batch_size} if batch_size else {}))
    torch.manual_seed(0)
    model = build_model(cfg.arch, num_classes=10, **cfg.arch_args).to(device).train()
    opt = make_optimizer(cfg, model.parameters())
    spe = steps_per_epoch(len(y), cfg.batch_size)
    sched, per_step = make_scheduler(cfg, opt, spe * cfg.epochs)
    gen = torch.Generator(device=device).manual_seed(0)
    step = StepFunction(cfg, model, opt, sched, per_step, gen)
    perm = torch.randperm(len(y), device=device)
    bs = cfg.batch_size

    def run(k: int) -> None:
        i = (k * bs) % (len(y) - bs)
        idx = perm[i:i + bs]
        step(x[idx], y[idx])

    for k in range(5):  # warm-up: allocator, kernels, autotuning
        run(k)
    _sync(device)
    steps, t0 = 0, time.perf_counter()
    while steps < max_steps and (time.perf_counter() - t0 < seconds or steps < 3):
        run(steps)
        steps += 1
        if device.startswith("cuda") and steps % 50 == 0:
            _sync(device)
    _sync(device)
    dt = time.perf_counter() - t0
    ips = steps * bs / dt
    return {"recipe": name, "arch": cfg.arch, "params": count_parameters(model), "batch": bs,
            "augment": cfg.augment.enabled, "steps": steps, "images_per_s": ips,
            "epoch_s": EPOCH_IMAGES / ips}


def main(argv=None) -> int:
    from training.recipes import RECIPES

    p = argparse.ArgumentParser(prog="python -m training.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated recipe names")
    p.add_argument("--devices", default="auto", help="cpu, cuda or auto (CPU, plus CUDA when available)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: all of torch's)")
    p.add_argument("--seconds", type=float, default=2.0, help="timed seconds per recipe (default 2)")
    p.add_argument("--max-steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, help="override every recipe's batch size")
    args = p.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.recipes.split(",") if n.strip()]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        print(f"training.bench: error: unknown recipe(s) {', '.join(unknown)}", file=sys.stderr)
        return 2
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if args.devices == "auto" \
        else [d.strip() for d in args.devices.split(",")]
    images, labels, source = load_bench_images()
    try:
        load = os.getloadavg()[0]
        busy = " - other processes compete for the CPU, figures are lower bounds" if load > 0.5 else ""
        print(f"machine: {os.cpu_count()} CPU cores, load average {load:.1f}{busy}")
    except OSError:  # not available on Windows
        pass
    print(f"data: {source}; resident on the device, batches gathered by index (no DataLoader)")
    print(f"method: {args.seconds:g} s of training steps per recipe after 5 warm-up steps, extrapolated "
          f"to one {EPOCH_IMAGES:,}-image epoch (validation and checkpointing not included)")
    best: dict[str, tuple[float, str]] = {}
    for device in devices:
        if device.startswith("cuda") and not torch.cuda.is_available():
            print(f"\n{device}: not available, skipped")
            continue
        n = torch.get_num_threads()
        what = f"CPU, {n} thread{'s' if n > 1 else ''}" if device == "cpu" else torch.cuda.get_device_name(device)
        print(f"\n{device} ({what})")
        print(f"{'recipe':<10} {'arch':<10} {'params':>9} {'batch':>5} {'aug':>4} {'steps':>6} "
              f"{'images/s':>10} {'s/60k epoch':>12}")
        x = torch.from_numpy(images).to(device)
        y = torch.from_numpy(labels).to(device)
        for name in names:
            r = bench_recipe(name, x, y, device, args.seconds, args.max_steps, args.batch_size)
            print(f"{r['recipe']:<10} {r['arch']:<10} {r['params']:>9,} {r['batch']:>5} "
                  f"{'yes' if r['augment'] else 'no':>4} {r['steps']:>6} {r['images_per_s']:>10,.0f} "
                  f"{r['epoch_s']:>12.2f}", flush=True)
            if device not in best or r["epoch_s"] < best[device][0]:
                best[device] = (r["epoch_s"], name)
    for device, (s, name) in best.items():
        goal = 6.0 if device == "cpu" else 0.25
        verdict = "meets" if s <= goal else "misses"
        print(f"\nfastest on {device}: {name}, {s:.2f} s per 60k epoch ({verdict} the goal of <= {goal:g} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
