"""``mnist-desktop`` command line: no arguments starts the GUI; subcommands ``classify``,
``evaluate``, ``export``, ``bench`` and ``train`` (the training CLI, ``python -m training``).

Kept free of torch and Qt at import time so ``--help`` and the GUI start fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_OK = 0
EXIT_FILE_ERRORS = 1
EXIT_USAGE = 2
EXIT_MODEL_ERROR = 3
EXIT_INTERRUPTED = 130

CLASSIFY_EPILOG = """\
exit status:
  0  every input was classified
  1  at least one input could not be read or classified (its row has an error)
  2  bad usage (no inputs found, bad option)
  3  the model could not be loaded
  130  interrupted (Ctrl-C); the results so far are still written

CSV columns: path, prediction, confidence, uncertain, error, (with --number:
number, number_confidence,) then one p_<label> probability column per class label of
the model. --number reads each image as a number, digits left to right: number holds
the digits (empty when nothing was read), number_confidence the probability that every
digit is right; the JSON records get the same two fields. prediction still reads the
whole image as one digit, and a single digit reads the same in number. Rows keep the input order (files
sorted by name, folder by folder). Unreadable inputs (corrupt, truncated, empty, not an
image, too large, symlink loops, permission denied) get an error row and are skipped.
File names that are not valid UTF-8 are written with \\xNN escapes. A text cell
(path, label, error) that starts with =, +, -, @, a tab or a line break gets a leading '
so that a spreadsheet shows it instead of running it as a formula (CSV injection); the
JSON output (--output FILE.json) keeps every name exact. When inputs sit in
sub-folders named after class labels, accuracy and a confusion matrix are printed to
stderr. Decoding runs in --workers processes, up to --batch-size files per chunk (fewer
when files are slow to decode, such as photos, so that progress keeps moving).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mnist-desktop",
                                description="Recognize handwritten digits. Without a command, starts the app.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument("--self-test", action="store_true",
                   help="check this installation: bundled model, sample images of every digit, one tiny "
                        "training run (skipped in the lite build); exit 0 or name what failed")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    g = sub.add_parser("gui", help="start the desktop app (the default)")
    g.add_argument("--model", help="model file to load instead of the saved setting")

    c = sub.add_parser("classify", help="classify image files and folders",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=CLASSIFY_EPILOG)
    c.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    c.add_argument("--model", help="model file (default: the bundled model)")
    c.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    c.add_argument("--recursive", "-r", action="store_true", help="descend into sub-folders")
    c.add_argument("--output", "-o", help="write results to FILE.csv or FILE.json (default: CSV to stdout)")
    c.add_argument("--top-k", type=int, default=3, metavar="K", help="top-K labels in JSON output (default 3)")
    c.add_argument("--batch-size", type=int, default=128, help="files per decoding chunk and inference batch, at most (default 128)")
    c.add_argument("--workers", type=int, default=None,
                   help="decoding worker processes (default: one per CPU core; 0 = in-process)")
    c.add_argument("--precision", choices=["fp32", "int8", "bf16"], default="fp32",
                   help="CPU inference: fp32 (default, exact), int8 (quantized ONNX copy, faster; how "
                        "much depends on the CPU) or bf16 (torch, on CPUs with native bfloat16); "
                        "int8/bf16 change a few near-tie answers in 10,000")
    c.add_argument("--number", action="store_true",
                   help="also read each image as a number (digits side by side): adds number and "
                        "number_confidence columns")
    c.add_argument("--quiet", "-q", action="store_true", help="no summary on stderr")

    e = sub.add_parser("evaluate", help="measure a model on labelled data")
    e.add_argument("--model", help="model file (default: the bundled model)")
    e.add_argument("--data", required=True,
                   help="IDX folder (e.g. ../shared/data/mnist) or a folder with one sub-folder per class")
    e.add_argument("--split", default="test", help="IDX split to use (default: test)")
    e.add_argument("--through-preprocessing", action="store_true",
                   help="run IDX images through the full preprocessing path, not as raw tensors")
    e.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    e.add_argument("--json", action="store_true", help="print the report as JSON")

    x = sub.add_parser("export", help="export a model to TorchScript or ONNX (verified)")
    x.add_argument("--model", help="model file (default: the bundled model)")
    x.add_argument("--format", choices=["torchscript", "onnx", "onnx-int8"], required=True,
                   help="onnx-int8: the ONNX copy quantized to int8, calibrated on generated digits")
    x.add_argument("--from-onnx", help=argparse.SUPPRESS)   # onnx-int8: the fp32 copy to quantize
    x.add_argument("--output", "-o", required=True)

    sub.add_parser("train", add_help=False,
                   help="train a model (the same flags as python -m training; see: mnist-desktop train --help)")

    s = sub.add_parser("serve", help="a local HTTP prediction API (POST /predict; docs at /docs)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    s.add_argument("--model", help="model file (default: the bundled model)")
    s.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"],
                   help="where the model runs (default cpu: ONNX Runtime, no torch)")
    s.add_argument("--allow-remote", action="store_true",
                   help="listen on a non-loopback address (other machines can then use the API)")
    s.add_argument("--max-body-mb", type=float, default=10.0, help="largest request body in MB (default 10)")
    s.add_argument("--max-batch", type=int, default=64, help="largest batch of concurrent requests (default 64)")
    s.add_argument("--threads", type=int, default=1,
                   help="threads of the model's forward pass (default 1: the other core decodes requests)")

    b = sub.add_parser("bench", help="print preprocessing + inference latency figures")
    b.add_argument("--model", help="model file (default: the bundled model)")
    b.add_argument("--iterations", type=int, default=2000)
    return p


