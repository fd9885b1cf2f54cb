"""Export a model to the Hugging Face ``transformers`` layout, with safetensors and JSON only.

A published version gets an ``hf/`` folder that ``AutoModelForCausalLM.from_pretrained``
and ``AutoTokenizer.from_pretrained`` load with no custom code. The model is mapped onto
the stock class that computes exactly what ours computes — no approximation:

- learned positions, LayerNorm, GELU MLP → ``GPT2LMHeadModel``. GPT-2's linear layers are
  ``Conv1D``: weights stored ``[in, out]``, i.e. transposed, and always with a bias (zeros
  where ours has none); the GELU is the exact (erf) one, ``activation_function="gelu"``,
  not GPT-2's default tanh approximation.
- RoPE (rotate-half), RMSNorm, SwiGLU, no biases → ``LlamaForCausalLM``; the same with
  QK-norm → ``Qwen3ForCausalLM``. Our fused q/k/v rows and SwiGLU gate/up rows are split,
  in order, into HF's separate projections.

A configuration no stock class represents is refused (``NotExportable``); publishing goes
on without ``hf/``. ``transformers`` itself is not imported: the pipeline does not need it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import torch
from safetensors.torch import save as save_tensors
from torch import Tensor

from sparklm.data.tokenizer import END_OF_DOCUMENT, PADDING
from sparklm.model.gpt import GPTConfig
from sparklm.model.weights import parse_safetensors

FOLDER = "hf"


class NotExportable(Exception):
    """The model has no exact stock ``transformers`` counterpart."""


def export(config: dict[str, Any], weights: bytes, tokenizer_json: str) -> dict[str, bytes]:
    """The files of ``hf/`` (name → bytes) for a model given as its published artifacts."""
    cfg = GPTConfig.from_dict(config)
    family = architecture(cfg)
    mapping = MAPPINGS.get(family) if family else None
    if mapping is None:
        raise NotExportable(
            f"no stock transformers class computes this block exactly ({config}); the version "
            "is published without hf/ — load it with sparklm.model.weights.load_model"
        )
    tokenizer = json.loads(tokenizer_json)
    ids = special_token_ids(tokenizer)
    hf_config, tensors = mapping(cfg, parse_safetensors(weights, "model weights"))
    hf_config.update(bos_token_id=ids[END_OF_DOCUMENT], eos_token_id=ids[END_OF_DOCUMENT],
                     pad_token_id=ids[PADDING], torch_dtype="float32")  # fmt: skip
    return {
        "config.json": as_json(hf_config),
        "model.safetensors": save_tensors(
            {k: v.contiguous() for k, v in tensors.items()}, metadata={"format": "pt"}
        ),
        "generation_config.json": as_json(
            {
                "bos_token_id": ids[END_OF_DOCUMENT],
                "eos_token_id": ids[END_OF_DOCUMENT],
                "pad_token_id": ids[PADDING],
            }
        ),  # fmt: skip
        **tokenizer_files(tokenizer, ids, cfg.context_len),
    }


def architecture(cfg: GPTConfig) -> str | None:
    """The ``transformers`` family this model is exactly (``GPTConfig`` decides), or None."""
    return cfg.hf_architecture()


def gpt2(cfg: GPTConfig, state: dict[str, Tensor]) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``GPT2LMHeadModel``: same parameter names, Conv1D weights transposed, zero biases
    where ours has none."""
    tensors: dict[str, Tensor] = {
        name: state[name]
        for name in ("transformer.wte.weight", "transformer.wpe.weight",
                     "transformer.ln_f.weight", "transformer.ln_f.bias")
    }  # fmt: skip
    for i in range(cfg.n_layer):
        block = f"transformer.h.{i}."
        for norm in ("ln_1", "ln_2"):
            for part in ("weight", "bias"):
                tensors[f"{block}{norm}.{part}"] = state[f"{block}{norm}.{part}"]
        for linear in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            weight = state[f"{block}{linear}.weight"]  # [out, in] in torch's nn.Linear
            tensors[f"{block}{linear}.weight"] = weight.T
            zeros = torch.zeros(weight.shape[0], dtype=weight.dtype)
            tensors[f"{block}{linear}.bias"] = state.get(f"{block}{linear}.bias", zeros)
    tensors |= untied_head(cfg, state)
    config = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": cfg.vocab_size, "n_positions": cfg.context_len, "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_inner": cfg.intermediate_size,
        "activation_function": "gelu", "layer_norm_epsilon": cfg.norm_eps,
        "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout, "attn_pdrop": cfg.dropout,
        "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False, "tie_word_embeddings": cfg.tie_embeddings,
        "initializer_range": 0.02, "use_cache": True,
    }  # fmt: skip
    return config, tensors


def llama(cfg: GPTConfig, state: dict[str, Tensor]) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``LlamaForCausalLM``: q/k/v and gate/up split out of our fused matrices, in order."""
    return llama_config(cfg, "LlamaForCausalLM", "llama", mlp_bias=False), llama_tensors(cfg, state)


def qwen3(cfg: GPTConfig, state: dict[str, Tensor]) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``Qwen3ForCausalLM``: Llama's layout plus per-head q/k RMSNorm gains, no sliding window."""
    config = llama_config(cfg, "Qwen3ForCausalLM", "qwen3", use_sliding_window=False,
                          sliding_window=None, max_window_layers=cfg.n_layer)  # fmt: skip
    tensors = llama_tensors(cfg, state)
    for i in range(cfg.n_layer):
        for norm in ("q_norm", "k_norm"):
            ours = state[f"transformer.h.{i}.attn.{norm}.weight"]
            tensors[f"model.layers.{i}.self_attn.{norm}.weight"] = ours
    return config, tensors


