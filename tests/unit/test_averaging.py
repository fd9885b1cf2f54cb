"""Averaging math and the outer optimizer, against plain tensor arithmetic."""

import pytest
import torch
from torch import nn

from sparklm.model.averaging import (
    OuterOptimizer,
    ReplicaUpdate,
    combine,
    flat,
    split_flat,
)


def update(delta, weight, loss=1.0):
    t = torch.as_tensor(delta, dtype=torch.float32)
    state = {"exp_avg": t * weight * 2, "exp_avg_sq": t * weight * 3,
             "momentum_buffer": t[:3] * weight * 4}  # fmt: skip
    return ReplicaUpdate(t * weight, state, weight, loss, 1)


def test_identical_replicas_average_to_themselves():
    delta = torch.randn(50)
    total = None
    for _ in range(5):
        total = combine(total, update(delta, 128.0))
    mean_delta, state = total.averages()
    torch.testing.assert_close(mean_delta, delta)
    torch.testing.assert_close(state["exp_avg"], 2 * delta)
    torch.testing.assert_close(state["exp_avg_sq"], 3 * delta)
    torch.testing.assert_close(state["momentum_buffer"], 4 * delta[:3])


def test_every_optimizer_state_entry_is_token_weighted():
    a, b = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 4.0, 2.0])
    _, state = combine(update(a, 1.0), update(b, 3.0)).averages()
    torch.testing.assert_close(state["momentum_buffer"], 4 * (1 * a + 3 * b) / 4)


def test_states_of_different_optimizers_do_not_mix():
    adam_only = ReplicaUpdate(torch.zeros(2), {"exp_avg": torch.zeros(2)}, 1.0, 0.0, 1)
    with pytest.raises(ValueError, match="cannot add optimizer states"):
        combine(update(torch.zeros(2), 1.0), adam_only)


def test_the_sum_carries_every_replicas_loss_and_the_largest_replicas_memory():
    """The round's train loss is over every replica's batches; its memory, the largest."""
    replicas = ((6.0, 2, 900.0), (3.0, 1, 1200.0), (1.0, 1, 800.0))  # loss sum, batches, RSS
    parts = [ReplicaUpdate(torch.zeros(2), {}, 1.0, loss_sum, count, peak_rss_mb=rss)
             for loss_sum, count, rss in replicas]  # fmt: skip
    total = combine(combine(parts[0], parts[1]), parts[2])
    assert (total.loss_sum, total.loss_count, total.mean_loss) == (10.0, 4, 2.5)
    assert total.peak_rss_mb == 1200.0


def test_a_diverged_replica_makes_the_sum_diverged():
    bad = ReplicaUpdate(torch.zeros(2), {}, 1.0, float("nan"), 1, finite=False)
    assert not combine(update(torch.ones(2), 1.0), bad).finite


def test_split_flat_inverts_flat_and_checks_the_length():
    like = [torch.randn(2, 3), torch.randn(4)]
    parts = split_flat(flat(like), like)
    for a, b in zip(parts, like, strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="10 values"):
        split_flat(torch.zeros(11)[:10], like + [torch.zeros(1)])


def test_token_weighted_average_of_known_tensors():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 4.0])
    total = combine(update(a, 1.0), update(b, 3.0))
    expected = torch.tensor([0.25, 3.0])
    torch.testing.assert_close(total.averages()[0], expected)


def test_combine_is_order_independent_and_none_is_neutral():
    parts = [update(torch.randn(8), w) for w in (1.0, 2.0, 5.0)]
    left = combine(combine(parts[0], parts[1]), parts[2])
    right = combine(parts[0], combine(None, combine(parts[1], parts[2])))
    torch.testing.assert_close(left.averages()[0], right.averages()[0])


def test_zero_weight_is_refused():
    with pytest.raises(ValueError, match="^cannot average replicas that trained on no tokens$"):
        update(torch.ones(2), 0.0).averages()
    torch.testing.assert_close(update(torch.ones(2), 1.0).averages()[0], torch.ones(2))


def test_flat_vectors_are_float32_whatever_the_tensors_dtype():
    vector = flat([torch.ones(2, dtype=torch.bfloat16), torch.zeros(3, dtype=torch.float64)])
    assert vector.dtype == torch.float32 and vector.tolist() == [1, 1, 0, 0, 0]


def model_with(values):
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([values]))
    return model


