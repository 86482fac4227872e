"""A fine-tuned model repacked as an F16 GGUF for fast CPU answering (OpenVINO GenAI reads GGUF directly).

The base model's GGUF supplies every metadata key (architecture, hyper-parameters, the tokenizer with its
vocabulary, merges and special token ids, the chat template); only the tensors are replaced, by the fine-tuned
weights in F16 (norms and other 1-D tensors stay F32, as llama.cpp writes them). HF's LLaMA layout differs from
GGUF's in the rotary halves of the query and key projections; transformers undoes llama.cpp's permutation when
it loads a GGUF, so :func:`export_f16` applies it again (``convert_hf_to_gguf.py``'s ``LlamaModel.permute``).
``tests/unit/test_train_gguf.py`` loads the result back and compares logits and greedy text with the HF model
(``../shared/NOTES.md``: max |delta| 0.002, same text).

Only the ``llama`` architecture is mapped (SmolLM2, LLaMA, LLaMA-2); anything else raises.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import InstagError

log = logging.getLogger(__name__)

_SKIP_KEYS = ("general.architecture", "general.file_type", "general.quantization_version")

_BLOCK = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def permute(w: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """llama.cpp's rotary permutation of a query/key projection (rows grouped per head, halves interleaved)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_name(gguf_name: str) -> str:
    """The HF state-dict key of a llama GGUF tensor name."""
    top = {
        "token_embd.weight": "model.embed_tokens.weight",
        "output_norm.weight": "model.norm.weight",
        "output.weight": "lm_head.weight",
    }
    if gguf_name in top:
        return top[gguf_name]
    parts = gguf_name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in _BLOCK:
        return f"model.layers.{parts[1]}.{_BLOCK[parts[2]]}.{parts[3]}"
    raise InstagError(f"no HF tensor for GGUF tensor {gguf_name!r}")


def _field_value(field):
    """A GGUF reader field's value: scalar, string, or list."""
    import gguf

    if hasattr(field, "contents"):
        return field.contents()
    vtype = field.types[0]
    if vtype == gguf.GGUFValueType.ARRAY:
        sub = field.types[-1]
        if sub == gguf.GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8") for i in field.data]
        return [field.parts[i].tolist()[0] for i in field.data]
    if vtype == gguf.GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    return field.parts[field.data[0]].tolist()[0]


def export_f16(model_dir: str | Path, base_gguf: str | Path, out: str | Path) -> dict:
    """Write ``out``: ``base_gguf``'s metadata and tokenizer with the weights of the HF model in ``model_dir``."""
    import gguf
    from safetensors.numpy import load_file

    reader = gguf.GGUFReader(str(base_gguf))
    arch = _field_value(reader.fields["general.architecture"])
    if arch != "llama":
        raise InstagError(f"GGUF export maps the llama architecture only; {base_gguf} is {arch!r}")
    n_head = int(_field_value(reader.fields["llama.attention.head_count"]))
    kv_field = reader.fields.get("llama.attention.head_count_kv")
    n_head_kv = int(_field_value(kv_field)) if kv_field is not None else n_head

    model_dir = Path(model_dir)
    state: dict[str, np.ndarray] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        state.update(load_file(str(f)))
    if not state:
        raise InstagError(f"no safetensors weights in {model_dir}")

    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in _SKIP_KEYS:
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, _field_value(field), vtype, sub_type=sub)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    written = 0
    for t in reader.tensors:
        key = hf_name(t.name)
        w = state.get(key)
        if w is None and key == "lm_head.weight":
            w = state.get("model.embed_tokens.weight")  # tied embeddings
        if w is None:
            raise InstagError(f"{model_dir}: no weight {key!r} for GGUF tensor {t.name!r}")
        w = np.asarray(w, dtype=np.float32)
        if t.name.endswith("attn_q.weight"):
            w = permute(w, n_head, n_head)
        elif t.name.endswith("attn_k.weight"):
            w = permute(w, n_head, n_head_kv)
        writer.add_tensor(t.name, w.astype(np.float16) if w.ndim > 1 else w)
        written += 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out)
    log.info("wrote %s: %d tensors (F16), metadata and tokenizer from %s", out, written, base_gguf)
    return {"path": str(out), "tensors": written, "base": str(base_gguf)}
