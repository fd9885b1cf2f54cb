import json
import math

import pytest
import torch
import torch.nn.functional as F

from sparklm.model.gpt import GPT, MLPS, CausalSelfAttention, GPTConfig, Rotary

TINY = GPTConfig(vocab_size=64, context_len=16, n_layer=2, n_head=2, n_embd=32)
# The blocks a config can build: GPT-2's (the default), the Llama and Qwen3 sets, and GPT-2's
# with the remaining switches flipped (linear biases, a separate head).
MODERN = {"position": "rope", "norm": "rmsnorm", "mlp": "swiglu"}
BLOCKS = {
    "gpt2": {},
    "llama": MODERN,
    "qwen3": {**MODERN, "qk_norm": True},
    "gpt2-bias-untied": {"bias": True, "tie_embeddings": False},
    "qwen3-untied": {**MODERN, "qk_norm": True, "tie_embeddings": False},
}
every_block = pytest.mark.parametrize("block", list(BLOCKS))


def tiny_model(block: str = "gpt2", **overrides) -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**TINY.to_dict(), "intermediate_size": None, **BLOCKS[block],
                             **overrides}))  # fmt: skip
    # Gains and biases start at 1 and 0, where a wrong or missing one changes nothing: give them
    # values, so the comparisons below see every parameter.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"vocab_size": 0}, "vocab_size"),
        ({"context_len": -1}, "context_len"),
        ({"n_layer": 0}, "n_layer"),
        ({"n_head": 0}, "n_head"),
        ({"n_embd": 1.5}, "n_embd"),
        ({"n_embd": 130, "n_head": 4}, "divisible by n_head"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"position": "alibi"}, "position"),
        ({"norm": "batchnorm"}, "norm"),
        ({"mlp": "relu"}, "mlp"),
        ({"intermediate_size": 0}, "intermediate_size"),
        ({"position": "rope", "n_embd": 6, "n_head": 2}, "head size"),
        ({"norm_eps": 0.0}, "norm_eps"),
        ({"rope_theta": 0.0}, "rope_theta"),
        ({"n_layer": True}, "n_layer"),
        ({"vocab_size": 64.0}, "vocab_size"),
    ],
)
def test_config_rejects_invalid_values(overrides, field):
    with pytest.raises(ValueError, match=field):
        GPTConfig(**{"vocab_size": 10, **overrides})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"n_layer": True}, "GPTConfig.n_layer must be a positive integer, got True"),
        ({"n_embd": 130, "n_head": 4},
         "n_embd (130) must be divisible by n_head (4); choose n_embd as a multiple of n_head, "
         "e.g. 128"),
        ({"position": "rope", "n_embd": 6, "n_head": 2},
         "position 'rope' rotates pairs of dimensions: the head size n_embd/n_head = 3 must be "
         "even; change n_embd or n_head"),
        ({"rope_theta": 0.0}, "GPTConfig.rope_theta and GPTConfig.norm_eps must be positive"),
    ],
)  # fmt: skip
def test_a_config_error_names_the_value_and_what_to_choose(overrides, message):
    """A train run's Params become a GPTConfig on the driver: its error is the user's only
    hint, so it must name the value and a valid choice."""
    with pytest.raises(ValueError) as refused:
        GPTConfig(**{"vocab_size": 10, **overrides})
    assert str(refused.value) == message


def test_config_json_round_trip():
    config = GPTConfig(vocab_size=4096, context_len=64, n_layer=3, n_head=2, n_embd=48, dropout=0.1)
    assert GPTConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_a_config_written_before_the_block_switches_builds_the_same_gpt2_model():
    """Registries hold config.json files with only these keys: they must load unchanged."""
    old = {"vocab_size": 64, "context_len": 16, "n_layer": 1, "n_head": 2, "n_embd": 32,
           "dropout": 0.1}  # fmt: skip
    config = GPTConfig.from_dict(old)
    assert config.hf_architecture() == "gpt2" and config.intermediate_size == 4 * 32
    # Exactly the tensors that model.safetensors files written by that code hold.
    assert list(GPT(config).state_dict()) == [
        "transformer.wte.weight", "transformer.wpe.weight",
        "transformer.h.0.ln_1.weight", "transformer.h.0.ln_1.bias",
        "transformer.h.0.attn.c_attn.weight", "transformer.h.0.attn.c_proj.weight",
        "transformer.h.0.ln_2.weight", "transformer.h.0.ln_2.bias",
        "transformer.h.0.mlp.c_fc.weight", "transformer.h.0.mlp.c_proj.weight",
        "transformer.ln_f.weight", "transformer.ln_f.bias", "lm_head.weight",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("block", "family"),
    [("gpt2", "gpt2"), ("llama", "llama"), ("qwen3", "qwen3"), ("gpt2-bias-untied", "gpt2"),
     ("qwen3-untied", "qwen3")],
)  # fmt: skip
def test_each_block_names_its_hugging_face_family(block, family):
    assert tiny_model(block).config.hf_architecture() == family


