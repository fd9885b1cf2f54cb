"""Each block is the Hugging Face architecture it names, exactly: same logits from copied weights.

``transformers`` is not a dependency of this project yet (the export that needs it comes next),
so these tests run where it is installed and are skipped elsewhere. The weight mapping below is
the one an exporter needs: fused q/k/v rows and SwiGLU's gate/up rows are split in order.
"""

import pytest
import torch

from sparklm.model.gpt import GPT, GPTConfig

transformers = pytest.importorskip("transformers")

SHAPE = {"vocab_size": 96, "context_len": 24, "n_layer": 2, "n_head": 4, "n_embd": 32}
MODERN = {"position": "rope", "norm": "rmsnorm", "mlp": "swiglu", "rope_theta": 500.0,
          "norm_eps": 1e-6}  # fmt: skip


def ours(**switches) -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(**SHAPE, **switches))
    with torch.no_grad():  # gains and biases away from 1 and 0, so a missed one shows
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.2 * torch.randn_like(p))
    return model.eval()


def llama_like(model: GPT, family: str):
    c = model.config
    common = dict(
        vocab_size=c.vocab_size, hidden_size=c.n_embd, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.n_layer, num_attention_heads=c.n_head, num_key_value_heads=c.n_head,
        head_dim=c.head_dim, max_position_embeddings=c.context_len, rms_norm_eps=c.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta},
        tie_word_embeddings=c.tie_embeddings, attention_bias=False,
    )  # fmt: skip
    if family == "qwen3":
        hf = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**common))
    else:
        hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**common, mlp_bias=False))
    C, I = c.n_embd, c.intermediate_size  # noqa: E741 - the papers' names
    weights = {"model.embed_tokens.weight": model.transformer.wte.weight,
               "model.norm.weight": model.transformer.ln_f.weight,
               "lm_head.weight": model.lm_head.weight}  # fmt: skip
    for i, block in enumerate(model.transformer.h):
        layer = f"model.layers.{i}."
        qkv, gate_up = block.attn.c_attn.weight, block.mlp.c_fc.weight
        weights |= {
            layer + "input_layernorm.weight": block.ln_1.weight,
            layer + "post_attention_layernorm.weight": block.ln_2.weight,
            layer + "self_attn.q_proj.weight": qkv[:C],
            layer + "self_attn.k_proj.weight": qkv[C : 2 * C],
            layer + "self_attn.v_proj.weight": qkv[2 * C :],
            layer + "self_attn.o_proj.weight": block.attn.c_proj.weight,
            layer + "mlp.gate_proj.weight": gate_up[:I],
            layer + "mlp.up_proj.weight": gate_up[I:],
            layer + "mlp.down_proj.weight": block.mlp.c_proj.weight,
        }
        if family == "qwen3":
            weights[layer + "self_attn.q_norm.weight"] = block.attn.q_norm.weight
            weights[layer + "self_attn.k_norm.weight"] = block.attn.k_norm.weight
    return hf, weights


def gpt2(model: GPT):
    c = model.config
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=c.vocab_size, n_positions=c.context_len, n_embd=c.n_embd, n_layer=c.n_layer,
        n_head=c.n_head, n_inner=c.intermediate_size, activation_function="gelu",
        layer_norm_epsilon=c.norm_eps, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        tie_word_embeddings=c.tie_embeddings,
    ))  # fmt: skip
    # GPT-2's Conv1D stores weights as [in, out] and always has biases: zeros when ours has none.
    weights = {}
    for name, tensor in model.state_dict().items():
        if name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
            tensor = tensor.T
        weights[name] = tensor
    for name, tensor in hf.state_dict().items():
        if name.endswith(".bias") and name not in weights:
            weights[name] = torch.zeros_like(tensor)
    return hf, weights


@pytest.mark.parametrize(
    ("family", "switches"),
    [("gpt2", {}), ("gpt2", {"bias": True, "tie_embeddings": False}), ("llama", MODERN),
     ("llama", {**MODERN, "tie_embeddings": False}), ("qwen3", {**MODERN, "qk_norm": True}),
     ("qwen3", {**MODERN, "qk_norm": True, "tie_embeddings": False})],
)  # fmt: skip
def test_logits_equal_the_hugging_face_model_with_the_same_weights(family, switches):
    model = ours(**switches)
    assert model.config.hf_architecture() == family
    hf, weights = gpt2(model) if family == "gpt2" else llama_like(model, family)
    missing, unexpected = hf.load_state_dict(
        {k: v.detach().clone() for k, v in weights.items()}, strict=False
    )
    assert not unexpected and not [m for m in missing if not m.endswith("attn.bias")], missing
    hf.eval()
    idx = torch.randint(0, SHAPE["vocab_size"], (2, SHAPE["context_len"]),
                        generator=torch.Generator().manual_seed(1))  # fmt: skip
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0], hf(idx).logits, atol=1e-5, rtol=1e-5)
