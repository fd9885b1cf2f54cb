"""The inner loop: schedule, sampling, determinism, and carrying AdamW state across rounds."""

import dataclasses
import math

import pytest
import torch
from torch.nn.utils import vector_to_parameters

from helpers.oracles import single_process_training
from sparklm.model import training
from sparklm.model.averaging import OuterOptimizer, combine, flat
from sparklm.model.gpt import GPT, GPTConfig
from sparklm.model.training import (
    GlobalState,
    TrainConfig,
    apply_update,
    build_optimizer,
    derive_seed,
    evaluate,
    lr_at,
    lr_scale,
    sample_batch,
    train_replica,
)
from sparklm.runtime.errors import PipelineError

MODEL = GPTConfig(vocab_size=64, context_len=16, n_layer=1, n_head=2, n_embd=32)


def test_schedule_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(rounds=10, local_steps=10, optimizer="adamw", lr=1e-3, warmup_steps=10,
                      min_lr_ratio=0.1)  # fmt: skip
    lrs = [lr_at(s, cfg) for s in range(cfg.total_steps)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    assert lrs[-1] == pytest.approx(1e-4, rel=0.05)


def test_wsd_holds_the_peak_then_decays_linearly_to_the_floor():
    cfg = TrainConfig(rounds=10, local_steps=10, muon_adamw_lr=1e-3, warmup_steps=10,
                      min_lr_ratio=0.0, schedule="wsd", decay_fraction=0.2)  # fmt: skip
    lrs = [lr_at(s, cfg) for s in range(cfg.total_steps)]
    assert lrs[0] == pytest.approx(1e-4)
    assert lrs[9:80] == [pytest.approx(1e-3)] * 71  # stable until the last 20 steps
    decay = lrs[80:]
    steps = [a - b for a, b in zip(decay, decay[1:], strict=False)]
    assert steps == [pytest.approx(1e-3 / 20)] * 19  # linear
    assert lrs[-1] == pytest.approx(1e-3 / 20)


@pytest.mark.parametrize("schedule", ["cosine", "wsd"])
def test_the_decay_follows_its_curve_to_the_floor_and_stays_there(schedule):
    cfg = TrainConfig(rounds=10, local_steps=10, warmup_steps=10, min_lr_ratio=0.2,
                      schedule=schedule, decay_fraction=0.2)  # fmt: skip
    # Halfway through the decay (steps 10..100 for cosine, 80..100 for WSD): 0.6 both ways.
    halfway = 55 if schedule == "cosine" else 90
    assert lr_scale(halfway, cfg) == pytest.approx(0.2 + 0.8 * 0.5)
    for step in (cfg.total_steps, cfg.total_steps + 1, 3 * cfg.total_steps):
        assert lr_scale(step, cfg) == pytest.approx(0.2)


@pytest.mark.parametrize("schedule", ["cosine", "wsd"])
def test_a_decay_one_step_long_reaches_the_floor_in_that_step(schedule):
    cfg = TrainConfig(rounds=1, local_steps=10, warmup_steps=9, min_lr_ratio=0.2,
                      schedule=schedule, decay_fraction=0.1)  # fmt: skip
    assert lr_scale(9, cfg) == pytest.approx(1.0)
    assert lr_scale(10, cfg) == pytest.approx(0.2)


def test_early_rounds_average_more_often_then_switch_to_local_steps():
    cfg = TrainConfig(rounds=5, local_steps=10, early_rounds=2, early_local_steps=3)
    assert [cfg.steps_in_round(r) for r in range(5)] == [3, 3, 10, 10, 10]
    assert [cfg.steps_before(r) for r in range(6)] == [0, 3, 6, 16, 26, 36]
    assert cfg.total_steps == 36
    with pytest.raises(ValueError, match="early_rounds"):
        TrainConfig(rounds=2, early_rounds=3)


def test_batches_are_windows_with_shifted_targets():
    tokens = torch.arange(1000)
    x, y = sample_batch(tokens, 8, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (8, 16)
    torch.testing.assert_close(y, x + 1)


def test_int32_tokens_give_the_same_int64_batches_and_losses_as_int64_tokens():
    """Replicas keep their tokens as int32 (``read_range``): only the sampled windows widen,
    to exactly what int64 tokens gave."""
    tokens = torch.randint(0, 64, (4000,), generator=torch.Generator().manual_seed(1))
    narrow = [sample_batch(tokens.int(), 8, 16, torch.Generator().manual_seed(0))]
    wide = [sample_batch(tokens, 8, 16, torch.Generator().manual_seed(0))]
    for got, want in zip(narrow[0], wide[0], strict=True):
        assert got.dtype == torch.int64 and torch.equal(got, want)
    model = GPT(GPTConfig(vocab_size=64, context_len=16, n_layer=1, n_head=2, n_embd=16))
    assert evaluate(model, tokens.int()) == evaluate(model, tokens)


def test_every_window_of_the_tokens_can_be_drawn_the_first_and_the_last_too():
    x, _ = sample_batch(torch.arange(12), 2000, 4, torch.Generator().manual_seed(0))
    assert set(x[:, 0].tolist()) == set(range(8))  # windows of 5 tokens start at 0..7


def test_seeds_differ_per_round_and_partition_but_repeat():
    assert derive_seed(1, 0, 0) == derive_seed(1, 0, 0)
    assert len({derive_seed(1, r, p) for r in range(5) for p in range(5)}) == 25


def test_no_two_replicas_of_a_long_run_draw_the_same_windows():
    """100 rounds of 16 replicas: each draws its own windows. Torch's CPU generator keeps
    only 32 bits of a seed, so distinct seeds alone do not guarantee distinct streams."""
    tokens = torch.arange(1 << 20)
    seed = TrainConfig().seed
    first_windows = {
        tuple(sample_batch(tokens, 4, 16, torch.Generator().manual_seed(
            derive_seed(seed, r, p)))[0][:, 0].tolist())
        for r in range(100) for p in range(16)
    }  # fmt: skip
    assert len(first_windows) == 100 * 16


def fresh_state(seed=0):
    torch.manual_seed(seed)
    return GlobalState(flat(GPT(MODEL).parameters()), {}, 0)


def test_replica_is_deterministic_and_does_not_touch_the_broadcast_state():
    cfg = TrainConfig(local_steps=3, batch_size=4)
    tokens = torch.randint(0, 64, (2000,), generator=torch.Generator().manual_seed(1))
    state = fresh_state()
    before = state.params.clone()
    a = train_replica(MODEL, cfg, state, tokens, round_index=0, partition=0)
    b = train_replica(MODEL, cfg, state, tokens, round_index=0, partition=0)
    torch.testing.assert_close(state.params, before)
    torch.testing.assert_close(a.delta, b.delta)
    assert a.delta.abs().sum() > 0 and a.weight == 3 * 4 * 16


@pytest.mark.parametrize(
    "settings",
    [{"optimizer": "adamw"}, {"optimizer": "muon"},
     {"optimizer": "muon", "schedule": "wsd", "rounds": 3, "early_rounds": 1,
      "early_local_steps": 2}],
    ids=["adamw", "muon", "muon-wsd-early-rounds"],
)  # fmt: skip
def test_rounds_with_carried_optimizer_state_equal_one_long_run(settings):
    """Averaged-state policy with one replica: splitting a run into rounds changes nothing,
    for AdamW's moments and for Muon's momentum buffers alike. Each round ends with the
    driver's half (``apply_update``, the avg outer step), as in jobs/train.py."""
    cfg = TrainConfig(**{"rounds": 2, "local_steps": 4, "batch_size": 4, "warmup_steps": 2,
                         **settings})  # fmt: skip
    tokens = torch.randint(0, 64, (3000,), generator=torch.Generator().manual_seed(2))
    state = fresh_state()
    driver = GPT(MODEL)  # the driver's model holds the global weights, as in jobs/train.py
    vector_to_parameters(state.params.clone(), driver.parameters())
    outer = OuterOptimizer(driver, "avg", lr=cfg.outer_lr, momentum=cfg.outer_momentum)
    for r in range(cfg.rounds):
        u = train_replica(MODEL, cfg, state, tokens, round_index=r, partition=0)
        state = apply_update(driver, outer, u, state, cfg.steps_in_round(r))

    model = single_process_training(MODEL, cfg, tokens, seed=0)
    torch.testing.assert_close(state.params, flat(model.parameters()), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(flat(driver.parameters()), state.params)
    assert state.step == cfg.total_steps


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest():
    """Beside Muon, AdamW runs at muon_adamw_lr; lr is adamw's alone."""
    torch.manual_seed(0)
    model = GPT(MODEL)
    optimizer = build_optimizer(model, TrainConfig(optimizer="muon", lr=3e-4, muon_adamw_lr=1e-3,
                                                   muon_lr=0.05))  # fmt: skip
    muon = [p for g in optimizer.muon.param_groups for p in g["params"]]
    adamw = [p for g in optimizer.adamw.param_groups for p in g["params"]]
    assert [id(p) for p in muon] == [id(p) for p in model.hidden_matrices()]
    assert sorted(map(id, muon + adamw)) == sorted(map(id, model.parameters()))
    optimizer.set_lr_scale(0.5)
    assert {g["lr"] for g in optimizer.muon.param_groups} == {0.025}
    assert {g["lr"] for g in optimizer.adamw.param_groups} == {5e-4}


def test_a_muon_replica_returns_its_momentum_buffers_with_the_adam_moments():
    cfg = TrainConfig(local_steps=2, batch_size=2, optimizer="muon")
    u = train_replica(MODEL, cfg, fresh_state(), torch.randint(0, 64, (500,)), 0, 0)
    torch.manual_seed(0)
    model = GPT(MODEL)
    hidden = sum(p.numel() for p in model.hidden_matrices())
    rest = sum(p.numel() for p in model.parameters()) - hidden
    assert {k: v.numel() for k, v in u.state.items()} == {
        "exp_avg": rest,
        "exp_avg_sq": rest,
        "momentum_buffer": hidden,
    }
    assert u.state["momentum_buffer"].abs().sum() > 0


def test_optimizer_state_of_another_optimizer_is_refused():
    torch.manual_seed(0)
    optimizer = build_optimizer(GPT(MODEL), TrainConfig(optimizer="muon"))
    with pytest.raises(ValueError, match="momentum_buffer"):
        optimizer.load_state_vectors({"exp_avg": torch.zeros(1), "exp_avg_sq": torch.zeros(1)},
                                     step=3)  # fmt: skip


def test_non_finite_loss_is_reported_not_returned_as_weights():
    cfg = TrainConfig(local_steps=2, batch_size=2)
    state = fresh_state()
    state.params[0] = float("nan")
    u = train_replica(MODEL, cfg, state, torch.randint(0, 64, (500,)), 0, 0)
    assert u.finite is False and math.isnan(u.mean_loss)
    # It still counts its tokens and adds to the others', so the driver stops on `finite`.
    assert u.weight == 2 * 2 * 16 and torch.equal(u.delta, torch.zeros_like(state.params))
    # Averaged on its own it moves nothing and carries no optimizer state.
    mean_delta, optimizer_state = u.averages()
    assert not mean_delta.any() and optimizer_state == {}
    healthy = train_replica(MODEL, cfg, fresh_state(), torch.randint(0, 64, (500,)), 0, 1)
    assert combine(u, healthy).finite is False


def test_dropout_does_not_change_the_windows_a_replica_trains_on(monkeypatch):
    """The windows come from the replica's own seeded generator, not the global RNG that
    dropout draws its masks from: switching dropout on leaves the data each step sees."""
    drawn = []

    def recording_sample_batch(*args):
        x, y = sample_batch(*args)
        drawn[-1].append(x)
        return x, y

    monkeypatch.setattr(training, "sample_batch", recording_sample_batch)
    cfg = TrainConfig(local_steps=3, batch_size=4)
    tokens = torch.randint(0, 64, (2000,), generator=torch.Generator().manual_seed(1))
    for dropout in (0.0, 0.3):
        drawn.append([])
        model_cfg = dataclasses.replace(MODEL, dropout=dropout)
        train_replica(model_cfg, cfg, fresh_state(), tokens, round_index=1, partition=2)
    generator = torch.Generator().manual_seed(derive_seed(cfg.seed, 1, 2))
    seeded = [sample_batch(tokens, 4, 16, generator)[0] for _ in range(3)]
    for windows in drawn:
        torch.testing.assert_close(torch.stack(windows), torch.stack(seeded))


def test_a_replica_reports_the_mean_loss_of_its_steps_and_its_peak_memory():
    """Recomputed from the same seed's batches: at lr 1e-6 the weights barely move."""
    cfg = TrainConfig(local_steps=3, batch_size=4, optimizer="adamw", lr=1e-6, warmup_steps=1)
    tokens = torch.randint(0, 64, (2000,), generator=torch.Generator().manual_seed(1))
    state = fresh_state()
    u = train_replica(MODEL, cfg, state, tokens, round_index=2, partition=1)
    model = GPT(MODEL)
    vector_to_parameters(state.params.clone(), model.parameters())
    generator = torch.Generator().manual_seed(derive_seed(cfg.seed, 2, 1))
    losses = [model(*sample_batch(tokens, 4, 16, generator))[1].item() for _ in range(3)]
    assert u.loss_count == 3 and u.loss_sum == pytest.approx(sum(losses), rel=1e-4)
    assert u.peak_rss_mb > 50  # this process's peak, torch loaded


def test_evaluate_scores_every_window():
    """Equal to scoring each of the 5 windows on its own, in batches that leave a remainder."""
    torch.manual_seed(0)
    model = GPT(MODEL)
    tokens = torch.randint(0, 64, (16 * 5 + 1 + 7,))  # 7 trailing tokens: not a whole window
    windows = [(tokens[i * 16 : i * 16 + 16], tokens[i * 16 + 1 : i * 16 + 17]) for i in range(5)]
    with torch.no_grad():
        per_window = [model(x[None])[0][0] for x, _ in windows]
    want_loss = sum(
        torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
        for logits, (_, y) in zip(per_window, windows, strict=True)
    ) / (5 * 16)  # fmt: skip
    want_acc = sum(
        (logits.argmax(-1) == y).sum().item()
        for logits, (_, y) in zip(per_window, windows, strict=True)
    ) / (5 * 16)  # fmt: skip
    for batch_size in (2, 5, 64):
        loss, acc = evaluate(model, tokens, batch_size=batch_size)
        assert loss == pytest.approx(want_loss, rel=1e-5), batch_size
        assert acc == want_acc, batch_size
    assert abs(want_loss - math.log(64)) < 0.5  # an untrained model scores about chance
    with pytest.raises(ValueError, match="need more than 16 tokens"):
        evaluate(model, torch.arange(10))


@pytest.mark.parametrize(
    "bad",
    [{"rounds": 0}, {"outer": "adam"}, {"optimizer_state": "kept"}, {"lr": -1.0},
     {"optimizer": "sgd"}, {"schedule": "linear"}, {"muon_lr": 0.0}, {"decay_fraction": 0.0},
     {"early_local_steps": 0}],
)  # fmt: skip
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad)


@pytest.mark.parametrize("val_loss", [800.0, math.inf, math.nan])
def test_a_validation_loss_past_what_its_perplexity_can_hold_is_divergence(val_loss):
    """exp(800) overflows a float: the round must end as a divergence (one ERROR line, no
    retry), not as an OverflowError that every retry would meet again."""
    from helpers.jobs import load_job
    from sparklm.runtime import exit_codes

    train = load_job("train")
    with pytest.raises(PipelineError, match="round 3: the validation loss is") as raised:
        train.check_validation_loss(2, TrainConfig(), val_loss)
    assert exit_codes.classify(raised.value, "").exit_code == 2
    train.check_validation_loss(2, TrainConfig(), train.MAX_VAL_LOSS)
    assert math.isfinite(math.exp(train.MAX_VAL_LOSS))