def test_mixed_blocks_have_no_hugging_face_family():
    assert tiny_model("gpt2", position="rope").config.hf_architecture() is None
    assert tiny_model("llama", bias=True).config.hf_architecture() is None


@pytest.mark.parametrize(
    ("block", "line"),
    [
        ("gpt2", "learned positions, LayerNorm, GELU MLP (128), no linear biases, "
                 "tied embedding/head (gpt2 block)"),
        ("llama", "rotary positions, RMSNorm, SwiGLU MLP (96), no linear biases, "
                  "tied embedding/head (llama block)"),
        ("qwen3-untied", "rotary positions, RMSNorm, SwiGLU MLP (96), QK-norm, no linear biases, "
                         "separate head (qwen3 block)"),
        ("gpt2-bias-untied", "learned positions, LayerNorm, GELU MLP (128), linear biases, "
                             "separate head (gpt2 block)"),
    ],
)  # fmt: skip
def test_the_model_card_names_every_part_of_the_block(block, line):
    """The model card's and the train log's one line on the architecture: a reader must be able
    to rebuild the block from it."""
    assert tiny_model(block).config.describe() == "Pre-norm blocks, " + line


def test_a_block_without_a_hugging_face_family_is_described_without_one():
    config = tiny_model("gpt2", position="rope", qk_norm=True).config
    assert config.describe() == ("Pre-norm blocks, rotary positions, LayerNorm, GELU MLP (128), "
                                 "QK-norm, no linear biases, tied embedding/head")  # fmt: skip


@pytest.mark.parametrize("block", ["llama", "qwen3"])
def test_llama_and_qwen3_blocks_have_no_biases_and_no_position_table(block):
    names = list(tiny_model(block).state_dict())
    assert not [n for n in names if n.endswith(".bias") or "wpe" in n], names
    assert tiny_model(block).config.intermediate_size == 96  # 8/3 · 32, rounded up to 32


def test_config_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match="n_heads"):
        GPTConfig.from_dict({"vocab_size": 10, "n_heads": 4})


@every_block
def test_output_shapes_and_initial_loss(block):
    model = tiny_model(block)
    idx = torch.randint(0, TINY.vocab_size, (3, TINY.context_len))
    targets = torch.randint(0, TINY.vocab_size, (3, TINY.context_len))
    logits, loss = model(idx, targets=targets)
    assert logits.shape == (3, TINY.context_len, TINY.vocab_size)
    # At init the prediction is close to uniform, so the loss is close to ln(V). (Targets are
    # not the inputs: a tied head starts out slightly favouring the current token.)
    assert abs(loss.item() - math.log(TINY.vocab_size)) < 0.5
    assert model(idx)[1] is None


@every_block
def test_last_only_logits(block):
    model = tiny_model(block)
    idx = torch.randint(0, TINY.vocab_size, (2, 9))
    torch.testing.assert_close(model(idx, last_only=True)[0], model(idx)[0][:, -1:])
    with pytest.raises(ValueError) as refused:
        model(idx, targets=idx, last_only=True)
    assert str(refused.value) == "last_only=True cannot compute a loss; pass targets=None"


def test_sequence_longer_than_context_raises():
    model = tiny_model()
    with pytest.raises(ValueError) as refused:
        model(torch.zeros(1, TINY.context_len + 1, dtype=torch.long))
    assert str(refused.value) == ("17 tokens exceed context_len=16; feed at most context_len "
                                  "tokens (truncate from the left)")  # fmt: skip


def test_a_cache_made_for_another_batch_size_is_refused_naming_both():
    model = tiny_model()
    cache = model.new_cache(batch_size=1)
    with pytest.raises(ValueError) as refused:
        model(torch.zeros(2, 3, dtype=torch.long), cache=cache)
    assert str(refused.value) == "idx has batch size 2, the cache was made for 1"


