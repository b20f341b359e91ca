"""No model file, and no ONNX copy, is trusted on its own word (issue 18).

A corpus of hostile and broken model files, built here, goes through the service
(``load_predictor``), ``load_model`` and the ``classify``, ``evaluate`` and ``export``
commands: each is refused with one line (exit status 3 for the commands), without a
traceback, without allocating gigabytes (a 4 GB address-space limit) and without running
the file's code. Planted ONNX copies beside a model or in the cache are never run.
"""

from __future__ import annotations

import builtins
import json
import os
import pickle
import resource
import shutil
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from mnist_desktop.core import onnx_predictor as op
from mnist_desktop.core.arch_limits import LIMITS, check_arch_args
from mnist_desktop.core.checkpoint import CheckpointError, ModelMeta, UncertaintyRule, load_model
from mnist_desktop.core.model_meta import META_KEY
from mnist_desktop.core.preprocess import PreprocessOptions

REPO = Path(__file__).resolve().parents[1]
MEMORY_LIMIT = 4 << 30
MARKER = "pwned-by-pickle"


# --------------------------------------------------------------------------- building the corpus

def write_safetensors(path: Path, tensors: dict[str, np.ndarray], meta_json: str | None) -> Path:
    """A safetensors file written by hand (no torch): any dtype, any metadata."""
    codes = {np.dtype("<f4"): "F32", np.dtype("<f2"): "F16", np.dtype("<i4"): "I32", np.dtype("<i8"): "I64"}
    header, blobs, offset = {}, [], 0
    for name, arr in tensors.items():
        data = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": codes[arr.dtype], "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if meta_json is not None:
        header["__metadata__"] = {META_KEY: meta_json}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))
    return path


def tiny_mlp_tensors(seed: int = 0) -> dict[str, np.ndarray]:
    """The state of ``build_model("mlp", hidden=[8])``: a real, loadable network."""
    rng = np.random.default_rng(seed)
    return {"net.1.weight": rng.normal(0, 0.05, (8, 784)).astype("<f4"), "net.1.bias": np.zeros(8, "<f4"),
            "net.3.weight": rng.normal(0, 0.3, (10, 8)).astype("<f4"), "net.3.bias": np.zeros(10, "<f4")}


def meta_dict(**changes) -> dict:
    d = json.loads(ModelMeta(arch="mlp", arch_args={"hidden": [8]}).to_json())
    for key, value in changes.items():
        if "." in key:
            outer, inner = key.split(".")
            d[outer][inner] = value
        else:
            d[key] = value
    return d


def model_with(path: Path, tensors=None, **changes) -> Path:
    return write_safetensors(path, tiny_mlp_tensors() if tensors is None else tensors,
                             json.dumps(meta_dict(**changes)))   # allow_nan: writes Infinity / NaN


class _Payload:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.exec, (f"open({self.marker!r}, 'w').close()",))