def main(argv: list[str] | None = None) -> int:
    # The inference and decoding workers are spawned processes; in a frozen (PyInstaller)
    # build the child re-enters here and must be diverted to the worker code.
    import multiprocessing
    multiprocessing.freeze_support()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        # The training CLI takes its own flags; the app is its launcher so that the frozen
        # program (no system Python) trains by running itself: ``mnist-desktop train ...``.
        from mnist_desktop.core.flavour import training_unavailable_reason
        reason = training_unavailable_reason()
        if reason:
            _err(reason)
            return EXIT_USAGE
        from training.cli import main as train_main
        return train_main(argv[1:], prog="mnist-desktop train")
    if argv and argv[0] in _BENCH_TOOLS:
        # The benchmarks start their measured children through the app itself
        # (app_command), so that they measure the frozen program too; not in --help.
        import importlib
        return importlib.import_module(_BENCH_TOOLS[argv[0]]).main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from mnist_desktop import __version__
        print(__version__)
        return EXIT_OK
    if args.self_test:
        return cmd_self_test()
    command = args.command or "gui"
    if command == "gui":
        from mnist_desktop.ui.app import run_app
        return run_app(model=getattr(args, "model", None))
    handler = {"classify": cmd_classify, "evaluate": cmd_evaluate, "export": cmd_export,
               "bench": cmd_bench, "serve": cmd_serve}[command]
    return handler(args)


_BENCH_TOOLS = {"ui-bench": "mnist_desktop.ui_bench", "batch-bench": "mnist_desktop.batch_bench",
                "serve-bench": "mnist_desktop.serve_bench"}


def _err(msg: str) -> None:
    print(f"mnist-desktop: {msg}", file=sys.stderr)


def _load_predictor(model: str | None, device: str = "auto"):
    """The model for an in-process job (``evaluate``) through the service layer, or None
    after a one-line message."""
    from mnist_desktop.service.models import CheckpointError, ModelChoice, load_predictor

    try:
        loaded = load_predictor(ModelChoice(model, device))
    except CheckpointError as e:
        _err(f"cannot load model: {e}")
        return None
    for note in loaded.notes:
        _err(note)
    return loaded.predictor