def test_a_model_with_dropout_is_deterministic_in_eval_mode():
    """Evaluation and generation call the model in eval mode: no dropout may remain."""
    model = tiny_model("qwen3", dropout=0.5)
    idx = torch.randint(0, TINY.vocab_size, (2, 9))
    torch.testing.assert_close(model(idx)[0], model(idx)[0], atol=0, rtol=0)


def test_attention_dropout_drops_attention_weights_not_only_the_residual():
    """With residual dropout alone, every output a train step keeps would be the eval output
    scaled by 1/(1 - p); dropping attention weights changes the kept outputs too."""
    torch.manual_seed(0)
    attention = CausalSelfAttention(GPTConfig(**{**TINY.to_dict(), "dropout": 0.5}))
    x = torch.randn(2, 9, TINY.n_embd)
    expected = attention.eval()(x, None, 0)
    kept = attention.train()(x, None, 0)
    mask = kept != 0
    assert mask.any()
    assert not torch.allclose(kept[mask], 2 * expected[mask])


@every_block
def test_attention_is_causal(block):
    model = tiny_model(block)
    idx = torch.randint(0, TINY.vocab_size, (1, 10))
    changed = idx.clone()
    changed[0, -1] = (idx[0, -1] + 1) % TINY.vocab_size
    before, after = model(idx)[0], model(changed)[0]
    torch.testing.assert_close(before[:, :-1], after[:, :-1])
    assert not torch.allclose(before[:, -1], after[:, -1])


def test_weight_tying():
    model = tiny_model()
    assert model.lm_head.weight is model.transformer.wte.weight
    names = [name for name, _ in model.named_parameters()]
    assert len(names) == len(set(names)) == len(list(model.parameters()))
    untied = tiny_model("qwen3-untied")
    assert untied.lm_head.weight is not untied.transformer.wte.weight


@pytest.mark.parametrize(
    ("block", "lookup_only"),
    [("gpt2", ["transformer.wpe.weight"]), ("qwen3", []),
     ("gpt2-bias-untied", ["transformer.wpe.weight", "transformer.wte.weight"]),
     ("qwen3-untied", ["transformer.wte.weight"])],
)  # fmt: skip
def test_param_counts_and_flops(block, lookup_only):
    """FLOPs count the block that is built: 6 per matmul parameter (every matrix but the pure
    lookup tables, SwiGLU's three included) plus attention over the window."""
    model = tiny_model(block)
    total = sum(p.numel() for p in model.parameters())
    lookups = sum(dict(model.named_parameters())[n].numel() for n in lookup_only)
    assert model.num_params(non_embedding=False) == total
    assert model.num_params() == total - lookups
    expected = 6 * (total - lookups) + 12 * TINY.n_layer * TINY.n_embd * TINY.context_len
    assert model.flops_per_token() == expected


def test_swiglu_params_match_gelu_at_the_default_intermediate_size():
    gelu, swiglu = (GPT(GPTConfig(vocab_size=4096, mlp=m)).transformer.h[0].mlp for m in MLPS)
    n_gelu, n_swiglu = (sum(p.numel() for p in mlp.parameters()) for mlp in (gelu, swiglu))
    assert abs(n_swiglu / n_gelu - 1) < 0.05  # the comparison between blocks stays fair


def test_rope_rotates_each_pair_by_position_times_its_frequency():
    """Oracle: dimensions i and i + d/2 are the real and imaginary parts of a complex number
    multiplied by exp(1j · position · theta^(-2i/d)) — the rotate-half layout of HF Llama."""
    config = GPTConfig(vocab_size=8, context_len=12, n_head=2, n_embd=16, position="rope",
                       rope_theta=500.0)  # fmt: skip
    x = torch.randn(1, 2, 5, 8, dtype=torch.float64)
    rotated = Rotary(config).double()(x, start=3)  # tables made in float32, as in HF
    z = torch.complex(x[..., :4], x[..., 4:])
    angles = torch.arange(3, 8, dtype=torch.float64)[:, None] * 500.0 ** (
        -torch.arange(0, 8, 2, dtype=torch.float64) / 8
    )
    expected = z * torch.polar(torch.ones_like(angles), angles)
    torch.testing.assert_close(rotated, torch.cat((expected.real, expected.imag), -1),
                               atol=1e-6, rtol=1e-6)  # fmt: skip