def build_corpus(folder: Path) -> dict[str, tuple[Path, str]]:
    """``{case: (model file, text the refusal must contain)}``."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / MARKER
    cases: dict[str, tuple[Path, str]] = {}

    def add(name, path, expect):
        cases[name] = (path, expect)

    add("flagship width 10^9", model_with(folder / "width_huge.safetensors", arch="flagship",
                                          arch_args={"width": 10 ** 9}), "'width'")
    add("flagship width -5", model_with(folder / "width_negative.safetensors", arch="flagship",
                                        arch_args={"width": -5}), "'width'")
    add("flagship width 1.5", model_with(folder / "width_float.safetensors", arch="flagship",
                                         arch_args={"width": 1.5}), "integer")
    add("mlp hidden 10^7", model_with(folder / "hidden_huge.safetensors", arch_args={"hidden": [10 ** 7]}),
        "'hidden'")
    add("mlp over 50M parameters", model_with(folder / "over_budget.safetensors",
                                              arch_args={"hidden": [60_000, 60_000]}), "parameters")
    add("ensemble of 10^6 members", model_with(folder / "members.safetensors", arch="flagship_ensemble",
                                               arch_args={"width": 16, "members": 10 ** 6}), "'members'")
    add("unknown architecture argument", model_with(folder / "unknown_arg.safetensors",
                                                    arch_args={"hidden": [8], "num_classes": 10}), "unknown argument")
    deep = json.dumps(meta_dict(training="DEEP")).replace('"DEEP"', "[" * 100_000 + "]" * 100_000)
    add("metadata 100,000 levels deep", write_safetensors(folder / "deep.safetensors", tiny_mlp_tensors(), deep),
        "nested")
    add("metadata of 2 MB", model_with(folder / "big_meta.safetensors", description="x" * (2 << 20)), "bytes")
    if Path("/proc/self/mem").exists():
        add("/proc/self/mem", Path("/proc/self/mem"), "empty")
    if hasattr(os, "mkfifo"):
        fifo = folder / "fifo.safetensors"
        os.mkfifo(fifo)
        add("a FIFO", fifo, "not a regular file")
    nan = tiny_mlp_tensors()
    nan["net.3.weight"][0, 0] = np.nan
    add("NaN weights", model_with(folder / "nan.safetensors", tensors=nan), "NaN or infinite")
    inf = tiny_mlp_tensors()
    inf["net.1.bias"][3] = np.inf
    add("Inf weights", model_with(folder / "inf.safetensors", tensors=inf), "NaN or infinite")
    ints = tiny_mlp_tensors()
    ints["net.1.weight"] = np.ones((8, 784), "<i4")
    add("int32 weights", model_with(folder / "int32.safetensors", tensors=ints), "float32")
    add("infinite temperature", model_with(folder / "temperature.safetensors", **{"uncertainty.temperature": np.inf}),
        "temperature")
    add("infinite std", model_with(folder / "std.safetensors", **{"normalization.std": np.inf}), "std")
    add("NaN threshold", model_with(folder / "threshold.safetensors", **{"uncertainty.threshold": np.nan}),
        "threshold")
    add("box 0 (preprocessing fails on every image)",
        model_with(folder / "box.safetensors", preprocess={"box": 0}), "box")
    add("negative stroke width", model_with(folder / "stroke.safetensors", preprocess={"stroke_width": -1.0}),
        "stroke_width")
    with open(folder / "reduce.pt", "wb") as f:
        pickle.dump({META_KEY: "{}", "state_dict": _Payload(marker)}, f)
    add("pickle with a __reduce__ payload", folder / "reduce.pt", "not run")
    import torch

    torch.save({META_KEY: "{}", "state_dict": _Payload(marker)}, folder / "reduce_zip.pt")
    add("torch.save zip with a __reduce__ payload", folder / "reduce_zip.pt", "not run")
    whole = model_with(folder / "whole.safetensors").read_bytes()
    (folder / "truncated.safetensors").write_bytes(whole[:len(whole) - 1000])
    add("truncated safetensors", folder / "truncated.safetensors", "truncated")
    (folder / "header_2gb.safetensors").write_bytes(struct.pack("<Q", 2 << 30) + b'{"a": 1}' + b" " * 64)
    add("header claiming 2 GB", folder / "header_2gb.safetensors", "claims")
    return cases


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_corpus(tmp_path_factory.mktemp("hostile"))


def _limited():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _env(tmp: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "MNIST_DESKTOP_DATA": str(tmp / "data"),
            "MNIST_DESKTOP_CACHE": str(tmp / "cache"), "QT_QPA_PLATFORM": "offscreen"}


def _run(args, tmp: Path, timeout: float = 120, limited: bool = True) -> subprocess.CompletedProcess:
    """``python ARGS`` with this checkout, user folders under ``tmp`` and (``limited``)
    at most :data:`MEMORY_LIMIT` of address space."""
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=tmp,
                          env=_env(tmp), stdin=subprocess.DEVNULL, preexec_fn=_limited if limited else None)


# --------------------------------------------------------------------------- the corpus, refused

LOAD_ALL = r"""
import json, resource, sys
from mnist_desktop.core.checkpoint import CheckpointError, load_model
from mnist_desktop.service.models import ModelChoice, load_predictor
out = {}
for name, path in json.loads(sys.argv[1]).items():
    out[name] = res = {}
    for how, load in (("service", lambda: load_predictor(ModelChoice(path, "cpu"))),
                      ("live", lambda: load_predictor(ModelChoice(path, "cpu", purpose="live"))),
                      ("load_model", lambda: load_model(path))):
        try:
            load()
            res[how] = "LOADED"
        except CheckpointError as e:
            res[how] = "refused: " + str(e)
        except BaseException as e:
            res[how] = f"CRASH {type(e).__name__}: {e}"[:300]
