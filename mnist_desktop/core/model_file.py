"""Reading a model file without trusting it, and without torch.

Everything a model file says is checked before it is used, so a hostile or broken file is
refused with one line (:class:`~mnist_desktop.core.model_meta.CheckpointError`) instead
of hanging, allocating terabytes or crashing:

* only a regular file of at most :data:`MAX_MODEL_BYTES` is opened (not ``/proc/self/mem``,
  a FIFO or a device; opened non-blocking and checked again once open);
* a safetensors header is at most :data:`MAX_HEADER_BYTES`, lies inside the file, and
  every tensor's dtype, shape and byte range agree with each other and with the file;
* the metadata is bounded in size and depth and validated strictly
  (:meth:`ModelMeta.from_json <mnist_desktop.core.model_meta.ModelMeta.from_json>`,
  architecture arguments included);
* with ``check_values``, every weight is floating point (float32, float16 or bfloat16)
  and finite. Integers are accepted only for batch norm's ``num_batches_tracked``
  counters, which no forward pass reads.

:mod:`~mnist_desktop.core.checkpoint` reads tensors into torch after these checks; the
ONNX Runtime path and the batch workers use this module directly.
"""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mnist_desktop.core.model_meta import META_KEY, CheckpointError, ModelMeta, loads_bounded

#: The largest model file opened (50 M float32 parameters take 200 MB).
MAX_MODEL_BYTES = 256 << 20
#: The largest safetensors JSON header (tensor table plus metadata).
MAX_HEADER_BYTES = 8 << 20
MAX_TENSORS = 10_000

#: safetensors dtypes a weight may have: numpy dtype (None: bfloat16) and item size.
FLOAT_DTYPES = {"F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": (None, 2)}
#: Integer dtypes accepted for batch norm's step counters only.
COUNTER_DTYPES = {"I64": 8, "I32": 4}
COUNTER_SUFFIX = "num_batches_tracked"


