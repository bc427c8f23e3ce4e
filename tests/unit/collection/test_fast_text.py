"""Text towers served by ONNX Runtime must give the vectors PyTorch gives, or not be used."""

import numpy as np
import pytest
from django.conf import settings

from collection.encoders import Encoder
from collection.sentence import SentenceEncoder

TEXTS = ["a dog on a beach", "two people riding bicycles down a busy street at night, in the rain", "x", ""]


@pytest.mark.parametrize(
    "load", [lambda: Encoder(str(settings.LOUPE_CLIP_MODEL)), lambda: SentenceEncoder(settings.LOUPE_TEXT_MODEL)]
)
def test_onnx_text_tower_matches_pytorch_and_is_reused(load, tmp_path):
    encoder = load()
    eager = encoder.encode_texts(TEXTS)
    assert encoder.accelerate_text(tmp_path) is True and encoder.text_runtime == "onnxruntime"
    fast = encoder.encode_texts(TEXTS)
    assert fast.shape == eager.shape and fast.dtype == np.float32
    assert np.min(np.sum(fast * eager, axis=1)) > 0.999
    assert np.allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)
    exported = list(tmp_path.glob("*.onnx"))
    assert len(exported) == 1
    stamp = exported[0].stat().st_mtime_ns
    again = load()
    assert again.accelerate_text(tmp_path) is True
    assert exported[0].stat().st_mtime_ns == stamp  # the same weights reuse the exported file


def test_a_broken_export_keeps_pytorch(tmp_path, caplog):
    encoder = Encoder(str(settings.LOUPE_CLIP_MODEL))
    key_file = tmp_path / f"text-{encoder.fingerprint[:24]}.onnx"
    key_file.write_bytes(b"not an onnx model")
    assert encoder.accelerate_text(tmp_path) is False
    assert encoder.text_runtime == "pytorch"
    assert "using eager PyTorch" in caplog.text
    assert encoder.encode_texts(["still works"]).shape == (1, encoder.dimension)


@pytest.mark.parametrize(
    "load", [lambda: Encoder(str(settings.LOUPE_CLIP_MODEL)), lambda: SentenceEncoder(settings.LOUPE_TEXT_MODEL)]
)
def test_int8_serves_only_within_its_cosine_bar(load, tmp_path):
    from collection import fast_text

    encoder = load()
    eager = encoder.encode_texts(TEXTS)
    assert encoder.accelerate_text(tmp_path, int8=True) is True
    assert list(tmp_path.glob("*.int8.onnx")), "the int8 model is written next to the fp32 one"
    fast = encoder.encode_texts(TEXTS)
    floor = fast_text.MIN_COSINE_INT8 if encoder.text_runtime == "onnxruntime-int8" else fast_text.MIN_COSINE
    assert encoder.text_runtime in ("onnxruntime-int8", "onnxruntime")
    assert np.min(np.sum(fast * eager, axis=1)) >= floor - 1e-3  # probes differ from TEXTS: a little slack


def test_int8_that_misses_the_bar_falls_back_to_fp32(tmp_path, monkeypatch):
    from collection import fast_text

    monkeypatch.setattr(fast_text, "MIN_COSINE_INT8", 1.01)  # no quantised model can reach it
    encoder = Encoder(str(settings.LOUPE_CLIP_MODEL))
    assert encoder.accelerate_text(tmp_path, int8=True) is True
    assert encoder.text_runtime == "onnxruntime"
    assert (
        np.min(
            np.sum(encoder.encode_texts(TEXTS) * Encoder(str(settings.LOUPE_CLIP_MODEL)).encode_texts(TEXTS), axis=1)
        )
        > 0.999
    )


ONE_TEXTS = [*TEXTS, "Café crème, naïve façade — 東京 🐶", "   spaced    out   ", "NOT a CAT!!!", "word " * 300]


@pytest.mark.parametrize(
    "load", [lambda: Encoder(str(settings.LOUPE_CLIP_MODEL)), lambda: SentenceEncoder(settings.LOUPE_TEXT_MODEL)]
)
def test_the_one_text_tokenizer_gives_what_transformers_gives(load):
    encoder = load()
    assert encoder._one_text is not None
    for text in ONE_TEXTS:
        expected = encoder._tokenize([text], "np")
        found = encoder._one_text(text)
        assert np.array_equal(found["input_ids"], expected["input_ids"]), text
        assert np.array_equal(found["attention_mask"], expected["attention_mask"]), text
    assert encoder._one_text("word " * 300)["input_ids"].shape[1] <= encoder.tokenizer.model_max_length