def test_avg_adds_the_mean_delta():
    model = model_with([1.0, 2.0])
    OuterOptimizer(model, "avg", lr=0.7, momentum=0.9).step(torch.tensor([0.5, -1.0]))
    torch.testing.assert_close(model.weight.data, torch.tensor([[1.5, 1.0]]))


def test_nesterov_with_no_momentum_and_lr_1_equals_avg():
    deltas = [torch.randn(2) for _ in range(4)]
    plain, diloco = model_with([0.3, -0.2]), model_with([0.3, -0.2])
    avg = OuterOptimizer(plain, "avg", lr=0.7, momentum=0.9)
    nesterov = OuterOptimizer(diloco, "nesterov", lr=1.0, momentum=0.0)
    for d in deltas:
        avg.step(d)
        nesterov.step(d)
    torch.testing.assert_close(plain.weight.data, diloco.weight.data)


def test_nesterov_momentum_matches_the_formula():
    """DiLoCo outer step: g = −Δ, b ← μb + g, θ ← θ − lr(g + μb)."""
    model = model_with([0.0, 0.0])
    outer = OuterOptimizer(model, "nesterov", lr=0.7, momentum=0.9)
    theta, b = torch.zeros(2), torch.zeros(2)
    for d in (torch.tensor([1.0, -2.0]), torch.tensor([0.5, 0.5])):
        outer.step(d)
        g = -d
        b = 0.9 * b + g
        theta = theta - 0.7 * (g + 0.9 * b)
    torch.testing.assert_close(model.weight.data.view(-1), theta)
    restored = OuterOptimizer(model_with([0.0, 0.0]), "nesterov", lr=0.7, momentum=0.9)
    restored.load_momentum_buffers(outer.momentum_buffers(), steps_taken=2)
    torch.testing.assert_close(flat(restored.momentum_buffers()), b)


def test_outer_momentum_warms_up_linearly_then_stays():
    """Pier's warm-up: step s uses μ·min(1, s/N) in the same Nesterov formula."""
    model = model_with([0.0, 0.0])
    outer = OuterOptimizer(model, "nesterov", lr=0.7, momentum=0.6, momentum_warmup=3)
    theta, b = torch.zeros(2), torch.zeros(2)
    deltas = [torch.tensor([1.0, -2.0]), torch.tensor([0.5, 0.5]), torch.tensor([-1.0, 0.2]),
              torch.tensor([0.3, 0.1]), torch.tensor([0.2, -0.4])]  # fmt: skip
    for step, d in enumerate(deltas, start=1):
        outer.step(d)
        mu = 0.6 * min(1.0, step / 3)
        g = -d
        b = mu * b + g
        theta = theta - 0.7 * (g + mu * b)
    assert [outer.momentum_at(s) for s in (1, 2, 3, 4)] == pytest.approx([0.2, 0.4, 0.6, 0.6])
    torch.testing.assert_close(model.weight.data.view(-1), theta)


def test_a_resumed_outer_optimizer_continues_its_momentum_warm_up():
    deltas = [torch.randn(2) for _ in range(6)]
    straight = model_with([0.1, 0.2])
    outer = OuterOptimizer(straight, "nesterov", lr=0.7, momentum=0.6, momentum_warmup=4)
    for d in deltas[:2]:
        outer.step(d)
    resumed = model_with([0.0, 0.0])
    resumed.weight.data.copy_(straight.weight.data)
    again = OuterOptimizer(resumed, "nesterov", lr=0.7, momentum=0.6, momentum_warmup=4)
    again.load_momentum_buffers(outer.momentum_buffers(), steps_taken=2)
    for d in deltas[2:]:
        outer.step(d)
        again.step(d)
    torch.testing.assert_close(resumed.weight.data, straight.weight.data)


@pytest.mark.parametrize("rule", ["avg", "nesterov"])
def test_an_outer_optimizer_before_its_first_step_has_no_momentum_to_save(rule):
    outer = OuterOptimizer(model_with([0.0, 0.0]), rule, lr=0.7, momentum=0.9)
    assert outer.momentum_buffers() == [None]


def test_momentum_saved_for_another_model_is_refused():
    outer = OuterOptimizer(model_with([0.0, 0.0]), "nesterov", lr=0.7, momentum=0.9)
    with pytest.raises(ValueError):
        outer.load_momentum_buffers([torch.zeros(1, 2), torch.zeros(3)], steps_taken=1)


def test_unknown_outer_optimizer_is_refused():
    with pytest.raises(ValueError, match="avg"):
        OuterOptimizer(model_with([0.0, 0.0]), "adam", lr=1, momentum=0)
