"""xgrammar row processor: random logits, constrained greedy decoding, valid output."""
import json

import jsonschema
import numpy as np
import pytest

from trtllm_service.engine.base import EngineRejected, GuidedDecoding
from trtllm_service.engine.cpu_guided import GuidedCompiler

SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                           "days": {"type": "integer", "minimum": 1, "maximum": 9}},
          "required": ["city", "days"], "additionalProperties": False}


@pytest.fixture(scope="module")
def compiler(tokenizer):
    return GuidedCompiler(tokenizer, len(tokenizer))


def decode_with(compiler, tokenizer, guided, seed, limit=80):
    gen = np.random.default_rng(seed)
    processor = compiler.processor(guided)
    generated: list[int] = []
    for _ in range(limit):
        scores = processor(generated, gen.standard_normal(compiler.vocab_size).astype(np.float32))
        token = int(np.argmax(scores))
        if token == tokenizer.eos_token_id or token in (tokenizer.convert_tokens_to_ids("<|im_end|>"),):
            break
        generated.append(token)
    return tokenizer.decode(generated)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_logits_still_give_schema_valid_json(compiler, tokenizer, seed):
    text = decode_with(compiler, tokenizer, GuidedDecoding(json_schema=json.dumps(SCHEMA)), seed)
    jsonschema.validate(json.loads(text), SCHEMA)


def test_regex_constraint(compiler, tokenizer):
    text = decode_with(compiler, tokenizer, GuidedDecoding(regex=r"(yes|no)"), 3)
    assert text in ("yes", "no")


def test_json_object_must_be_an_object(compiler, tokenizer):
    # Random logits wander through long strings, so check the start; completeness is the
    # schema test's job above.
    text = decode_with(compiler, tokenizer, GuidedDecoding(json_object=True), 4, limit=40)
    assert text.lstrip().startswith("{")


def test_bad_grammar_is_rejected(compiler):
    with pytest.raises(EngineRejected, match="grammar"):
        compiler.processor(GuidedDecoding(grammar="root ::= ("))
