"""Incremental detokenization with the real default tokenizer: never splits a character,
never takes text back, and the deltas add up to the full decode."""
import pytest

from trtllm_service.detokenize import IncrementalDetokenizer

SAMPLES = [
    "Hello, world! This is plain ASCII.",
    "Grüße aus Köln — naïve café, 東京タワー, emoji 🎉🚀 and 👩‍👩‍👧 families.",
    "mixed\nlines\twith  spaces   and ünïcödé",
    "数学: ∑∫√π ≈ 3.14159",
]


@pytest.mark.parametrize("text", SAMPLES)
@pytest.mark.parametrize("step", [1, 2, 3])
def test_deltas_concatenate_to_full_decode(tokenizer, text, step):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    detok = IncrementalDetokenizer(tokenizer)
    deltas = [detok.push(ids[i:i + step]) for i in range(0, len(ids), step)] + [detok.flush()]
    assert "".join(deltas) == tokenizer.decode(ids, skip_special_tokens=True)
    assert all("\ufffd" not in d for d in deltas), deltas


def test_multibyte_char_split_over_tokens_is_held_back(tokenizer):
    ids = tokenizer("🎉", add_special_tokens=False)["input_ids"]
    assert len(ids) > 1, "this emoji must span several byte-level tokens for the test to mean anything"
    detok = IncrementalDetokenizer(tokenizer)
    partial = [detok.push([i]) for i in ids[:-1]]
    assert partial == [""] * (len(ids) - 1)
    assert detok.push([ids[-1]]) == "🎉"


def test_special_tokens_skipped(tokenizer):
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids = tokenizer("hi there", add_special_tokens=False)["input_ids"] + [eos]
    detok = IncrementalDetokenizer(tokenizer)
    assert "".join(detok.push([i]) for i in ids) + detok.flush() == "hi there"


def test_flush_emits_unfinished_character(tokenizer):
    ids = tokenizer("🎉", add_special_tokens=False)["input_ids"]
    detok = IncrementalDetokenizer(tokenizer)
    assert detok.push(ids[:1]) == ""
    assert detok.flush() != ""