def check_regular_file(path: str | os.PathLike, max_bytes: int | None = MAX_MODEL_BYTES) -> int:
    """The size of ``path`` after checking it is a regular, non-empty file of at most
    ``max_bytes`` (None: any size); nothing is opened.

    Raises
    ------
    CheckpointError
        Missing, a folder, not a regular file (FIFO, device, socket), empty (as
        ``/proc/self/mem`` reports itself) or too large; one line.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise CheckpointError(f"model file not found: {path}") from None
    except OSError as e:
        raise CheckpointError(f"{path.name}: cannot read ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise CheckpointError(f"not a file: {path}")
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"{path}: refused: not a regular file ({_kind(st.st_mode)})")
    if st.st_size == 0:   # also what /proc/self/mem and its kind report
        raise CheckpointError(f"{path}: not a valid model file (empty)")
    if max_bytes is not None and st.st_size > max_bytes:
        raise CheckpointError(f"{path.name}: refused: {st.st_size:,} bytes, larger than the "
                              f"{max_bytes:,} a model file may have")
    return st.st_size


def open_regular(path: str | os.PathLike, max_bytes: int | None = MAX_MODEL_BYTES) -> BinaryIO:
    """Open ``path`` for reading after :func:`check_regular_file`, non-blocking (a file
    swapped for a FIFO after the check does not hang the open) and checked again once open."""
    check_regular_file(path, max_bytes)
    path = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise CheckpointError(f"{path.name}: cannot read ({e.strerror or e})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (max_bytes is not None and st.st_size > max_bytes):
        os.close(fd)
        raise CheckpointError(f"{path.name}: refused: not a regular file of at most {max_bytes:,} bytes")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a special file"


def file_format(path: str | os.PathLike) -> str:
    """``"torch"`` (a pickle or torch.save zip, or a ``.pt``/``.pth`` name) or
    ``"safetensors"``, after :func:`check_regular_file`."""
    path = Path(path)
    with open_regular(path) as f:
        head = _read(f, path, 9)
    if path.suffix in (".pt", ".pth"):
        return "torch"
    # A safetensors file: a u64 header length, then the header's "{" (its length bytes
    # can look like a pickle's protocol mark: 640 is 80 02 ...).
    if head[8:9] == b"{":
        return "safetensors"
    if head[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05") or head[:2] == b"PK":
        return "torch"
    return "safetensors"


@dataclass(frozen=True)
class TensorEntry:
    dtype: str
    shape: tuple[int, ...]
    start: int   # byte offsets in the file
    end: int


@dataclass(frozen=True)
class SafetensorsFile:
    meta: ModelMeta
    tensors: dict[str, TensorEntry]


def read_safetensors(path: str | os.PathLike, check_values: bool = False) -> SafetensorsFile:
    """Read and check a safetensors model file's header and metadata (see the module doc);
    with ``check_values``, also every tensor's values. No torch.

    Raises
    ------
    CheckpointError
        One line, starting with the file's name.
    """
    path = Path(path)
    try:
        return _read_safetensors(path, check_values)
    except CheckpointError as e:
        text = str(e)
        named = text.startswith((path.name, str(path), "model file not found", "not a file"))
        raise CheckpointError(text if named else f"{path.name}: {text}") from None


def _read_safetensors(path: Path, check_values: bool) -> SafetensorsFile:
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        head = _read(f, path, 8)
        if len(head) < 8:
            raise CheckpointError("not a valid model file (too short for a safetensors header)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise CheckpointError(f"not a valid model file (its header claims {n:,} bytes; "
                                  f"the file has {size - 8:,} after the length)")
        if n > MAX_HEADER_BYTES:
            raise CheckpointError(f"refused: a {n:,}-byte header, over the limit of {MAX_HEADER_BYTES:,}")
        raw = _read(f, path, n)
        if not raw.startswith(b"{"):
            raise CheckpointError("not a valid model file (no safetensors header)")
        header = loads_bounded(raw, MAX_HEADER_BYTES, "the safetensors header")
        if not isinstance(header, dict):
            raise CheckpointError("not a valid model file (the header is not an object)")
        raw_meta = header.pop("__metadata__", None) or {}
        if not isinstance(raw_meta, dict) or not isinstance(raw_meta.get(META_KEY), str):
            raise CheckpointError("safetensors file without mnist-desktop metadata")
        meta = ModelMeta.from_json(raw_meta[META_KEY])
        tensors = _tensor_table(header, 8 + n, size)
        if check_values:
            for name, entry in tensors.items():
                _check_values(f, path, name, entry)
    return SafetensorsFile(meta, tensors)


def _read(f: BinaryIO, path: Path, n: int) -> bytes:
    try:
        return f.read(n)
    except OSError as e:
        raise CheckpointError(f"{path.name}: cannot read ({e.strerror or e})") from None


def _tensor_table(header: dict, data_start: int, size: int) -> dict[str, TensorEntry]:
    if len(header) > MAX_TENSORS:
        raise CheckpointError(f"refused: {len(header):,} tensors (at most {MAX_TENSORS:,})")
    data_len = size - data_start
    tensors = {}
    for name, e in header.items():
        shown = repr(name[:60])
        if not isinstance(e, dict) or not isinstance(e.get("dtype"), str) \
                or not isinstance(e.get("shape"), list) or not isinstance(e.get("data_offsets"), list):
            raise CheckpointError(f"not a valid model file (tensor {shown} has a malformed entry)")
        dtype, shape, offsets = e["dtype"], e["shape"], e["data_offsets"]
        if not all(type(d) is int and d >= 0 for d in shape) or len(shape) > 8 \
                or len(offsets) != 2 or not all(type(o) is int for o in offsets):
            raise CheckpointError(f"not a valid model file (tensor {shown} has a malformed shape or offsets)")
        if dtype in FLOAT_DTYPES:
            itemsize = FLOAT_DTYPES[dtype][1]
        elif dtype in COUNTER_DTYPES and name.endswith(COUNTER_SUFFIX) and not shape:
            itemsize = COUNTER_DTYPES[dtype]
        else:
            raise CheckpointError(f"refused: tensor {shown} is {dtype[:10]}; a model's weights must be "
                                  "float32, float16 or bfloat16")
        start, end = offsets
        count = 1
        for d in shape:
            count *= d
        if not 0 <= start <= end <= data_len or end - start != count * itemsize:
            raise CheckpointError(f"not a valid model file (tensor {shown} lies outside the file or does "
                                  "not match its shape: truncated?)")
        tensors[name] = TensorEntry(dtype, tuple(shape), data_start + start, data_start + end)
    return tensors


def _check_values(f: BinaryIO, path: Path, name: str, entry: TensorEntry) -> None:
    if entry.dtype not in FLOAT_DTYPES:
        return
    f.seek(entry.start)
    buf = _read(f, path, entry.end - entry.start)
    if len(buf) != entry.end - entry.start:
        raise CheckpointError(f"not a valid model file (tensor {name[:60]!r} is truncated)")
    np_dtype = FLOAT_DTYPES[entry.dtype][0]
    if np_dtype is None:   # bfloat16: all exponent bits set is Inf or NaN
        bits = np.frombuffer(buf, "<u2")
        finite = not np.any((bits & 0x7F80) == 0x7F80)
    else:
        finite = bool(np.isfinite(np.frombuffer(buf, np_dtype)).all())
    if not finite:
        raise CheckpointError(f"refused: tensor {name[:60]!r} holds NaN or infinite values")
