"""Freed tensor memory is kept for the next step: counted in page faults, not timed."""

import platform
import subprocess
import sys

import pytest

# Ten inner steps of one replica whose logits are the defaults' size (batch 16 × context 128 ×
# vocabulary 4096: 32 MiB), counting the minor page faults after a first round has warmed up.
FAULTS_OF_A_REPLICAS_STEPS = """
import resource, sys, torch
from sparklm.model.averaging import flat
from sparklm.model.gpt import GPT, GPTConfig
from sparklm.model.training import GlobalState, TrainConfig, train_replica
from sparklm.runtime.allocator import keep_freed_memory
torch.set_num_threads(1)
if sys.argv[1] == "keep":
    assert keep_freed_memory()
model = GPTConfig(vocab_size=4096, context_len=128, n_layer=1, n_head=4, n_embd=64)
state = GlobalState(flat(GPT(model).parameters()), {}, 0)
tokens = torch.randint(0, 4096, (128 * 50,))
train_replica(model, TrainConfig(batch_size=16, local_steps=2), state, tokens, 0, 0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
train_replica(model, TrainConfig(batch_size=16, local_steps=10), state, tokens, 0, 0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def minor_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", FAULTS_OF_A_REPLICAS_STEPS, mode],
                         check=True, capture_output=True, text=True).stdout  # fmt: skip
    return int(out)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_a_replicas_steps_reuse_freed_buffers_instead_of_faulting_them_in_again():
    # Measured: about 334,000 faults by default (the logits' 8,192 pages and more, every step),
    # 3 to 25,000 with the memory kept, depending on where the heap's buffers land.
    default, kept = minor_faults("default"), minor_faults("keep")
    assert kept < default / 5, (default, kept)