def cmd_self_test() -> int:
    """``mnist-desktop --self-test``: one line per check; exit 1 naming what failed."""
    from mnist_desktop.service.self_test import FAIL, run_self_test

    checks = run_self_test()
    from mnist_desktop.ui.self_check import check_windows

    windows = check_windows()
    print(windows.line())
    failed = [c.name for c in [*checks, windows] if c.outcome == FAIL]
    if failed:
        _err(f"self-test FAILED: {', '.join(failed)}")
        return EXIT_FILE_ERRORS
    print("self-test passed")
    return EXIT_OK


def cmd_classify(args) -> int:
    """``mnist-desktop classify``: the service's classify job with CSV/JSON output.

    CSV rows stream to stdout as chunks finish; results are kept in a compact
    :class:`~mnist_desktop.core.batch.ResultStore` (tens of MB for 200,000 files) for
    ``--output`` and the labelled-folder report. A progress line (count, images/s, ETA)
    goes to stderr when it is a terminal.
    """
    import csv

    from mnist_desktop.core.batch import ResultStore, csv_header, csv_row, display_path, write_results
    from mnist_desktop.core.metrics import format_confusion
    from mnist_desktop.service.classify import ClassifyOptions, Listed, ModelReady, Note, Results, classify_job
    from mnist_desktop.service.models import CheckpointError

    if args.output and Path(args.output).suffix.lower() not in (".csv", ".json"):
        _err("--output must end in .csv or .json")
        return EXIT_USAGE
    try:
        options = ClassifyOptions(model=args.model, device=args.device, precision=args.precision,
                                  recursive=args.recursive, workers=args.workers, batch_size=args.batch_size,
                                  numbers=args.number)
    except ValueError as e:
        _err(f"{e}")
        return EXIT_USAGE
    show_progress = not args.quiet and sys.stderr.isatty()

    def note(text: str) -> None:
        if show_progress:
            print("\r\033[K", end="", file=sys.stderr)   # not into the progress line
        _err(text)

    store: ResultStore | None = None
    stream = None
    loaded = None
    listed = 0
    prog = None
    interrupted = False

    def take(results) -> None:
        store.extend(results)
        for r in results:
            if r.error:
                note(f"{display_path(r.path)}: {r.error}")
            if stream:
                stream.writerow(csv_row(r, numbers=args.number))

    job = classify_job(args.paths, options, status=_err)
    try:
        for event in job:
            if isinstance(event, ModelReady):
                loaded = event.loaded
                for line in loaded.notes:
                    _err(line)
                store = ResultStore(loaded.predictor.labels)
            elif isinstance(event, Listed):
                listed = event.total + len(event.errors)
                if not listed:
                    job.close()
                    _err("no image files found (use --recursive to descend into sub-folders)")
                    return EXIT_USAGE
                if not args.output:
                    stream = csv.writer(sys.stdout)
                    stream.writerow(csv_header(loaded.predictor.labels, numbers=args.number))
                take(event.errors)
            elif isinstance(event, Note):
                note(event.text)
            elif isinstance(event, Results):
                take(event.rows)
                prog = event.progress or prog
                if show_progress and prog is not None:
                    print(f"\r\033[K{prog.describe()}", end="", file=sys.stderr, flush=True)
    except CheckpointError as e:
        _err(f"cannot load model: {e}")
        return EXIT_MODEL_ERROR
    except KeyboardInterrupt:
        interrupted = True  # the engine has shut its workers down; keep what we have
        if store is None:
            return EXIT_INTERRUPTED
    if show_progress:
        print("\r\033[K", end="", file=sys.stderr)
    labels = loaded.predictor.labels
    if args.output:
        try:
            write_results(args.output, store, labels, top_k=args.top_k, numbers=args.number)
        except OSError as e:
            _err(f"cannot write {args.output}: {e.strerror or e}")
            return EXIT_FILE_ERRORS
    failed = store.failed
    if not args.quiet:
        rate = f", {prog.done / prog.elapsed:,.0f} images/s" if prog is not None and prog.elapsed > 0 else ""
        print(f"model {loaded.describe()}{rate}", file=sys.stderr)
        print(f"classified {len(store) - failed} of {len(store)} file(s); {failed} failed"
              + (f" (interrupted; {listed - len(store)} not processed)" if interrupted else ""),
              file=sys.stderr)
        rep = store.report()
        if rep:
            print(f"labelled by folder: {rep['n']} file(s), accuracy {100 * rep['accuracy']:.2f}%",
                  file=sys.stderr)
            print(format_confusion(rep["confusion_matrix"], labels), file=sys.stderr)
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FILE_ERRORS if failed else EXIT_OK


