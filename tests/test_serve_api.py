"""The local prediction API (mnist_desktop.service.api, ``mnist-desktop serve``)."""

from __future__ import annotations

import asyncio
import base64
import gzip
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from mnist_desktop.core.paths import resources_dir  # noqa: E402
from mnist_desktop.core.preprocess import preprocess  # noqa: E402
from mnist_desktop.service.api import ApiLimits, create_app, is_loopback  # noqa: E402
from mnist_desktop.service.batching import MicroBatcher  # noqa: E402
from mnist_desktop.service.models import ModelChoice, load_predictor  # noqa: E402


@pytest.fixture(scope="module")
def loaded():
    return load_predictor(ModelChoice(None, "cpu"))


@pytest.fixture(scope="module")
def digits():
    path = resources_dir() / "data" / "mnist-5k"
    with gzip.open(path / "train-5k-images-idx3-ubyte.gz") as f:
        imgs = np.frombuffer(f.read()[16:], np.uint8).reshape(-1, 28, 28)
    with gzip.open(path / "train-5k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read()[8:], np.uint8)
    pick = np.arange(0, 5000, 250)   # two of every digit (the subset is sorted by class)
    return imgs[pick], labels[pick]


@pytest.fixture(scope="module")
def client(loaded):
    app = create_app(loaded, ApiLimits(max_body_bytes=200_000, max_pixels=1_000_000))
    with TestClient(app) as c:
        yield c


def png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


def test_png_bytes_give_the_same_answer_as_the_predictor(client, loaded, digits):
    imgs, labels = digits
    for img, label in zip(imgs[:6], labels[:6]):
        r = client.post("/predict", content=png(img), headers={"Content-Type": "image/png"})
        assert r.status_code == 200, r.text
        body = r.json()
        expected = loaded.predictor.predict(img)
        assert body["prediction"] == expected.label == str(label)
        assert body["labels"] == [str(i) for i in range(10)]
        assert set(body["probabilities"]) == set(body["labels"])
        assert abs(sum(body["probabilities"].values()) - 1) < 1e-4
        assert body["probabilities"][body["prediction"]] == pytest.approx(expected.confidence, abs=1e-5)
        assert body["uncertain"] is expected.uncertain
        assert body["top"][0][0] == body["prediction"] and len(body["top"]) == 3
        assert body["number"] is None


def test_base64_json_raw_pixels_and_octet_stream_agree(client, digits):
    img = digits[0][7]
    a = client.post("/predict", content=png(img), headers={"Content-Type": "image/png"}).json()
    b = client.post("/predict", json={"image": base64.b64encode(png(img)).decode()}).json()
    c = client.post("/predict?width=28&height=28", content=img.tobytes(),
                    headers={"Content-Type": "application/x-gray8"}).json()
    d = client.post("/predict", content=png(img), headers={"Content-Type": "application/octet-stream"}).json()
    for other in (b, c, d):
        assert other["prediction"] == a["prediction"]
        assert other["confidence"] == pytest.approx(a["confidence"], abs=1e-6)


def test_strokes(client, loaded):
    one = [[[140, 40, 0.5], [140, 120, 0.6], [141, 240, 0.5]]]
    r = client.post("/predict", json={"strokes": one, "canvas_size": [280, 280]})
    assert r.status_code == 200, r.text
    assert r.json()["prediction"] == "1"
    blank = client.post("/predict", json={"strokes": []})
    assert blank.status_code == 400 and "nothing to classify" in blank.json()["error"]["message"]


@pytest.mark.parametrize("headers, body, status, words", [
    ({"Content-Type": "text/plain"}, b"7", 415, "unsupported Content-Type"),
    ({}, b"\x89PNG", 415, "no Content-Type"),
    ({"Content-Type": "image/png"}, b"", 400, "empty"),
    ({"Content-Type": "image/png"}, b"not an image at all", 400, "cannot read the image"),
    ({"Content-Type": "image/png"}, b"%!PS-Adobe-3.0 EPSF-3.0\n", 400, "PostScript"),
    ({"Content-Type": "application/json"}, b"{not json", 422, "not valid JSON"),
    ({"Content-Type": "application/json"}, b"[1, 2]", 422, "must be an object"),
    ({"Content-Type": "application/json"}, b'{"image": "***"}', 422, "base64"),
    ({"Content-Type": "application/json"}, b'{"strokes": [[["a", 1]]]}', 422, "strokes"),
    ({"Content-Type": "application/json"}, b'{"strokes": [[[1, 2, 3, 4]]]}', 422, "[x, y]"),
    ({"Content-Type": "application/json"}, b'{"strokes": [[[1e999, 2]]]}', 422, "finite"),
    ({"Content-Type": "application/json"}, b'{"strokes": [], "canvas_size": [0, 5]}', 422, "canvas_size"),
    ({"Content-Type": "application/json"}, b'{"colour": 1}', 422, "'image' (base64) or 'strokes'"),
    ({"Content-Type": "application/x-gray8"}, b"\0" * 784, 422, "width and height"),
])
def test_bad_requests_get_a_clear_4xx(client, headers, body, status, words):
    r = client.post("/predict", content=body, headers=headers)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["status"] == status and words in err["message"]


def test_wrong_raw_size_and_bad_query(client):
    r = client.post("/predict?width=28&height=27", content=b"\0" * 784,
                    headers={"Content-Type": "application/x-gray8"})
    assert r.status_code == 400 and "756 bytes" in r.json()["error"]["message"]
    r = client.post("/predict?top_k=0", content=b"x", headers={"Content-Type": "image/png"})
    assert r.status_code == 422 and "top_k" in r.json()["error"]["message"]


def test_oversized_body_is_refused_before_it_is_read(client):
    big = b"\0" * 300_000
    r = client.post("/predict", content=big, headers={"Content-Type": "image/png"})
    assert r.status_code == 413 and "at most 200000" in r.json()["error"]["message"]

    def chunks():   # no Content-Length: counted while it streams in
        for _ in range(100):
            yield b"\0" * 10_000
    r = client.post("/predict", content=chunks(), headers={"Content-Type": "image/png"})
    assert r.status_code == 413 and "over 200000" in r.json()["error"]["message"]


def _bomb_png(width: int, height: int) -> bytes:
    """A valid grayscale PNG of width x height black pixels: a few KB that decode to MBs."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = zlib.compress(b"\0" * ((width + 1) * height), 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def test_decompression_bomb_and_too_many_pixels(client):
    bomb = _bomb_png(2000, 2000)   # 4 MP decoded from a few KB; the limit here is 1 MP
    assert len(bomb) < 200_000
    r = client.post("/predict", content=bomb, headers={"Content-Type": "image/png"})
    assert r.status_code == 413 and "2000x2000" in r.json()["error"]["message"]
    r = client.post("/predict?width=2000&height=2000", content=b"\0" * 16,
                    headers={"Content-Type": "application/x-gray8"})
    assert r.status_code == 413


def test_too_many_strokes(loaded):
    app = create_app(loaded, ApiLimits(max_strokes=3, max_points=10))
    with TestClient(app) as c:
        r = c.post("/predict", json={"strokes": [[[1, 1]]] * 4})
        assert r.status_code == 413 and "strokes" in r.json()["error"]["message"]
        r = c.post("/predict", json={"strokes": [[[1, 1]] * 11]})
        assert r.status_code == 413 and "points" in r.json()["error"]["message"]


def test_health_model_and_openapi(client):
    assert client.get("/health").json() == {"status": "ok"}
    m = client.get("/model").json()
    assert m["backend"] == "onnxruntime" and m["labels"][0] == "0" and m["limits"]["max_body_bytes"] == 200_000
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"image/png", "application/json", "application/x-gray8"} <= set(body)
    assert {"200", "400", "413", "415", "422"} <= set(spec["paths"]["/predict"]["post"]["responses"])


def test_concurrent_requests_are_batched_and_match_one_by_one(loaded, digits):
    """Many concurrent requests through the batcher: the same answers as one at a time,
    in fewer forward passes than requests."""
    import httpx

    imgs, _ = digits
    app = create_app(loaded, max_wait=0.005)
    one_by_one = [loaded.predictor.predict(img) for img in imgs]

    async def run():
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                reqs = [c.post("/predict", content=png(img), headers={"Content-Type": "image/png"})
                        for img in imgs for _ in range(3)]
                return await asyncio.gather(*reqs)

    responses = asyncio.run(run())
    assert all(r.status_code == 200 for r in responses)
    for i, r in enumerate(responses):
        exp = one_by_one[i // 3]
        body = r.json()
        assert body["prediction"] == exp.label
        assert body["probabilities"][exp.label] == pytest.approx(exp.confidence, abs=1e-5)
    stats = app.state.batcher.stats
    assert stats.requests == len(responses) and stats.batches < len(responses) and stats.largest_batch > 1


def test_batcher_failure_fails_its_requests_not_the_batcher():
    calls = []

    def forward(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("boom")
        n = len(batch)
        return np.full((n, 10), 0.1, np.float32), np.zeros(n, bool), np.zeros(n, np.float32)

    async def run():
        b = MicroBatcher(forward, max_batch=4, max_wait=0)
        await b.start()
        with pytest.raises(RuntimeError, match="boom"):
            await b.submit(np.zeros((28, 28)))
        probs, unc, score = await b.submit(np.zeros((28, 28)))
        await b.stop()
        return probs

    assert asyncio.run(run()).shape == (10,)


def test_loopback_rule():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.0.0.5")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10") and not is_loopback("example.com")


def test_serve_refuses_a_public_address_without_allow_remote(capsys):
    from mnist_desktop.cli import main

    assert main(["serve", "--host", "0.0.0.0"]) == 2
    assert "--allow-remote" in capsys.readouterr().err


def test_serve_with_a_missing_model_exits_3(tmp_path, capsys):
    from mnist_desktop.cli import main

    assert main(["serve", "--model", str(tmp_path / "nope.safetensors")]) == 3
    assert "cannot load the model" in capsys.readouterr().err


def test_the_api_matches_its_preprocessing(loaded, digits):
    """The API's 28x28 is the one preprocessing path's (no second copy of it)."""
    img = digits[0][3]
    via_api = create_app(loaded)
    with TestClient(via_api) as c:
        body = c.post("/predict?width=28&height=28", content=img.tobytes(),
                      headers={"Content-Type": "application/x-gray8"}).json()
    probs, _, _ = loaded.predictor.probabilities(preprocess(img, loaded.predictor.options)[None])
    assert body["confidence"] == pytest.approx(float(probs[0].max()), abs=1e-6)


def test_a_batch_with_a_blank_image_fails_that_request_only(loaded, digits):
    """Small images are preprocessed together with their batch; one with nothing to
    classify gets its own 400 and the others the answers they get alone."""
    import httpx

    imgs, _ = digits
    app = create_app(loaded, max_wait=0.01)
    blank = np.zeros((28, 28), np.uint8)
    inputs = [imgs[0], blank, imgs[1], imgs[2], blank, imgs[3]]

    async def run():
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                reqs = [c.post("/predict?width=28&height=28", content=img.tobytes(),
                               headers={"Content-Type": "application/x-gray8"}) for img in inputs]
                return await asyncio.gather(*reqs)

    responses = asyncio.run(run())
    for img, r in zip(inputs, responses):
        if img is blank:
            assert r.status_code == 400 and "nothing to classify" in r.json()["error"]["message"]
        else:
            assert r.status_code == 200
            exp = loaded.predictor.predict(img)
            assert r.json()["prediction"] == exp.label
            assert r.json()["confidence"] == pytest.approx(exp.confidence, abs=1e-6)
    assert app.state.batcher.stats.largest_batch > 1


def test_batched_preprocessing_is_preprocess_one_by_one(loaded, digits):
    from mnist_desktop.core.preprocess import EmptyInputError
    from mnist_desktop.service.api import ApiError, SmallGray, prepare_batch

    imgs, _ = digits
    opts = loaded.predictor.options
    items = [SmallGray(img.astype(np.float32) / 255) for img in imgs[:8]]
    items.insert(3, SmallGray(np.zeros((28, 28), np.float32)))
    items.append(preprocess(imgs[9], opts))          # an already preprocessed 28x28
    items.append(SmallGray(imgs[10][:20, :25].astype(np.float32) / 255))   # another size, alone
    batch, rows = prepare_batch(items, opts)
    assert isinstance(rows[3], ApiError) and rows[3].status == 400
    with pytest.raises(EmptyInputError):
        preprocess(np.zeros((28, 28), np.float32), opts)
    for item, row in zip(items, rows):
        if isinstance(row, ApiError):
            continue
        src = item.gray if isinstance(item, SmallGray) else None
        expected = preprocess(src, opts) if src is not None else item
        assert np.array_equal(batch[row], expected)


def test_two_batches_in_flight():
    """With two workers, a second batch runs while the first is still in its forward pass
    (the barrier only opens when both are inside ``forward`` at once)."""
    import threading

    both_inside = threading.Barrier(2, timeout=10)

    def forward(batch):
        both_inside.wait()
        n = len(batch)
        return np.full((n, 10), 0.1, np.float32), np.zeros(n, bool), np.zeros(n, np.float32)

    async def run():
        b = MicroBatcher(forward, max_batch=1, workers=2)
        await b.start()
        out = await asyncio.gather(b.submit(np.zeros((28, 28))), b.submit(np.ones((28, 28))))
        await b.stop()
        return b.stats, out

    stats, out = asyncio.run(run())
    assert stats.batches == 2 and stats.largest_batch == 1 and all(p.shape == (10,) for p, _, _ in out)


def test_the_batcher_runs_again_after_a_stop():
    """An app's lifespan may run more than once (test clients, fuzzers)."""
    def forward(batch):
        n = len(batch)
        return np.full((n, 10), 0.1, np.float32), np.zeros(n, bool), np.zeros(n, np.float32)

    async def run():
        b = MicroBatcher(forward)
        for _ in range(2):
            await b.start()
            probs, _, _ = await b.submit(np.zeros((28, 28)))
            await b.stop()
        return probs

    assert asyncio.run(run()).shape == (10,)