def llama_config(cfg: GPTConfig, architecture: str, model_type: str, **extra: Any) -> dict:
    """The config keys Llama and Qwen3 share. ``rope_theta`` is written both the transformers
    4 way (top level) and the 5 way (``rope_parameters``) so either version reads it."""
    return {
        "architectures": [architecture], "model_type": model_type,
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.n_embd,
        "intermediate_size": cfg.intermediate_size, "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head, "num_key_value_heads": cfg.n_head,
        "head_dim": cfg.head_dim, "max_position_embeddings": cfg.context_len,
        "hidden_act": "silu", "rms_norm_eps": cfg.norm_eps, "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "attention_bias": False, "attention_dropout": cfg.dropout,
        "tie_word_embeddings": cfg.tie_embeddings, "initializer_range": 0.02,
        "use_cache": True, **extra,
    }  # fmt: skip


def llama_tensors(cfg: GPTConfig, state: dict[str, Tensor]) -> dict[str, Tensor]:
    C, I = cfg.n_embd, cfg.intermediate_size  # noqa: E741 - the papers' names
    tensors = {"model.embed_tokens.weight": state["transformer.wte.weight"],
               "model.norm.weight": state["transformer.ln_f.weight"]}  # fmt: skip
    for i in range(cfg.n_layer):
        ours, theirs = f"transformer.h.{i}.", f"model.layers.{i}."
        qkv, gate_up = state[ours + "attn.c_attn.weight"], state[ours + "mlp.c_fc.weight"]
        tensors |= {
            theirs + "input_layernorm.weight": state[ours + "ln_1.weight"],
            theirs + "post_attention_layernorm.weight": state[ours + "ln_2.weight"],
            theirs + "self_attn.q_proj.weight": qkv[:C],
            theirs + "self_attn.k_proj.weight": qkv[C : 2 * C],
            theirs + "self_attn.v_proj.weight": qkv[2 * C :],
            theirs + "self_attn.o_proj.weight": state[ours + "attn.c_proj.weight"],
            theirs + "mlp.gate_proj.weight": gate_up[:I],
            theirs + "mlp.up_proj.weight": gate_up[I:],
            theirs + "mlp.down_proj.weight": state[ours + "mlp.c_proj.weight"],
        }
    return tensors | untied_head(cfg, state)


def untied_head(cfg: GPTConfig, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A separate output head is exported; a tied one is not (transformers re-ties it)."""
    return {} if cfg.tie_embeddings else {"lm_head.weight": state["lm_head.weight"]}


Mapping = Callable[[GPTConfig, dict[str, Tensor]], tuple[dict[str, Any], dict[str, Tensor]]]
MAPPINGS: dict[str, Mapping] = {"gpt2": gpt2, "llama": llama, "qwen3": qwen3}


def special_token_ids(tokenizer: dict[str, Any]) -> dict[str, int]:
    ids = {t["content"]: t["id"] for t in tokenizer.get("added_tokens", [])}
    missing = {END_OF_DOCUMENT, PADDING} - set(ids)
    if missing:
        raise NotExportable(f"the tokenizer lacks the special tokens {sorted(missing)}")
    return ids


def tokenizer_files(tokenizer: dict[str, Any], ids: dict[str, int],
                    context_len: int) -> dict[str, bytes]:  # fmt: skip
    """``tokenizer.json`` (ours, plus a post-processor that starts every text with the
    end-of-document token, as the model saw documents start in training and as the
    pipeline's sampler starts prompts), ``tokenizer_config.json`` and the special tokens.

    The end-of-document token is both ``bos_token`` and ``eos_token``: generation stops
    on it. ``clean_up_tokenization_spaces`` is off, or ``decode`` would rewrite " ." and
    " n't" and the text would no longer round-trip.
    """
    eod = END_OF_DOCUMENT
    tokenizer = {**tokenizer, "post_processor": {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": eod, "type_id": 0}},
                   {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": eod, "type_id": 0}},
                 {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": eod, "type_id": 0}},
                 {"Sequence": {"id": "B", "type_id": 0}}],
        "special_tokens": {eod: {"id": eod, "ids": [ids[eod]], "tokens": [eod]}},
    }}  # fmt: skip
    special = {"bos_token": eod, "eos_token": eod, "pad_token": PADDING}
    return {
        "tokenizer.json": as_json(tokenizer),
        "tokenizer_config.json": as_json(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                **special,
                "model_max_length": context_len,
                "clean_up_tokenization_spaces": False,
                "add_prefix_space": False,
                # No token_type_ids: GPT-2 would add them to the input as token embeddings.
                "model_input_names": ["input_ids", "attention_mask"],
            }
        ),  # fmt: skip
        "special_tokens_map.json": as_json(special),
    }


def as_json(value: Any) -> bytes:
    return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode()