def cmd_evaluate(args) -> int:
    import numpy as np

    from mnist_desktop.core.batch import classify_files
    from mnist_desktop.core.data import DataError, find_idx_splits, labelled_image_folder, load_idx_folder
    from mnist_desktop.core.metrics import classification_report, format_report
    from mnist_desktop.core.preprocess import EmptyInputError, preprocess

    predictor = _load_predictor(args.model, args.device)
    if predictor is None:
        return EXIT_MODEL_ERROR
    labels = predictor.labels
    data = Path(args.data)
    failed = 0
    try:
        if data.is_dir() and find_idx_splits(data):
            split = load_idx_folder(data, args.split)
            if split.labels.max() >= len(labels):
                _err(f"labels in {split.labels_path.name} exceed the model's {len(labels)} classes")
                return EXIT_USAGE
            images = split.images.astype(np.float32) / 255.0
            if args.through_preprocessing:
                out = np.zeros_like(images)
                for i, im in enumerate(split.images):
                    try:
                        out[i] = preprocess(im, predictor.options)
                    except EmptyInputError:
                        failed += 1
                images = out
            probs, unc = _batched_probs(predictor, images)
            y = split.labels
            source = f"{data} ({args.split}, {'preprocessed' if args.through_preprocessing else 'raw tensors'})"
        else:
            files, file_labels = labelled_image_folder(data)
            idx = {lab: i for i, lab in enumerate(labels)}
            unknown = sorted({lab for lab in file_labels if lab not in idx})
            if unknown:
                _err(f"folder names not among the model's labels: {', '.join(unknown[:10])}")
                return EXIT_USAGE
            rs = list(classify_files(files, predictor))
            good = [(r, lab) for r, lab in zip(rs, file_labels) if r.ok]
            failed = len(rs) - len(good)
            for r in rs:
                if not r.ok:
                    _err(f"{r.path}: {r.error}")
            if not good:
                _err("no image could be classified")
                return EXIT_FILE_ERRORS
            probs = np.stack([r.probs for r, _ in good])
            unc = np.array([r.uncertain for r, _ in good])
            y = np.array([idx[lab] for _, lab in good])
            source = str(data)
    except DataError as e:
        _err(str(e))
        return EXIT_USAGE
    report = classification_report(y, probs, labels, uncertain=unc)
    report["data"] = source
    report["model"] = str(predictor.path)
    report["failed_files"] = failed
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"model: {predictor.path}\ndata: {source}")
        print(format_report(report))
    return EXIT_FILE_ERRORS if failed else EXIT_OK


def _batched_probs(predictor, images, batch: int = 1000):
    import numpy as np
    ps, us = [], []
    for i in range(0, len(images), batch):
        p, u, _ = predictor.probabilities(images[i:i + batch])
        ps.append(p)
        us.append(u)
    return np.concatenate(ps), np.concatenate(us)


