"""wring from Python: the same answers as the Rust library, on numpy arrays, with the GIL released.

Needs the test model (`bash .ci/fetch-model.sh`, or WRING_TEST_MODEL) and `pip install .` at the repository root."""

import os
import pathlib
import threading

import numpy as np
import pytest

import wring

ROOT = pathlib.Path(__file__).resolve().parents[3]
MODEL = os.environ.get("WRING_TEST_MODEL", str(ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))


@pytest.fixture(scope="module")
def model():
    return wring.Model(MODEL, context=512)


def test_tokenize_matches_llama_cpp(model):
    # The ids llama-tokenize gives for this text (tests/fixtures/smollm2_tokens.json records the same).
    import json

    fx = json.loads((ROOT / "tests" / "fixtures" / "smollm2_tokens.json").read_text())
    for case in fx["cases"]:
        assert model.tokenize(case["text"]) == case["ids"]
        assert model.detokenize(case["ids"]) == case["text"]


def test_streamed_generation_equals_the_whole_and_is_greedy_deterministic(model):
    prompt = "The capital of France is"
    pieces = list(model.generate(prompt, max_tokens=12))
    assert len(pieces) >= 1
    whole = model.complete(prompt, max_tokens=12)
    assert "".join(pieces) == whole
    # The logits of the prompt pick the first generated token.
    logits = model.logits(prompt)
    assert logits.shape == (len(model.tokenize(prompt)), model.vocab_size)
    assert logits.dtype == np.float32 and np.isfinite(logits).all()
    first = int(np.argmax(logits[-1]))
    assert whole.startswith(model.detokenize([first]))
    # A stop string cuts the text before it.
    cut = whole[len(whole) // 2 :][:3]
    assert model.complete(prompt, max_tokens=12, stop=[cut]) == whole[: whole.index(cut)]
    # Seeded sampling repeats.
    a = model.complete(prompt, max_tokens=8, temperature=0.9, top_p=0.95, seed=7)
    b = model.complete(prompt, max_tokens=8, temperature=0.9, top_p=0.95, seed=7)
    assert a == b


def test_generate_batch_equals_one_at_a_time():
    # Continuous batching: every prompt's greedy text equals its own complete() with f32 activations (the
    # batch's ids equal the single stream's; tests/batching.rs proves it on ids), in the prompts' order,
    # and the model generates one at a time again afterwards.
    m = wring.Model(MODEL, context=256, q8_activations=False)
    prompts = ["The capital of France is", "def fibonacci(n):", "Once upon a time,", "1, 2, 3,"]
    alone = [m.complete(p, max_tokens=10) for p in prompts]
    assert m.generate_batch(prompts, max_tokens=10, parallel=3) == alone
    cut = m.generate_batch(["1, 2, 3,"], max_tokens=10, stop=[", 6"])[0]
    assert ", 6" not in cut and alone[3].startswith(cut)
    assert m.generate_batch([]) == []
    with pytest.raises(ValueError):
        m.generate_batch(["x", ""], max_tokens=4)
    assert m.complete(prompts[0], max_tokens=10) == alone[0]


def test_generation_releases_the_gil_and_can_be_cancelled(model):
    it = model.generate("1, 2, 3, 4, 5,", max_tokens=400)
    ticks = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(1)
            stop.wait(0.01)

    t = threading.Thread(target=tick)
    t.start()
    first = next(it)
    it.cancel()
    rest = list(it)
    stop.set()
    t.join()
    assert first
    assert len(rest) < 50, "cancel stops the generation"
    assert len(ticks) > 1, "another Python thread ran while the GPU worked"


def test_perplexity_is_llama_perplexitys_measure(model):
    text = (ROOT / "tests" / "fixtures" / "perplexity_text.txt").read_text()
    ppl = model.perplexity(text, context=128, chunks=2)
    assert 5.0 < ppl < 100.0


def test_bad_requests_raise():
    with pytest.raises(ValueError):
        wring.Model("/nonexistent/model.gguf")


def test_bad_generation_arguments_raise(model):
    with pytest.raises(ValueError):
        model.generate("x", temperature=-1.0)
    with pytest.raises(ValueError):
        model.generate("x", max_tokens=10_000)
    with pytest.raises(ValueError):
        model.generate("")


def test_image_codec_round_trip():
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:48, 0:64]
    img = np.stack([(x * 4) % 256, (y * 5) % 256, (x + y) % 256], axis=-1).astype(np.uint8)
    img = np.clip(img.astype(int) + rng.integers(-3, 4, img.shape), 0, 255).astype(np.uint8)
    stream = wring.encode_image(img, quality=90)
    assert isinstance(stream, bytes) and len(stream) < img.size
    back = wring.decode(stream)
    assert back.shape == img.shape and back.dtype == np.uint8
    mse = np.mean((back.astype(float) - img.astype(float)) ** 2)
    assert 10 * np.log10(255**2 / max(mse, 1e-9)) > 30
    with pytest.raises(ValueError):
        wring.decode(b"not a stream")
    with pytest.raises(ValueError):
        wring.encode_image(np.zeros((4, 4, 2), np.uint8))


