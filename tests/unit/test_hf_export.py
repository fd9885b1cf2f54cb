"""The hf/ export: a stock transformers class computes exactly what our model computes.

Oracles: ``transformers`` itself (``AutoModelForCausalLM``/``AutoTokenizer`` loading the
exported folder with no custom code), against our model and tokenizer.
"""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from helpers.jobs import load_job
from sparklm.data.tokenizer import count_pretokens, decode, special_ids, train_from_counts
from sparklm.model.decoding import Decoding, generate
from sparklm.model.gpt import GPT, GPTConfig
from sparklm.model.weights import model_bytes
from sparklm.registry import hf_export

HOSTILE = [
    "plain ASCII, with punctuation! And \"quotes\", it's n't .",
    "emoji 👩\u200d👩\u200d👧 and flags 🇺🇦 and skin tones 👍🏽",
    "日本語のテキストと中文文本",
    "combining: e\u0301 a\u0308 \u0915\u094d\u0937 and zero\u200bwidth",
    "right-to-left: \u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 \u202eoverride",
    "whitespace:  two  spaces,\u00a0nbsp, tab\t, trailing ",
    "symbols: ▁ Ġ Ċ \ufffd \U0001d54f <|pad|> and <|endoftext|> typed as text",
    "new\nlines\n\nand paragraphs\r\nCRLF",
    "   leading spaces",
]
SHAPE = {"context_len": 24, "n_layer": 2, "n_head": 4, "n_embd": 32}
MODERN = {"position": "rope", "norm": "rmsnorm", "mlp": "swiglu", "rope_theta": 500.0,
          "norm_eps": 1e-6}  # fmt: skip
# Each mapping, and the switches that change what is exported (biases, a separate head).
FAMILIES = {
    "gpt2": {},
    "gpt2-bias-untied": {"bias": True, "tie_embeddings": False},
    "llama": MODERN,
    "llama-untied": {**MODERN, "tie_embeddings": False},
    "qwen3": {**MODERN, "qk_norm": True},
    "qwen3-untied": {**MODERN, "qk_norm": True, "tie_embeddings": False},
}
HF_CLASS = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM"}


@pytest.fixture(scope="module")
def tokenizer():
    corpus = HOSTILE * 3 + ["The history of the world is long and the dog is brown ."] * 20
    return train_from_counts(count_pretokens(corpus), 300)


def random_model(vocab_size: int, seed: int = 0, **switches) -> GPT:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab_size, **SHAPE, **switches))
    with torch.no_grad():  # gains and biases away from 1 and 0, so a mapping that drops one shows
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.2 * torch.randn_like(p))
    return model.eval()


def exported(model: GPT, tokenizer, folder):
    files = hf_export.export(model.config.to_dict(), model_bytes(model), tokenizer.to_str())
    for name, data in files.items():
        (folder / name).write_bytes(data)
    hf = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=False).eval()
    return hf, AutoTokenizer.from_pretrained(folder, trust_remote_code=False)


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_equal_ours_on_random_and_real_inputs(family, tokenizer, tmp_path):
    model = random_model(tokenizer.get_vocab_size(), **FAMILIES[family])
    hf, _ = exported(model, tokenizer, tmp_path)
    assert type(hf).__name__ == HF_CLASS[family.split("-")[0]]
    random_ids = torch.randint(0, model.config.vocab_size, (3, SHAPE["context_len"]),
                               generator=torch.Generator().manual_seed(1))  # fmt: skip
    text = " ".join(HOSTILE)
    real_ids = torch.tensor([tokenizer.encode(text).ids[: SHAPE["context_len"]]])
    for inputs, idx in (("random", random_ids), ("real", real_ids)):
        with torch.no_grad():
            ours, theirs = model(idx)[0], hf(idx).logits
        diff = (ours - theirs).abs().max().item()
        print(f"{family} {inputs} inputs: max |logit diff| = {diff:.3e}")
        assert diff <= 1e-4


@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen3"])
def test_greedy_generate_equals_our_temperature_zero_decoding(family, tokenizer, tmp_path):
    model = random_model(tokenizer.get_vocab_size(), seed=3, **FAMILIES[family])
    hf, hf_tokenizer = exported(model, tokenizer, tmp_path)
    eod = special_ids(tokenizer)["eod"]
    for prompt in ("The history of", "日本語"):
        inputs = hf_tokenizer(prompt, return_tensors="pt")
        ours = [eod, *tokenizer.encode(prompt, add_special_tokens=False).ids]
        assert inputs["input_ids"][0].tolist() == ours  # the eod start, as our sampler adds it
        room = SHAPE["context_len"] - len(ours)
        expected = generate(model, ours, room, Decoding(temperature=0.0), stop_ids=(eod,))
        assert len(expected) >= 5  # a real continuation, not an immediate stop
        out = hf.generate(**inputs, do_sample=False, max_new_tokens=room)[0, len(ours) :].tolist()
        assert out[: len(expected)] == expected
        assert out[len(expected) :] in ([], [eod])  # HF keeps the eos token that stopped it


def test_the_tokenizer_round_trips_hostile_unicode_like_ours(tokenizer, tmp_path):
    _, hf_tokenizer = exported(random_model(tokenizer.get_vocab_size()), tokenizer, tmp_path)
    eod = special_ids(tokenizer)["eod"]
    assert hf_tokenizer.eos_token == hf_tokenizer.bos_token == "<|endoftext|>"
    assert hf_tokenizer.eos_token_id == eod and hf_tokenizer.pad_token == "<|pad|>"
    for text in HOSTILE:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        assert hf_tokenizer(text, add_special_tokens=False)["input_ids"] == ids, text
        assert hf_tokenizer(text)["input_ids"] == [eod, *ids], text
        assert hf_tokenizer.decode(ids) == decode(tokenizer, ids) == text
        if "<|" not in text:  # special tokens typed as text are special tokens in both
            assert hf_tokenizer.decode([eod, *ids], skip_special_tokens=True) == text


def test_a_block_no_stock_class_computes_is_published_without_hf(tokenizer, tmp_path):
    model = random_model(tokenizer.get_vocab_size(), **{**MODERN, "mlp": "gelu"})
    assert model.config.hf_architecture() is None  # RoPE + RMSNorm + GELU: no stock class
    contents = {"config.json": json.dumps(model.config.to_dict()).encode(),
                "model.safetensors": model_bytes(model),
                "tokenizer.json": tokenizer.to_str().encode()}  # fmt: skip
    with pytest.raises(hf_export.NotExportable, match="no stock transformers class"):
        hf_export.export(model.config.to_dict(), contents["model.safetensors"],
                         tokenizer.to_str())  # fmt: skip
    written, record = load_job("publish").export_hf(f"file://{tmp_path}", contents)
    assert written == [] and not (tmp_path / hf_export.FOLDER).exists()
    assert record["exported"] is False and "no stock transformers class" in record["reason"]