def test_rope_attention_scores_depend_only_on_the_distance():
    config = GPTConfig(vocab_size=8, context_len=32, n_head=1, n_embd=16, position="rope")
    rotary = Rotary(config)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)
    scores = [(rotary(q, start=m) * rotary(k, start=m - 3)).sum() for m in (3, 10, 31)]
    torch.testing.assert_close(scores[0], scores[1])
    torch.testing.assert_close(scores[0], scores[2])
    assert not torch.allclose((rotary(q, 10) * rotary(k, 9)).sum(), scores[0])


def test_swiglu_is_down_of_silu_gate_times_up():
    mlp = tiny_model("llama").transformer.h[0].mlp
    x = torch.randn(2, 3, TINY.n_embd)
    gate, up = mlp.c_fc.weight[:96], mlp.c_fc.weight[96:]  # gate rows first, then up rows
    expected = F.silu(x @ gate.T) * (x @ up.T) @ mlp.c_proj.weight.T
    torch.testing.assert_close(mlp(x), expected)


def test_qk_norm_makes_attention_blind_to_the_scale_of_queries_and_keys():
    model = tiny_model("qwen3")
    idx = torch.randint(0, TINY.vocab_size, (1, 10))
    before = model(idx)[0]
    with torch.no_grad():
        for block in model.transformer.h:
            block.attn.c_attn.weight[: 2 * TINY.n_embd] *= 7.0  # q and k rows, not v
    torch.testing.assert_close(model(idx)[0], before, atol=1e-4, rtol=1e-4)
    without = tiny_model("llama")
    plain = without(idx)[0]
    with torch.no_grad():
        for block in without.transformer.h:
            block.attn.c_attn.weight[: 2 * TINY.n_embd] *= 7.0
    assert not torch.allclose(without(idx)[0], plain, atol=1e-3)


@every_block
def test_hidden_matrices_are_the_blocks_2d_weights_and_the_groups_cover_the_rest(block):
    model = tiny_model(block)
    hidden = model.hidden_matrices()
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in hidden} == {
        n for n, p in model.named_parameters() if n.startswith("transformer.h.") and p.dim() == 2
    }
    groups = model.optimizer_groups(0.1, exclude=hidden)
    rest = [id(p) for g in groups for p in g["params"]]
    assert sorted(rest + [id(p) for p in hidden]) == sorted(id(p) for p in model.parameters())
    assert id(model.lm_head.weight) in rest and id(model.transformer.wte.weight) in rest


def test_residual_projections_are_scaled_at_init():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, n_layer=8, n_embd=128))
    expected = 0.02 / math.sqrt(2 * 8)
    std = model.transformer.h[0].mlp.c_proj.weight.std().item()
    assert std == pytest.approx(expected, rel=0.1)
    assert model.transformer.h[0].mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.1)