out["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_AS is POSIX")
def test_every_hostile_model_is_refused_in_one_line_under_a_memory_limit(corpus, tmp_path):
    paths = {name: str(path) for name, (path, _) in corpus.items()}
    done = _run(["-c", LOAD_ALL, json.dumps(paths)], tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(corpus) >= 22
    for name, (path, expect) in corpus.items():
        for how, res in results[name].items():
            assert res.startswith("refused: ") and "\n" not in res, f"{name} via {how}: {res}"
            assert expect in res, f"{name} via {how}: {res!r} lacks {expect!r}"
            assert "weights_only" not in res
    assert results["max_rss_mb"] < 2048
    assert not (next(iter(corpus.values()))[0].parent / MARKER).exists(), "a pickle's code ran"


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_AS is POSIX")
@pytest.mark.slow
def test_every_hostile_model_exits_3_with_one_line_from_the_commands(corpus, tmp_path):
    image = tmp_path / "digit.png"
    _digit_image(image)
    data = tmp_path / "labelled" / "1"
    data.mkdir(parents=True)
    shutil.copy(image, data / "a.png")
    runs = [(name, "classify", ["-m", "mnist_desktop", "classify", "--model", str(path), str(image), "--workers", "0"])
            for name, (path, _) in corpus.items()]
    # evaluate and export load the model their own ways: a sample of the corpus each
    sample = [name for name in ("flagship width 10^9", "ensemble of 10^6 members", "NaN weights", "a FIFO",
                                "pickle with a __reduce__ payload", "metadata 100,000 levels deep") if name in corpus]
    runs += [(name, "evaluate", ["-m", "mnist_desktop", "evaluate", "--model", str(corpus[name][0]),
                                 "--data", str(data.parent)]) for name in sample]
    runs += [(name, "export", ["-m", "mnist_desktop", "export", "--model", str(corpus[name][0]), "--format", "onnx",
                               "-o", str(tmp_path / "out.onnx")]) for name in sample]
    with ThreadPoolExecutor(4) as pool:
        done = list(pool.map(lambda r: (r[0], r[1], _run(r[2], tmp_path, timeout=120)), runs))
    for name, command, out in done:
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 3, f"{command} {name}: exit {out.returncode}: {out.stderr[-1500:]}"
        assert len(lines) == 1 and "Traceback" not in out.stderr, f"{command} {name}: {out.stderr[-1500:]}"
        assert corpus[name][1] in lines[0], f"{command} {name}: {lines[0]}"
    assert not (next(iter(corpus.values()))[0].parent / MARKER).exists(), "a pickle's code ran"
    assert not (tmp_path / "out.onnx").exists()


def test_the_control_model_of_the_corpus_loads(tmp_path):
    loaded = load_model(model_with(tmp_path / "ok.safetensors"))
    assert loaded.meta.arch_args == {"hidden": [8]}


def test_pt_refusal_says_what_the_file_is_not_how_to_run_it(tmp_path):
    marker = tmp_path / MARKER
    with open(tmp_path / "x.pt", "wb") as f:
        pickle.dump({"state_dict": _Payload(marker)}, f)
    with pytest.raises(CheckpointError) as e:
        load_model(tmp_path / "x.pt")
    assert str(e.value) == "x.pt: refused: a pickle with code or objects outside plain tensors (not run)"
    assert not marker.exists()


def test_weights_in_float16_and_bfloat16_are_accepted_and_checked(tmp_path):
    import torch
    from safetensors.torch import save_file

    from mnist_desktop.core.checkpoint import check_model

    meta = json.dumps(meta_dict())
    for dtype in (torch.float16, torch.bfloat16):
        state = {k: torch.from_numpy(v).to(dtype) for k, v in tiny_mlp_tensors().items()}
        path = tmp_path / f"{dtype}.safetensors"
        save_file(state, path, metadata={META_KEY: meta})
        assert check_model(path).arch == "mlp" and load_model(path).model is not None
        state["net.3.bias"][2] = float("nan")
        save_file(state, path, metadata={META_KEY: meta})
        with pytest.raises(CheckpointError, match="NaN or infinite"):
            check_model(path)        # torch-free check
        with pytest.raises(CheckpointError, match="NaN or infinite"):
            load_model(path)


# --------------------------------------------------------------------------- limits

@pytest.mark.parametrize("arch,args", [
    ("mlp", {}), ("mlp", {"hidden": [300, 100, 50]}), ("cnn_mlp", {}), ("mnistnet", {}), ("cnn3", {}),
    ("conv3_gap", {"width": 8}), ("flagship", {}), ("flagship", {"width": 24}),
    ("flagship_ensemble", {"width": 4, "members": 3}),
])
def test_parameter_counts_of_the_limits_match_the_networks(arch, args):
    from mnist_desktop.core.models import build_model, count_parameters

    for classes in (10, 47):
        assert check_arch_args(arch, args, classes) == count_parameters(build_model(arch, num_classes=classes,
                                                                                    **args))
    assert set(LIMITS) == set(__import__("mnist_desktop.core.models", fromlist=["x"]).available_architectures())


def test_build_model_refuses_before_allocating():
    from mnist_desktop.core.models import build_model

    for args in ({"width": 10 ** 9}, {"width": -5}, {"width": True}):
        with pytest.raises(ValueError, match="width"):
            build_model("flagship", **args)
    with pytest.raises(ValueError, match="parameters"):
        build_model("flagship", width=1024)


def test_preprocess_options_are_validated():
    assert PreprocessOptions.from_dict({"box": 18, "blur_sigma": 0.5, "other": 1}) == \
        PreprocessOptions(box=18, blur_sigma=0.5)
    for bad in ({"box": 0}, {"box": 20.5}, {"trim": 0.9}, {"blur_sigma": float("nan")}, {"min_contrast": "0.1"},
                {"stroke_width": float("inf")}):
        with pytest.raises(ValueError):
            PreprocessOptions.from_dict(bad)


def test_model_meta_refuses_non_finite_and_non_numbers():
    good = json.loads(ModelMeta(arch="mlp", uncertainty=UncertaintyRule("energy", -3.0, 1.5)).to_json())
    assert ModelMeta.from_dict(good).uncertainty.temperature == 1.5
    for where, key, value in (("normalization", "std", 0), ("normalization", "mean", float("nan")),
                              ("normalization", "std", "0.3"), ("uncertainty", "temperature", -1.0),
                              ("uncertainty", "threshold", float("-inf")), ("uncertainty", "threshold", True),
                              ("normalization", "std", 10 ** 400)):
        bad = json.loads(json.dumps(good))
        bad[where][key] = value
        with pytest.raises(CheckpointError, match=key):
            ModelMeta.from_dict(bad)


# --------------------------------------------------------------------------- planted ONNX copies

def _forged_onnx(path: Path, source_sha: str, meta_json: str, loop: bool = False) -> Path:
    """An ONNX file that claims to be a copy of the model with ``source_sha``: every image
    is "3" at 100% or, with ``loop``, a Loop of 2^62 iterations."""
    import onnx
    from onnx import TensorProto, helper

    bias = np.zeros(10, np.float32)
    bias[3] = 100.0
    nodes = [helper.make_node("Flatten", ["image"], ["flat"]),
             helper.make_node("MatMul", ["flat", "zeros"], ["mm"]),
             helper.make_node("Add", ["mm", "bias"], ["scores" if loop else "logits"])]
    inits = [helper.make_tensor("zeros", TensorProto.FLOAT, [784, 10], np.zeros(7840, np.float32)),
             helper.make_tensor("bias", TensorProto.FLOAT, [10], bias)]
    if loop:
        body = helper.make_graph(
            [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Identity", ["v_in"], ["v_out"])],
            "spin", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                     helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                     helper.make_tensor_value_info("v_in", TensorProto.FLOAT, None)],
            [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
             helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None)])
        inits += [helper.make_tensor("trips", TensorProto.INT64, [], [1 << 62]),
                  helper.make_tensor("yes", TensorProto.BOOL, [], [True])]
        nodes.append(helper.make_node("Loop", ["trips", "yes", "scores"], ["logits"], body=body))
    graph = helper.make_graph(nodes, "forged", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                             ["batch", 1, 28, 28])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for key, value in ((op.SOURCE_KEY, source_sha), (META_KEY, meta_json)):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def _forged_meta(default_model: Path) -> str:
    """The bundled model's metadata, as a forger would edit it: every label reads "3"."""
    from mnist_desktop.core.checkpoint import read_meta

    d = json.loads(read_meta(default_model).to_json())
    d["labels"] = ["3" + " " * i for i in range(10)]
    return json.dumps(d)