def test_audio_codec_round_trip():
    t = np.arange(8000) / 8000.0
    samples = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)[:, None]
    stream = wring.encode_audio(samples, 8000, quality=90)
    back, rate = wring.decode(stream)
    assert rate == 8000 and back.shape == samples.shape and back.dtype == np.int16
    err = back.astype(float) - samples.astype(float)
    assert 10 * np.log10(np.mean(samples.astype(float) ** 2) / np.mean(err**2)) > 20


def test_vq_train_and_search_agree_with_numpy():
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(8, 16)).astype(np.float32) * 5
    data = (centers[rng.integers(0, 8, 2000)] + rng.normal(size=(2000, 16)) * 0.1).astype(np.float32)
    book = wring.vq_train(data, 8, iters=10, seed=3)
    assert book.shape == (8, 16)
    queries = data[:100]
    ids, dist = wring.vq_search(book, queries, k=2)
    assert ids.shape == (100, 2) and dist.shape == (100, 2)
    exact = ((queries[:, None, :] - book[None, :, :]) ** 2).sum(-1)
    np.testing.assert_array_equal(ids[:, 0], exact.argmin(1))
    np.testing.assert_allclose(dist[:, 0], exact.min(1), rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError):
        wring.vq_search(book, queries[:, :3])
    with pytest.raises(ValueError):
        wring.vq_search(book, queries, metric="manhattan")


def test_encode_shard_splits_a_directory_and_skips_finished_outputs(tmp_path):
    import zlib, struct

    def png(path, w, h, seed):
        rng = np.random.default_rng(seed)
        rows = [b"\x00" + rng.integers(0, 256, w * 3, dtype=np.uint8).tobytes() for _ in range(h)]

        def chunk(t, d):
            return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

        path.write_bytes(
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"".join(rows)))
            + chunk(b"IEND", b"")
        )

    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(5):
        png(src / f"img{i}.png", 16, 12, i)
    (src / "broken.png").write_bytes(b"not a png")
    results = [wring.encode_shard(str(src), str(dst), index=i, count=2, quality=80) for i in range(2)]
    assert sum(r["done"] for r in results) == 5
    assert sum(len(r["failed"]) for r in results) == 1
    assert sorted(p.name for p in dst.iterdir()) == [f"img{i}.wrg" for i in range(5)]
    again = wring.encode_shard(str(src), str(dst))
    assert (again["done"], again["skipped"], len(again["failed"])) == (0, 5, 1)
    assert wring.decode((dst / "img0.wrg").read_bytes()).shape == (12, 16, 3)
    with pytest.raises(ValueError):
        wring.encode_shard(str(src), str(dst), index=2, count=2)
