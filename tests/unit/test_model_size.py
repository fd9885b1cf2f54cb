"""The torch-free memory estimate: exact parameter counts, an upper bound on real peaks."""

import subprocess
import sys

import pytest
import torch

from sparklm.model.gpt import GPT, GPTConfig
from sparklm.model.memory_estimate import (
    GIB,
    ModelTooLarge,
    Shape,
    check_budget,
    parameter_count,
    training_memory,
)

BLOCKS = [
    {},  # GPT-2's
    {"position": "rope", "norm": "rmsnorm", "mlp": "swiglu", "qk_norm": True},  # Qwen3's
    {"position": "rope", "norm": "rmsnorm", "mlp": "swiglu", "tie_embeddings": False},
    {"mlp": "swiglu", "bias": True, "qk_norm": True, "intermediate_size": 200},
    {"bias": True, "intermediate_size": 72, "tie_embeddings": False},
]


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize(
    "dims", [(50, 8, 1, 2, 16), (4096, 128, 4, 4, 128), (300, 32, 3, 4, 96), (65536, 64, 2, 8, 64)]
)
def test_parameter_count_matches_the_model(dims, block):
    config = GPTConfig(*dims, **block)
    with torch.device("meta"):
        model = GPT(config)
    assert parameter_count(Shape.from_config(config.to_dict())) == model.num_params(
        non_embedding=False
    )


def test_params_describe_the_same_shape_as_the_config_they_become():
    """plan_run estimates from the Params (intermediate_size 0: the default), train from the
    config.json they become."""
    params = {
        "vocab_size": 4096,
        "context_len": 128,
        "n_layer": 4,
        "n_head": 4,
        "n_embd": 128,
        "mlp": "swiglu",
        "intermediate_size": 0,
        "tie_embeddings": False,
        "lr": 0.1,
    }
    config = GPTConfig(**{k: v for k, v in params.items() if k not in ("lr", "intermediate_size")})
    assert parameter_count(Shape.from_config(params)) == parameter_count(
        Shape.from_config(config.to_dict())
    )


def test_the_issues_huge_params_are_refused_and_the_defaults_fit():
    huge = training_memory(Shape(65536, 8192, 96, 64, 8192), batch_size=4096)
    assert huge.parameters > 77e9
    with pytest.raises(ModelTooLarge, match=r"77,\d{3},\d{3},\d{3} parameters .* over the memory "
                                            r"budget of 8 GB\. Lower the n_layer"):  # fmt: skip
        check_budget(huge, 8, "the model", "the n_layer or n_embd")
    default = training_memory(Shape(4096, 128, 4, 4, 128), batch_size=16)
    check_budget(default, 8, "the model", "-")
    assert default.peak_bytes < 2 * GIB


MEASURE = """
import torch
from sparklm.model.averaging import flat
from sparklm.model.gpt import GPT, GPTConfig
from sparklm.model.training import GlobalState, TrainConfig, train_replica
from sparklm.runtime.allocator import keep_freed_memory
torch.set_num_threads(1)
keep_freed_memory()  # as the train job's replicas run: freed buffers stay for the next step
cfg = GPTConfig(vocab_size=4096, context_len=128, n_layer=4, n_head=4, n_embd=128)
state = GlobalState(flat(GPT(cfg).parameters()), {}, 0)
tokens = torch.randint(0, 4096, (128 * 50,))
train_replica(cfg, TrainConfig(batch_size=32, local_steps=5), state, tokens, 0, 0)
# VmHWM: this program's own peak. ru_maxrss would also count the forked copy of the parent
# (a pytest worker of several GB) that the kernel folds in at exec.
print(next(int(line.split()[1]) * 1024 for line in open("/proc/self/status")
           if line.startswith("VmHWM:")))
"""


def test_the_estimate_bounds_a_real_replicas_peak_memory():
    """A replica's whole process (interpreter and torch included) stays under the estimate."""
    out = subprocess.run([sys.executable, "-c", MEASURE], capture_output=True, text=True,
                         check=True)  # fmt: skip
    peak = int(out.stdout.strip())
    estimate = training_memory(Shape(4096, 128, 4, 4, 128), batch_size=32)
    assert peak < estimate.peak_bytes, (peak / 2**20, estimate.peak_bytes / 2**20)