def cmd_export(args) -> int:
    from mnist_desktop.core.checkpoint import CheckpointError, load_model
    from mnist_desktop.core.export import export_onnx, export_torchscript
    from mnist_desktop.core.paths import default_model_path

    model = args.model or default_model_path()
    try:
        if args.format == "onnx-int8":
            out = _export_int8(Path(model), Path(args.output), args.from_onnx and Path(args.from_onnx))
        else:
            fn = export_torchscript if args.format == "torchscript" else export_onnx
            out = fn(load_model(model), args.output)
    except CheckpointError as e:
        _err(str(e))
        return EXIT_MODEL_ERROR
    print(f"wrote {out} ({args.format}, probabilities verified against the original)")
    return EXIT_OK


def _export_int8(model: Path, output: Path, fp32: Path | None = None) -> Path:
    """The int8 copy of ``model``: its fp32 ONNX copy (``fp32``, else an existing one, else
    exported into a temporary folder) quantized with activations calibrated on generated
    digits."""
    import tempfile

    from mnist_desktop.core.checkpoint import CheckpointError, load_model, read_meta
    from mnist_desktop.core.export import export_onnx, quantize_onnx
    from mnist_desktop.core.onnx_predictor import OnnxUnavailable, onnx_for
    from mnist_desktop.core.preprocess import PreprocessOptions
    from training.synth import int8_calibration_images

    meta = read_meta(model)
    calibration = int8_calibration_images(PreprocessOptions.from_dict(meta.preprocess))
    with tempfile.TemporaryDirectory() as tmp:
        if fp32 is None:
            try:
                fp32 = onnx_for(model, make=False)
            except OnnxUnavailable:
                fp32 = export_onnx(load_model(model), Path(tmp) / "fp32.onnx")
        try:
            return quantize_onnx(fp32, output, calibration)
        except Exception as e:  # quantization tooling raises many types
            raise CheckpointError(f"could not quantize {model.name} ({type(e).__name__}: {str(e)[:120]})") from None


def cmd_serve(args) -> int:
    """``mnist-desktop serve``: the HTTP prediction API (mnist_desktop.service.api)."""
    from mnist_desktop.service.models import CheckpointError, ModelChoice, load_predictor

    try:
        from mnist_desktop.service.api import ApiLimits, create_app, is_loopback
        import uvicorn
    except ImportError as e:
        _err(f"serve needs FastAPI and uvicorn ({e.name} is missing)")
        return EXIT_USAGE
    if not is_loopback(args.host) and not args.allow_remote:
        _err(f"{args.host} is reachable from other machines; the API has no authentication. "
             "Use --allow-remote to listen there anyway.")
        return EXIT_USAGE
    if not 0 <= args.port <= 65535 or args.max_batch < 1 or args.max_body_mb <= 0:
        _err("--port must be 0-65535, --max-batch at least 1, --max-body-mb above 0")
        return EXIT_USAGE
    try:
        loaded = load_predictor(ModelChoice(args.model, args.device, purpose="batch", threads=max(1, args.threads)),
                                status=lambda m: print(m, file=sys.stderr))
    except CheckpointError as e:
        _err(f"cannot load the model: {e}")
        return EXIT_MODEL_ERROR
    for note in loaded.notes:
        print(f"note: {note}", file=sys.stderr)
    app = create_app(loaded, ApiLimits(max_body_bytes=int(args.max_body_mb * 1024 * 1024)), max_batch=args.max_batch)
    options = {}
    for module, key, value in (("uvloop", "loop", "uvloop"), ("httptools", "http", "httptools")):
        try:
            __import__(module)
            options[key] = value
        except ImportError:
            pass
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"Serving {loaded.describe()} on http://{host}:{args.port} (POST /predict, docs at /docs); "
          "Ctrl-C stops", file=sys.stderr, flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False, **options)
    except KeyboardInterrupt:
        pass
    except OSError as e:
        _err(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}")
        return EXIT_USAGE
    return EXIT_OK


def cmd_bench(args) -> int:
    from mnist_desktop.bench import run_latency_bench

    return run_latency_bench(args.model, args.iterations)