def _digit_image(path: Path) -> None:
    from PIL import Image, ImageDraw

    im = Image.new("L", (56, 56), 0)
    ImageDraw.Draw(im).line([(28, 8), (28, 48)], fill=255, width=6)
    im.save(path)


def test_the_bundled_copy_is_vouched_for_by_the_shipped_list(default_model):
    sibling = default_model.with_suffix(".onnx")
    listed = {(c["model_sha256"], c["onnx_sha256"]) for c in op.trusted_copies()}
    assert (op.file_sha256(default_model), op.file_sha256(sibling)) in listed, \
        "resources/models/trusted-onnx.json does not list default.safetensors + default.onnx: update its digests"
    assert op.onnx_for(default_model, make=False) == sibling


@pytest.mark.slow
def test_a_forged_copy_is_never_run(default_model, mnist_test, tmp_path):
    """Beside the model (labelling every image "3", or looping for ever) and in the
    cache: ignored, and the app's own export answers; classify is right and finishes."""
    forged_meta = _forged_meta(default_model)
    digest = op.file_sha256(default_model)
    images = []
    for i in range(10):
        images.append(tmp_path / f"{i}_{mnist_test.labels[i]}.png")
        from PIL import Image
        Image.fromarray(mnist_test.images[i]).save(images[-1])
    truth = [str(int(mnist_test.labels[i])) for i in range(10)]
    for case, loop in (("three", False), ("loop", True)):
        folder = tmp_path / case
        folder.mkdir()
        model = Path(shutil.copy(default_model, folder / "default.safetensors"))
        forged = _forged_onnx(folder / "default.onnx", digest, forged_meta, loop=loop)
        if not loop:   # it is a working forgery: run on its own word, it answers "3" at 100%
            p = op.OnnxPredictor(forged, meta=ModelMeta.from_json(forged_meta))
            probs = p.probabilities(mnist_test.images[:10] / np.float32(255))[0]
            assert (probs.argmax(1) == 3).all() and probs.max() > 0.999
        out = _run(["-m", "mnist_desktop", "classify", "--model", str(model), *map(str, images), "--workers", "0"],
                   tmp_path, timeout=180, limited=False)
        assert out.returncode == 0, out.stderr[-2000:]
        rows = out.stdout.strip().splitlines()[1:]
        answers = [r.split(",")[1] for r in rows]
        assert sum(a == t for a, t in zip(answers, truth)) >= 9, out.stdout   # the model's own answers
        if case == "three":   # the first run exports the app's own copy, saying why
            assert "ignoring default.onnx" in out.stderr and "exporting an ONNX copy" in out.stderr
    cached = tmp_path / "cache" / "onnx" / f"{digest}.onnx"
    assert cached.is_file() and op._cached_copy(cached, digest)
    # A copy planted in the cache under the model's digest, without the app's record.
    cache = tmp_path / "planted"
    cache.mkdir()
    _forged_onnx(cache / f"{digest}.onnx", digest, forged_meta)
    own = tmp_path / "own" / "default.safetensors"
    own.parent.mkdir()
    shutil.copy(default_model, own)
    assert not op._cached_copy(cache / f"{digest}.onnx", digest)
    made = op.onnx_for(own, cache)
    assert made == cache / f"{digest}.onnx" and op._cached_copy(made, digest)
    assert op._recorded_source(made) == digest and op.file_sha256(made) == op.file_sha256(cached)


