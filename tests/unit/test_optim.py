"""The inner optimizer: Muon as torch computes it, state export/import, the AdamW/Muon split."""

import pytest
import torch

from sparklm.model.gpt import GPT, GPTConfig
from sparklm.model.optimizers import InnerOptimizer, Muon, OptimizerSettings, orthogonalize

MODEL = GPTConfig(vocab_size=64, context_len=16, n_layer=2, n_head=2, n_embd=32,
                  position="rope", norm="rmsnorm", mlp="swiglu", qk_norm=True)  # fmt: skip


def params(seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g)) for s in [(24, 8), (8, 8), (8, 24)]]


def run(optimizer: torch.optim.Optimizer, ps: list[torch.nn.Parameter], steps: int = 4) -> None:
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in ps:
            p.grad = torch.randn(p.shape, generator=g)
        optimizer.step()


@pytest.mark.parametrize("adjust_lr_fn", [None, "match_rms_adamw"])
def test_muon_in_bfloat16_is_torch_muon_bit_for_bit(adjust_lr_fn):
    ours, theirs = params(), params()
    run(Muon(ours, lr=0.02, weight_decay=0.1, adjust_lr_fn=adjust_lr_fn, ns_dtype=torch.bfloat16),
        ours)  # fmt: skip
    run(torch.optim.Muon(theirs, lr=0.02, weight_decay=0.1, adjust_lr_fn=adjust_lr_fn), theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)


def test_muon_in_float32_takes_the_same_steps_up_to_bfloat16_rounding():
    ours, theirs = params(), params()
    run(Muon(ours, lr=0.02), ours)
    run(torch.optim.Muon(theirs, lr=0.02), theirs)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, atol=2e-3, rtol=0)
        assert not torch.equal(a, b)


@pytest.mark.parametrize("shape", [(32, 8), (8, 32), (16, 16)])
def test_orthogonalize_flattens_the_singular_values(shape):
    g = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    singular = torch.linalg.svdvals(orthogonalize(g, (3.4445, -4.7750, 2.0315), 5, 1e-7,
                                                  torch.float32))  # fmt: skip
    # Muon's quintic trades exactness for speed: singular values land in about (0.5, 1.5).
    assert singular.min() > 0.5 and singular.max() < 1.5


@pytest.mark.parametrize("kind", ["adamw", "muon"])
def test_exported_state_continues_exactly_where_the_optimizer_was(kind):
    """state_vectors → load_state_vectors into a fresh optimizer → the same next step."""

    def build(model):
        return InnerOptimizer(model, OptimizerSettings(
            kind=kind, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1, muon_lr=0.02,
            muon_momentum=0.95))  # fmt: skip

    def step(model, optimizer, x):
        optimizer.zero_grad()
        model(x, x)[1].backward()
        optimizer.step()

    torch.manual_seed(0)
    a = GPT(MODEL)
    b = GPT(MODEL)
    b.load_state_dict(a.state_dict())
    x = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    opt_a = build(a)
    for _ in range(3):
        step(a, opt_a, x)
    b.load_state_dict(a.state_dict())
    opt_b = build(b)
    opt_b.load_state_vectors(opt_a.state_vectors(), step=3)
    step(a, opt_a, x)
    step(b, opt_b, x)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb), name


@pytest.mark.parametrize("kind", ["adamw", "muon"])
def test_each_optimizer_takes_the_settings_given_and_only_muon_takes_the_matrices(kind):
    model = GPT(MODEL)
    settings = OptimizerSettings(kind=kind, lr=3e-3, betas=(0.8, 0.9), weight_decay=0.05,
                                 muon_lr=0.03, muon_momentum=0.85)  # fmt: skip
    optimizer = InnerOptimizer(model, settings)
    assert {(g["lr"], g["betas"]) for g in optimizer.adamw.param_groups} == {(3e-3, (0.8, 0.9))}
    if kind == "adamw":
        assert optimizer.muon is None
        assert len(optimizer.adam_params) == len(list(model.parameters()))
    else:
        [group] = optimizer.muon.param_groups
        assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (
            0.03, 0.85, True, 0.05)  # fmt: skip


def test_an_unknown_optimizer_is_refused_naming_the_choices():
    settings = OptimizerSettings(kind="sgd", lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1,
                                 muon_lr=0.02, muon_momentum=0.95)  # fmt: skip
    with pytest.raises(
        ValueError, match=r"^optimizer must be one of \('adamw', 'muon'\), not 'sgd'$"
    ):
        InnerOptimizer(GPT(MODEL), settings)


@pytest.mark.parametrize("kind", ["adamw", "muon"])
def test_after_zero_grad_a_step_moves_only_the_parameters_that_got_a_new_gradient(kind):
    """zero_grad drops the gradients: AdamW and Muon skip a parameter without one. A zeroed
    gradient would still move it, by the momentum of the earlier steps and the weight decay."""
    torch.manual_seed(0)
    model = GPT(MODEL)
    optimizer = InnerOptimizer(model, OptimizerSettings(
        kind=kind, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1, muon_lr=0.02,
        muon_momentum=0.95))  # fmt: skip
    x = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    optimizer.zero_grad()
    model(x, x)[1].backward()
    optimizer.step()  # every optimizer now has momentum to carry on with

    optimizer.zero_grad()
    embedding = model.transformer.wte.weight
    embedding.square().sum().backward()  # a loss that reaches the embedding only
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer.step()
    moved = [name for name, p in model.named_parameters() if not torch.equal(p, before[name])]
    assert moved == ["transformer.wte.weight"]
