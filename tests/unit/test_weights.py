"""Artifacts load from safetensors and JSON only: pickles are refused, whatever their name."""

import io
import pickle

import pytest
import torch

from sparklm.model import GPT, GPTConfig
from sparklm.weights import UnsafeArtifactError, load_model, model_bytes, parse_safetensors

CONFIG = GPTConfig(vocab_size=50, context_len=8, n_layer=1, n_head=2, n_embd=16)


def test_round_trip_keeps_every_weight_and_the_tying():
    torch.manual_seed(0)
    model = GPT(CONFIG)
    loaded = load_model(model_bytes(model), CONFIG.to_dict())
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(),
                                 strict=True):  # fmt: skip
        assert torch.equal(a, b), name
    assert loaded.lm_head.weight is loaded.transformer.wte.weight


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