def test_onnx_predictor_takes_its_description_from_the_model_file(default_model, tmp_path):
    forged = _forged_onnx(tmp_path / "x.onnx", op.file_sha256(default_model), _forged_meta(default_model))
    p = op.OnnxPredictor(forged, source=default_model)
    assert p.labels == [str(i) for i in range(10)] and p.meta.uncertainty.method == "energy"
    with pytest.raises(CheckpointError, match="model file"):
        op.OnnxPredictor(forged)


EXPORT_ONCE = r"""
import sys
from pathlib import Path
from mnist_desktop.core import onnx_predictor as op
copy = op.onnx_for(sys.argv[1], Path(sys.argv[2]), status=lambda m: print("STATUS", m, flush=True))
print("COPY", copy)
"""


@pytest.mark.slow
def test_four_concurrent_first_runs_export_once(tmp_path):
    model = model_with(tmp_path / "m.safetensors")
    cache = tmp_path / "cache4"
    procs = [subprocess.Popen([sys.executable, "-c", EXPORT_ONCE, str(model), str(cache)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=_env(tmp_path), cwd=tmp_path)
             for _ in range(4)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1000:] for o in outs]
    text = "".join(o[0] for o in outs)
    assert text.count("STATUS exporting an ONNX copy") == 1, text
    copies = {line for line in text.splitlines() if line.startswith("COPY ")}
    digest = op.file_sha256(model)
    assert copies == {f"COPY {cache / (digest + '.onnx')}"}
    assert op._cached_copy(cache / f"{digest}.onnx", digest)
    assert sorted(p.name for p in cache.iterdir()) == [f"{digest}.onnx", f"{digest}.onnx.json",
                                                       f"{digest}.onnx.lock"]
