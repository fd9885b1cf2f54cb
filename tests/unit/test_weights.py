"""Artifacts load from safetensors and JSON only: pickles are refused, whatever their name."""

import io
import pickle

import pytest
import torch

from sparklm.model import GPT, GPTConfig
from sparklm.weights import (
    Checkpoint,
    UnsafeArtifactError,
    load_latest_checkpoint,
    load_model,
    model_bytes,
    parse_safetensors,
    save_checkpoint,
)

CONFIG = GPTConfig(vocab_size=50, context_len=8, n_layer=1, n_head=2, n_embd=16)


def test_round_trip_keeps_every_weight_and_the_tying():
    torch.manual_seed(0)
    model = GPT(CONFIG)
    loaded = load_model(model_bytes(model), CONFIG.to_dict())
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(),
                                 strict=True):  # fmt: skip
        assert torch.equal(a, b), name
    assert loaded.lm_head.weight is loaded.transformer.wte.weight


def test_round_trip_of_a_qwen3_block_with_a_separate_head():
    config = GPTConfig(vocab_size=50, context_len=8, n_layer=1, n_head=2, n_embd=16,
                       position="rope", norm="rmsnorm", mlp="swiglu", qk_norm=True,
                       tie_embeddings=False)  # fmt: skip
    torch.manual_seed(0)
    model = GPT(config)
    loaded = load_model(model_bytes(model), config.to_dict())
    assert loaded.config == config
    assert loaded.lm_head.weight is not loaded.transformer.wte.weight
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert not [n for n in model.state_dict() if "rotary" in n]  # derived from the config


class Exploit:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize(
    "payload",
    [pickle.dumps(Exploit(), protocol=2), pickle.dumps(Exploit(), protocol=5), "torch.save"],
)
def test_pickle_bearing_files_are_refused(payload, capsys):
    if payload == "torch.save":
        buffer = io.BytesIO()
        torch.save({"w": torch.zeros(2), "x": Exploit()}, buffer)
        payload = buffer.getvalue()
    with pytest.raises(UnsafeArtifactError, match="only safetensors are loaded"):
        load_model(payload, CONFIG.to_dict())
    assert "pwned" not in capsys.readouterr().out


def test_garbage_is_refused_with_a_clear_error():
    with pytest.raises(UnsafeArtifactError, match="not a valid safetensors file"):
        parse_safetensors(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}", "weights")


def test_checkpoint_keeps_every_optimizer_state_vector_and_the_outer_momentum(tmp_path):
    state = {"exp_avg": torch.randn(5), "exp_avg_sq": torch.rand(5),
             "momentum_buffer": torch.randn(3)}  # fmt: skip
    ckpt = Checkpoint(round=2, step=50, params=torch.randn(8), optimizer_state=state,
                      outer_momentum=torch.randn(8), metrics=[{"round": 1}, {"round": 2}],
                      fingerprint="abc", started_at="2026-01-01T00:00:00Z")  # fmt: skip
    stage = f"file://{tmp_path}/train"
    save_checkpoint(stage, ckpt)
    loaded = load_latest_checkpoint(stage, "abc")
    assert set(loaded.optimizer_state) == set(state)
    for name, vector in state.items():
        assert torch.equal(loaded.optimizer_state[name], vector), name
    assert torch.equal(loaded.params, ckpt.params)
    assert torch.equal(loaded.outer_momentum, ckpt.outer_momentum)
    assert (loaded.round, loaded.step, loaded.metrics) == (2, 50, ckpt.metrics)
    assert load_latest_checkpoint(stage, "another run") is None
