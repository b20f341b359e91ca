"""Throughput and latency of ``mnist-desktop serve`` under concurrent local load.

    python -m mnist_desktop.serve_bench [--seconds 10] [--connections 32] [--model FILE]

Starts the server as a child process (``app_command("serve", ...)``, as a user would),
waits for ``/health``, then drives ``POST /predict`` from keep-alive connections on
loopback with single 28x28 MNIST-style PNG digits (from the bundled training subset)
and, separately, with the same digits as raw ``application/x-gray8`` pixels. Prints
requests/s, p50/p99 latency and the server's mean batch size. The client runs on the
same cores as the server (an honest local client, not a separate load machine): its
own CPU time is included in what the machine has to give.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _digits(n: int = 200) -> np.ndarray:
    from mnist_desktop.core.paths import resources_dir

    path = Path(resources_dir()) / "data" / "mnist-5k" / "train-5k-images-idx3-ubyte.gz"
    with gzip.open(path) as f:
        imgs = np.frombuffer(f.read()[16:], np.uint8).reshape(-1, 28, 28)
    return imgs[np.random.default_rng(0).choice(len(imgs), n, replace=False)]


def _png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(port: int, path: str, ctype: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return status, await reader.readexactly(length)


async def _load(port: int, requests: list[bytes], connections: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def one_connection(k: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = k
        try:
            while time.perf_counter() < stop:
                req = requests[i % len(requests)]
                i += connections
                t0 = time.perf_counter()
                writer.write(req)
                status, _ = await _read_response(reader)
                latencies.append(time.perf_counter() - t0)
                errors += status != 200
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(one_connection(k) for k in range(connections)))
    elapsed = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {"requests": len(lat), "errors": errors, "seconds": elapsed, "rps": len(lat) / elapsed,
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "max_ms": float(lat.max())}


def _get(port: int, path: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return json.loads(r.read())


def _wait_ready(proc: subprocess.Popen, port: int, timeout: float = 60) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
        try:
            _get(port, "/health")
            return time.perf_counter() - t0
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the server did not answer /health within a minute")


def main(argv: list[str] | None = None) -> int:
    from mnist_desktop.core.app_command import app_command

    p = argparse.ArgumentParser(prog="python -m mnist_desktop.serve_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10.0, help="length of each load phase (default 10)")
    p.add_argument("--connections", type=int, default=32, help="concurrent keep-alive connections (default 32)")
    p.add_argument("--model", help="model file (default: the bundled model)")
    p.add_argument("--threads", type=int, default=1, help="the server's forward-pass threads (default 1)")
    args = p.parse_args(argv)

    port = _free_port()
    cmd = app_command("serve", "--port", str(port), "--threads", str(args.threads), *(["--model", args.model] if args.model else []))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        ready = _wait_ready(proc, port)
        digits = _digits()
        pngs = [_request(port, "/predict", "image/png", _png(d)) for d in digits]
        raws = [_request(port, "/predict?width=28&height=28", "application/x-gray8", d.tobytes()) for d in digits]
        asyncio.run(_load(port, pngs, 4, 1.0))   # warm-up
        cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
                   "unknown CPU") if os.path.exists("/proc/cpuinfo") else "unknown CPU"
        print(f"serve_bench: {cpu}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} before; "
              f"server ready {ready:.2f} s after start; {args.connections} keep-alive connections, "
              f"{args.seconds:g} s per phase, client on the same cores")
        for name, reqs in (("PNG 28x28 (image/png)", pngs), ("raw 28x28 (application/x-gray8)", raws)):
            before = _get(port, "/model")["batching"]
            r = asyncio.run(_load(port, reqs, args.connections, args.seconds))
            after = _get(port, "/model")["batching"]
            n, b = after["requests"] - before["requests"], after["batches"] - before["batches"]
            print(f"  {name:34s} {r['rps']:7.0f} requests/s   p50 {r['p50_ms']:5.1f} ms   p99 {r['p99_ms']:5.1f} ms"
                  f"   max {r['max_ms']:6.1f} ms   mean batch {n / max(b, 1):4.1f}   errors {r['errors']}")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