def test_optimizer_groups_cover_every_parameter_once():
    model = tiny_model()
    decay, no_decay = model.optimizer_groups(weight_decay=0.1)
    grouped = [id(p) for p in decay["params"] + no_decay["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())
    assert len(grouped) == len(set(grouped))
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"])
    assert all(p.dim() == 1 for p in no_decay["params"])
    torch.optim.AdamW(model.optimizer_groups(0.1), lr=1e-3)  # accepted as-is


@every_block
def test_kv_cache_matches_full_forward_token_by_token(block):
    model = tiny_model(block)
    idx = torch.randint(0, TINY.vocab_size, (2, TINY.context_len))
    full = model(idx)[0]
    cache = model.new_cache(batch_size=2)
    with torch.no_grad():
        prefill = model(idx[:, :5], cache=cache)[0]
        torch.testing.assert_close(prefill, full[:, :5], atol=1e-5, rtol=0)
        for t in range(5, TINY.context_len):
            step = model(idx[:, t : t + 1], cache=cache)[0]
            torch.testing.assert_close(step[:, -1], full[:, t], atol=1e-5, rtol=0)
    assert cache.length == TINY.context_len


@every_block
@pytest.mark.parametrize(("prefix", "chunk"), [(4, 5), (1, 2), (1, 5), (4, 2)])
def test_kv_cache_multi_token_chunk_after_cached_prefix(block, prefix, chunk):
    """A chunk after a cached prefix (re-prefilling after the window slides) must stay causal
    within itself, however short the prefix and the chunk."""
    model = tiny_model(block)
    idx = torch.randint(0, TINY.vocab_size, (1, TINY.context_len))
    full = model(idx)[0]
    cache = model.new_cache(batch_size=1)
    end = prefix + chunk
    with torch.no_grad():
        model(idx[:, :prefix], cache=cache)
        logits = model(idx[:, prefix:end], cache=cache)[0]
        torch.testing.assert_close(logits, full[:, prefix:end], atol=1e-5, rtol=0)
        step = model(idx[:, end : end + 1], cache=cache)[0]
        torch.testing.assert_close(step[:, -1], full[:, end], atol=1e-5, rtol=0)


@every_block
def test_the_model_and_its_cache_stay_on_the_device_of_its_weights(block):
    """Nothing is made on the default device: a model moved to an accelerator runs there
    (the meta device stands in for one; a CPU tensor mixed in fails)."""
    model = tiny_model(block).to("meta")
    idx = torch.zeros(1, 9, dtype=torch.long, device="meta")
    assert model(idx)[0].device.type == "meta"
    cache = model.new_cache(batch_size=1)
    model(idx[:, :3], cache=cache)
    assert model(idx[:, 3:7], cache=cache)[0].device.type == "meta"
    assert {t.device.type for t in cache.keys + cache.values} == {"meta"}


@every_block
def test_the_forward_pass_ignores_the_default_device(block):
    """A model on a device other than the process's default one (a CUDA model in a process
    whose default stays CPU) makes its positions and masks on its own device: here the default
    is set to meta, and a CPU model still computes its CPU logits, with and without a cache."""
    model = tiny_model(block)
    idx = torch.randint(0, TINY.vocab_size, (1, 9))
    expected = model(idx)[0]
    cache = model.new_cache(batch_size=1)
    with torch.device("meta"), torch.no_grad():
        torch.testing.assert_close(model(idx)[0], expected)
        model(idx[:, :4], cache=cache)
        torch.testing.assert_close(model(idx[:, 4:], cache=cache)[0], expected[:, 4:],
                                   atol=1e-5, rtol=0)  # fmt: skip


@every_block
def test_a_float64_model_decodes_through_its_cache_in_float64(block):
    """The cache holds keys and values in the weights' dtype: a float64 (or bfloat16) model
    neither loses precision in it nor mixes dtypes in attention."""
    model = tiny_model(block).double()
    idx = torch.randint(0, TINY.vocab_size, (1, 9))
    full = model(idx)[0]
    cache = model.new_cache(batch_size=1)
    with torch.no_grad():
        model(idx[:, :4], cache=cache)
        steps = [model(idx[:, i : i + 1], cache=cache)[0][:, -1] for i in range(4, 9)]
    assert {t.dtype for t in cache.keys + cache.values} == {torch.float64}
    torch.testing.assert_close(torch.stack(steps, 1), full[:, 4:9], atol=1e-12, rtol=0)


@every_block
def test_every_norm_uses_the_configs_epsilon(block):
    """norm_eps is exported as Hugging Face's layer_norm_epsilon / rms_norm_eps: every norm,
    QK-norm included, must compute with it."""
    model = tiny_model(block, norm_eps=0.25)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm | torch.nn.RMSNorm)]
    assert len(norms) >= 2 * TINY.n_layer + 1
    assert {m.eps for m in norms} == {0.25}


def test_kv_cache_overflow_raises():
    model = tiny_model()
    cache = model.new_cache(batch_size=1)
    model(torch.zeros(1, TINY.context_len - 1, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError) as refused:
        model(torch.zeros(1, 2, dtype=torch.long), cache=cache)
    assert str(refused.value) == ("15 cached + 2 new tokens exceed context_len=16; feed at most "
                                  "context_len tokens (truncate from the left)")  # fmt: skip


@every_block
def test_gradients_reach_every_parameter(block):
    model = tiny_model(block).train()
    idx = torch.randint(0, TINY.vocab_size, (2, 8))
    model(idx, targets=idx)[1].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_tiny_model_overfits_a_recall_task():
    # Each short sequence is [a, 0, 0, 0, 0, 0, 0, a]: the last token sits behind identical
    # filler, so only attention can carry it forward. Training on that position alone keeps the
    # signal strong; with the easy filler positions in the loss a model this small tends to park
    # on a plateau. A stuck loss of ln(8) means gradients do not flow through attention.
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=16, context_len=8, n_layer=1, n_head=2, n_embd=32)).train()
    seq = torch.zeros(8, 8, dtype=torch.long)
    seq[:, 0] = seq[:, -1] = torch.arange(1, 9)
    optimizer = torch.optim.AdamW(model.optimizer_groups(0.0), lr=1e-2)
    for _ in range(200):
        logits, _ = model(seq[:, :-1])
        loss = F.cross_entropy(logits[:, -1], seq[:, -1])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5
