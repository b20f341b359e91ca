"""Batch-classification throughput and memory benchmark (prints figures; not a test).

    python -m mnist_desktop.batch_bench                       # 20,000 files of each size
    python -m mnist_desktop.batch_bench --files 200000 --sizes 28 --baseline-files 0

For each image size (28x28 and 280x280 PNGs made from the MNIST train-5k images, repeated;
``photo``: 12-megapixel JPEGs of those digits on unevenly lit paper) it generates the files
once under ``--dir`` (kept for later runs), then measures:

* **engine**: images/s end to end - listing, decoding, preprocessing and inference, with
  every result kept in a :class:`~mnist_desktop.core.batch.ResultStore` as the CLI and
  the GUI do - and the peak resident memory of this process plus all its child processes
  (sampled from /proc every 20 ms; RSS summed, which counts pages shared between the
  forked workers more than once, so it is an upper bound; PSS, the fair share, too).
  Like ``mnist-desktop classify``, the measuring process starts the worker server before
  it loads the model (:func:`~mnist_desktop.core.batch.prestart_workers`); the time from
  there, model loading included, is printed as well.
* **baseline**: a plain one-image-at-a-time loop, ``Image.open`` -> ``preprocess`` ->
  one torch forward (one torch thread), on the first ``--baseline-files`` files in the
  same run; the ratio engine / baseline is printed.

* **ceilings**: each backend's model alone on batches of MNIST-like inputs, one thread
  (what each worker runs), and PNG decoding alone (bytes to pixels, as the workers do).
  ``cores / model time`` is a ceiling no decoding speed can lift (the default model's fp32
  forward is ~14.6 MFLOP per image); ``cores / (decode + model time)`` one that no
  preprocessing speed-up can lift.

Engine and baseline also print CPU time per image (all processes), and the rate that CPU
time would give if the cores were not shared with other work - the wall-clock figures
depend on the machine's load, which is printed first.

Goals on the 2-core development machine: >= 15,000 images/s for 28x28 PNGs, >= 4,000
images/s for 280x280 PNGs, <= 500 MB peak RSS for 200,000 files.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

DEFAULT_DIR = Path("/tmp/mnist-desktop-batch-bench")
SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


# --------------------------------------------------------------------------- data

def generate_pngs(folder: Path, n: int, size: int, mnist_dir: Path) -> Path:
    """Write ``n`` PNGs (``size`` x ``size``) into ``folder/<label>/`` once; a marker file
    records completion so later runs reuse them."""
    from PIL import Image

    from mnist_desktop.core.data import load_idx_folder

    out = folder / f"png{size}_{n}"
    marker = out / ".complete"
    if marker.exists():
        return out
    split = load_idx_folder(mnist_dir, "train-5k")
    order = np.random.default_rng(0).permutation(len(split.images))
    t0 = time.perf_counter()
    for lab in set(split.labels.tolist()):
        (out / str(lab)).mkdir(parents=True, exist_ok=True)
    for j in range(n):
        i = order[j % len(order)]
        d = out / str(split.labels[i])
        img = Image.fromarray(split.images[i])
        if size != 28:
            img = img.resize((size, size), Image.BILINEAR)
        img.save(d / f"{j:07d}.png", compress_level=6)
        if j % 20000 == 19999:
            print(f"  generated {j + 1:,} / {n:,} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    marker.write_text("ok\n")
    return out


PHOTO_SIZE = (4000, 3000)


def generate_photos(folder: Path, n: int, mnist_dir: Path) -> Path:
    """Write ``n`` 12-megapixel JPEG "phone photos" into ``folder/<label>/`` once: an MNIST
    digit (dark ink, 15-50% of the short side, anywhere) on unevenly lit, noisy paper."""
    from PIL import Image

    from mnist_desktop.core.data import load_idx_folder

    out = folder / f"photo{PHOTO_SIZE[0]}_{n}"
    marker = out / ".complete"
    if marker.exists():
        return out
    split = load_idx_folder(mnist_dir, "train-5k")
    rng = np.random.default_rng(0)
    w, h = PHOTO_SIZE
    xx = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    for lab in set(split.labels.tolist()):
        (out / str(lab)).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for j in range(n):
        i = int(rng.integers(len(split.images)))
        shade = float(rng.uniform(0, 50))
        paper = 220 - shade * xx - 0.5 * shade * yy + rng.integers(-6, 7, (h, w)).astype(np.float32)
        canvas = Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8))
        side = int(min(w, h) * rng.uniform(0.15, 0.5))
        ink = Image.fromarray(split.images[i]).resize((side, side), Image.BICUBIC)
        canvas.paste(int(rng.integers(20, 80)), (int(rng.integers(0, w - side)), int(rng.integers(0, h - side))), ink)
        canvas.convert("RGB").save(out / str(split.labels[i]) / f"{j:05d}.jpg", quality=90)
        if j % 50 == 49:
            print(f"  generated {j + 1:,} / {n:,} photos ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    marker.write_text("ok\n")
    return out


def warm_page_cache(folder: Path) -> None:
    """Read every file once, so that every backend and the baseline see the same warm page
    cache: a cold read costs milliseconds per file on this machine's disk and would be
    charged to whichever measurement came first."""
    t0 = time.perf_counter()
    n = 0
    for root, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(root, name), "rb") as f:
                f.read()
            n += 1
    print(f"page cache warmed: {n:,} files read in {time.perf_counter() - t0:.1f} s", flush=True)


# --------------------------------------------------------------------------- memory sampling

def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(b")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _mem_kb(pid: int) -> tuple[int, int]:
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


class PeakMemory:
    """Samples RSS and PSS of this process and all its descendants in a thread, and
    their CPU time (the last value seen per process, less what each had used before;
    the sampler's own CPU time is left out)."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.peak_rss_kb = self.peak_pss_kb = self.peak_processes = 0
        self._cpu: dict[int, float] = {}
        self._cpu0: dict[int, float] = {}
        self._own_cpu = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = _descendants(os.getpid())
            rss = pss = 0
            for p in pids:
                r, s = _mem_kb(p)
                rss += r
                pss += s
                c = _cpu_seconds(p)
                if c is not None:
                    self._cpu[p] = c
            self.peak_rss_kb = max(self.peak_rss_kb, rss)
            self.peak_pss_kb = max(self.peak_pss_kb, pss)
            self.peak_processes = max(self.peak_processes, len(pids))
            self._stop.wait(self.interval)
        self._own_cpu = time.thread_time()

    @property
    def cpu_seconds(self) -> float:
        """CPU seconds used by this process and its descendants while sampling."""
        return sum(c - self._cpu0.get(p, 0.0) for p, c in self._cpu.items()) - self._own_cpu

    def __enter__(self) -> "PeakMemory":
        for p in _descendants(os.getpid()):
            self._cpu0[p] = _cpu_seconds(p) or 0.0
        if Path("/proc/self/smaps_rollup").exists():
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        me = _cpu_seconds(os.getpid())
        if me is not None:
            self._cpu[os.getpid()] = me


# --------------------------------------------------------------------------- measurements

def run_engine(folder: Path, loaded, workers: int | None, batch_size: int) -> dict:
    """Listing + decoding + preprocessing + inference through the service's classify job
    (what ``mnist-desktop classify`` runs), results kept in a ResultStore."""
    from mnist_desktop.core.batch import ResultStore
    from mnist_desktop.service.classify import ClassifyOptions, Listed, Results, classify_job

    labels = loaded.predictor.labels
    options = ClassifyOptions(workers=workers, batch_size=batch_size)
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        store = ResultStore(labels)
        t_list = 0.0
        for event in classify_job([folder], options, loaded=loaded):
            if isinstance(event, Listed):
                t_list = time.perf_counter() - t0
            elif isinstance(event, Results):
                store.extend(event.rows)
        elapsed = time.perf_counter() - t0
    rep = store.report()
    return {"n": len(store), "failed": store.failed, "seconds": elapsed, "listing_s": t_list,
            "rate": len(store) / elapsed, "accuracy": rep["accuracy"] if rep else float("nan"),
            "peak_rss_mb": mem.peak_rss_kb / 1024, "peak_pss_mb": mem.peak_pss_kb / 1024,
            "processes": mem.peak_processes, "cpu_s": mem.cpu_seconds}


def run_window(folder: Path, model_path, workers: int | None) -> dict:
    """The batch window (offscreen) classifying ``folder`` as a user would: its grid,
    thumbnails and status line update while it runs. Timed from ``classify()`` to
    ``runFinished``, with every result in the window's model."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from mnist_desktop.ui.batch import BatchWindow

    app = QApplication.instance() or QApplication([])
    window = BatchWindow(str(model_path), "cpu", workers=workers)
    window.show()
    done: dict = {}
    window.runFinished.connect(lambda cancelled: (done.update(t=time.perf_counter(), cancelled=cancelled),
                                                  app.quit()))
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        window.classify([folder])
        app.exec()
    n = window.model.rowCount()
    elapsed = done["t"] - t0
    window.close()
    return {"n": n, "failed": window.store.failed, "seconds": elapsed, "rate": n / elapsed,
            "peak_rss_mb": mem.peak_rss_kb / 1024, "cpu_s": mem.cpu_seconds}


BACKENDS = ("onnx", "onnx-int8", "torch", "torch-bf16")


def load_backend(model_path, backend: str):
    """The service's loaded model for ``backend``, as ``classify --precision`` gets it."""
    from mnist_desktop.service.models import LoadedPredictor, ModelChoice, load_predictor

    if backend == "torch":   # the service would pick ONNX Runtime for fp32 on a CPU
        from mnist_desktop.core.torch_predictor import TorchPredictor

        return LoadedPredictor(TorchPredictor.from_file(model_path, "cpu"))
    precision = {"onnx": "fp32", "onnx-int8": "int8", "torch-bf16": "bf16"}[backend]
    return load_predictor(ModelChoice(model_path, "cpu", precision))


def _bench_child(args: list[str]) -> dict:
    import json
    import subprocess

    from mnist_desktop.core.app_command import app_command

    cmd = app_command("batch-bench", *args)
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{args[0]} failed: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def engine_in_child(folder: Path, model_path, backend: str, workers: int | None, batch_size: int) -> dict:
    """:func:`run_engine` in a fresh process that imports only what ``backend`` needs, so
    its memory figure is what ``mnist-desktop classify`` would use (torch, imported here
    for the baseline, is not counted for the ONNX Runtime backend)."""
    return _bench_child(["--engine-child", str(folder), "--backend", backend, "--model", str(model_path),
                         "--batch-size", str(batch_size)] + (["--workers", str(workers)] if workers is not None else []))


def window_in_child(folder: Path, model_path, workers: int | None) -> dict:
    """:func:`run_window` in a fresh process, as a user's app would run it."""
    return _bench_child(["--window-child", str(folder), "--model", str(model_path)]
                        + (["--workers", str(workers)] if workers is not None else []))


def model_alone_us(model_path, backend: str, batch: int, seconds: float = 2.0) -> float:
    """Microseconds per image of the model alone, as the engine runs it (batches of
    ``batch``, one thread: what each decoding worker gives it): the ceiling the model
    puts on the engine, whatever decoding costs, is ``cores / this``."""
    from mnist_desktop.core.batch.inference import _Inference

    loaded = load_backend(model_path, backend)
    infer = _Inference(loaded.predictor, 1, loaded.precision if loaded.precision == "bf16" else "fp32")
    images = np.zeros((batch, 28, 28), np.float32)
    images[:, 6:22, 12:16] = 1.0   # a stroke: a digit's work, no shortcut for empty input
    try:
        infer(images)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            infer(images)
            n += 1
        return 1e6 * (time.perf_counter() - t0) / (n * batch)
    finally:
        infer.close()


def decode_alone_us(folder: Path, n: int = 500) -> float:
    """Microseconds per file to decode ``n`` of the folder's images from memory into pixels,
    the way the engine's workers do (libspng where it serves, else Pillow, JPEGs at reduced
    scale), before any preprocessing: with the model's time it bounds what any
    preprocessing speed-up can reach."""
    import io

    from mnist_desktop.core.batch import collect_files
    from mnist_desktop.core.batch.decoding import _gray_png
    from mnist_desktop.core.preprocess import load_image

    datas = []
    for p in collect_files([folder])[:n]:
        with open(p, "rb") as f:
            datas.append(f.read())
    if not datas:
        return 0.0
    t0 = time.perf_counter()
    for data in datas:
        if _gray_png(data) is None:
            load_image(io.BytesIO(data))
    return 1e6 * (time.perf_counter() - t0) / len(datas)


def run_baseline(folder: Path, predictor, n: int) -> dict:
    """The plain loop: one file at a time, Image.open -> preprocess -> one forward
    (Image.open restricted to the raster formats, as everywhere: ``open_image``)."""
    from mnist_desktop.core.batch import collect_files
    from mnist_desktop.core.preprocess import open_image, preprocess

    files = collect_files([folder])[:n]
    t0, c0 = time.perf_counter(), time.process_time()
    for p in files:
        with open_image(p) as im:
            im.load()
            image = preprocess(im, predictor.options)
        predictor.probabilities(image[None])
    elapsed = time.perf_counter() - t0
    return {"n": len(files), "seconds": elapsed, "rate": len(files) / elapsed,
            "cpu_s": time.process_time() - c0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mnist_desktop.batch_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=20000, help="files per image size (default 20,000)")
    p.add_argument("--sizes", default="28,280,photo",
                   help="comma-separated PNG sizes, and 'photo' for 12-megapixel JPEG photos (default 28,280,photo)")
    p.add_argument("--photo-files", type=int, default=200, help="files for 'photo' (default 200)")
    p.add_argument("--baseline-files", type=int, default=2000,
                   help="files for the one-at-a-time baseline (0: skip; default 2,000)")
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"where the test images are generated (default {DEFAULT_DIR})")
    p.add_argument("--mnist", type=Path, default=SHARED_MNIST, help="folder with train-5k IDX files")
    p.add_argument("--model", help="model file (default: the bundled model)")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: one per core)")
    p.add_argument("--batch-size", type=int, default=None, help="files per chunk (default: the engine's)")
    p.add_argument("--backends", default=",".join(BACKENDS),
                   help=f"comma-separated inference backends to measure (default {','.join(BACKENDS)}; "
                        "onnx is what classify uses on a CPU)")
    p.add_argument("--window", action="store_true",
                   help="also time the batch window (offscreen) on the same files, beside the classify "
                        "path (fp32 ONNX Runtime, as the window runs it), and print the ratio")
    p.add_argument("--engine-child", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--window-child", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--backend", default="onnx", help=argparse.SUPPRESS)
    p.add_argument("--repeat", type=int, default=1,
                   help="rounds of engine + baseline, measured back to back (default 1); on a shared "
                        "machine the median of the per-round ratios is the robust figure")
    args = p.parse_args(argv)

    from mnist_desktop.core.batch import DEFAULT_BATCH_SIZE, default_workers
    from mnist_desktop.core.paths import default_model_path

    if args.engine_child:
        import json

        from mnist_desktop.core.batch import prestart_workers

        t0 = time.perf_counter()
        prestart_workers(args.workers)   # as `mnist-desktop classify` does, before loading the model
        loaded = load_backend(args.model or default_model_path(), args.backend)
        res = run_engine(args.engine_child, loaded, args.workers, args.batch_size or DEFAULT_BATCH_SIZE)
        res["command_s"] = time.perf_counter() - t0
        print(json.dumps(res))
        return 0
    if args.window_child:
        import json

        print(json.dumps(run_window(args.window_child, args.model or default_model_path(), args.workers)))
        return 0
    from mnist_desktop.core.torch_predictor import TorchPredictor

    if not (args.mnist / "train-5k-images-idx3-ubyte.gz").exists():
        print(f"MNIST train-5k not found in {args.mnist} (see ../shared/data/README.md)", file=sys.stderr)
        return 2
    model_path = args.model or default_model_path()
    predictor = TorchPredictor.from_file(model_path, "cpu")
    batch = args.batch_size or DEFAULT_BATCH_SIZE
    import torch
    print(f"load average before: {', '.join(f'{x:.2f}' for x in os.getloadavg())} "
          "(other work on the machine lowers the wall-clock figures)")
    print(f"machine: {default_workers()} usable cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); model {predictor.meta.arch}; "
          f"workers {args.workers if args.workers is not None else default_workers()}, chunk {batch}")
    cores = default_workers()
    backends = [s.strip() for s in args.backends.split(",") if s.strip()]
    model_us: dict[str, float] = {}
    for backend in backends:
        us = model_us[backend] = model_alone_us(model_path, backend, batch)
        print(f"model alone, {backend}: {us:.0f} us/image on one core (batches of {batch}) -> the engine "
              f"cannot pass {cores * 1e6 / us:,.0f} img/s on {cores} cores, whatever decoding costs", flush=True)
    for size in [s.strip() for s in args.sizes.split(",") if s.strip()]:
        if size == "photo":
            folder = generate_photos(args.dir, args.photo_files, args.mnist)
            kind = f"{PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} JPEG photo"
        else:
            folder = generate_pngs(args.dir, args.files, int(size), args.mnist)
            kind = f"{size}x{size} PNG"
        warm_page_cache(folder)
        dec = decode_alone_us(folder)
        print(f"{kind}, decoding alone: {dec:.0f} us/image on one core; with the model "
              + ", ".join(f"({b}) the engine cannot pass {cores * 1e6 / (dec + us):,.0f} img/s"
                          for b, us in model_us.items()) + ", however fast preprocessing gets", flush=True)
        rates: dict[str, list[float]] = {p: [] for p in backends}
        cpu_rates: dict[str, list[float]] = {p: [] for p in backends}
        ratios: dict[str, list[float]] = {p: [] for p in backends}
        for rnd in range(1, args.repeat + 1):
            for backend in backends:
                tag = f"{kind}, {backend}" + (f", round {rnd}" if args.repeat > 1 else "")
                eng = engine_in_child(folder, model_path, backend, args.workers, batch)
                rates[backend].append(eng["rate"])
                cpu_rates[backend].append(eng["n"] * cores / eng["cpu_s"])
                print(f"{tag}, {eng['n']:,} files: engine {eng['rate']:,.0f} img/s "
                      f"({eng['seconds']:.2f} s incl. listing {eng['listing_s']:.2f} s; "
                      f"{eng['command_s']:.2f} s incl. loading the model, as the classify command: "
                      f"{eng['n'] / eng['command_s']:,.0f} img/s; {eng['failed']} failed; "
                      f"accuracy {100 * eng['accuracy']:.2f}%); CPU {1e6 * eng['cpu_s'] / eng['n']:.0f} us/image "
                      f"(= {cpu_rates[backend][-1]:,.0f} img/s if {cores} cores were ours alone); "
                      f"peak memory, this process + {eng['processes'] - 1} child processes: "
                      f"RSS {eng['peak_rss_mb']:.0f} MB, PSS {eng['peak_pss_mb']:.0f} MB; "
                      f"load average {os.getloadavg()[0]:.2f}", flush=True)
                print(f"{tag}: engine / decoding alone on the same {cores} cores = "
                      f"{eng['rate'] / (cores * 1e6 / dec):.2f} (decoding alone: {cores * 1e6 / dec:,.0f} img/s)",
                      flush=True)
            if args.window:
                win = window_in_child(folder, model_path, args.workers)
                cli_rate = rates["onnx"][-1] if "onnx" in rates and rates["onnx"] else float("nan")
                print(f"{kind}, batch window (offscreen, grid and thumbnails live), {win['n']:,} files: "
                      f"{win['rate']:,.0f} img/s ({win['seconds']:.2f} s; {win['failed']} failed) -> window / "
                      f"classify path (onnx) = {win['rate'] / cli_rate:.2f}; peak RSS {win['peak_rss_mb']:.0f} MB; "
                      f"load average {os.getloadavg()[0]:.2f}", flush=True)
            if args.baseline_files:
                # One thread: a single 28x28 forward gains nothing from more, and idle OpenMP
                # threads spinning on a busy machine would make the baseline look worse.
                saved = torch.get_num_threads()
                torch.set_num_threads(1)
                base = run_baseline(folder, predictor, args.baseline_files)
                torch.set_num_threads(saved)
                for backend in backends:
                    ratios[backend].append(rates[backend][-1] / base["rate"])
                print(f"{kind}, baseline one-at-a-time PIL+torch loop (fp32) on {base['n']:,} files: "
                      f"{base['rate']:,.0f} img/s, CPU {1e6 * base['cpu_s'] / base['n']:.0f} us/image -> engine / "
                      "baseline = " + ", ".join(f"{ratios[p][-1]:.1f}x ({p})" for p in backends), flush=True)
        if args.repeat > 1:
            for backend in backends:
                print(f"{kind}, {backend}, summary over {args.repeat} rounds: engine median "
                      f"{np.median(rates[backend]):,.0f} img/s (best {max(rates[backend]):,.0f}); CPU-bound estimate "
                      f"median {np.median(cpu_rates[backend]):,.0f} img/s"
                      + (f"; engine / baseline median {np.median(ratios[backend]):.1f}x" if ratios[backend] else ""),
                      flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
