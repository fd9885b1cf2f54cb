import pytest
import torch

from sparklm.model.decoding import Decoding, filter_logits, generate, sample_next_token
from sparklm.model.gpt import GPT, GPTConfig

WINDOW = 16


# Every position scheme: learned positions (GPT-2) and rotary ones (Llama, Qwen3 with QK-norm).
BLOCKS = {
    "gpt2": {},
    "llama": {"position": "rope", "norm": "rmsnorm", "mlp": "swiglu"},
    "qwen3": {"position": "rope", "norm": "rmsnorm", "mlp": "swiglu", "qk_norm": True},
}


@pytest.fixture(scope="module", params=list(BLOCKS))
def model(request) -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, context_len=WINDOW, n_layer=2, n_head=2, n_embd=32,
                          **BLOCKS[request.param]))  # fmt: skip
    # At the 0.02 init the tied head mostly echoes the current token, so greedy output would not
    # depend on the context and the cache tests below could not tell a right context from a
    # wrong one. Larger weights make the next token depend on the whole window.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.3)
    return model


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def kept(logits: torch.Tensor) -> list[int]:
    return torch.isfinite(logits).nonzero().flatten().tolist()


@pytest.mark.parametrize("temperature", [0.0, 1e-4])
def test_low_temperature_is_argmax(temperature):
    torch.manual_seed(0)
    for logits in torch.randn(20, 10):
        token = sample_next_token(logits, temperature, None, None, gen())
        assert token == logits.argmax().item()


def test_temperature_divides_logits():
    # softmax(logits / 2) of p = [0.6, 0.3, 0.1] is proportional to sqrt(p) = [0.47, 0.33, 0.19];
    # scaling probabilities instead would leave p unchanged after renormalisation.
    p = torch.tensor([0.6, 0.3, 0.1])
    expected = p.sqrt() / p.sqrt().sum()
    generator = gen()
    draws = [sample_next_token(p.log(), 2.0, None, None, generator) for _ in range(10_000)]
    freq = torch.bincount(torch.tensor(draws), minlength=3) / len(draws)
    torch.testing.assert_close(freq, expected, atol=0.02, rtol=0)


def test_filtered_tokens_are_never_sampled():
    # Removed candidates sit at the start, in the middle and at the end of the CDF.
    logits = torch.tensor([3.0, 1.0, 1.0, 3.0, 0.5])
    generator = gen()
    draws = {sample_next_token(logits, 1.0, None, 0.5, generator) for _ in range(500)}
    assert draws == {0, 3}
    draws = {sample_next_token(-logits, 5.0, 3, None, generator) for _ in range(500)}
    assert draws == {1, 2, 4}


def test_a_draw_of_exactly_zero_never_picks_a_filtered_token(monkeypatch):
    """u = 0.0 comes once in 2**24 draws; the first token, filtered out, has a CDF of 0."""
    monkeypatch.setattr(torch, "rand", lambda *args, **kwargs: torch.zeros(1))
    assert sample_next_token(torch.tensor([0.0, 5.0, 4.0]), 1.0, 2, None, gen()) == 1


def test_negative_temperature_raises():
    with pytest.raises(ValueError, match="temperature"):
        sample_next_token(torch.zeros(3), -1.0, None, None, gen())


def test_top_k_keeps_exactly_k():
    torch.manual_seed(0)
    logits = torch.randn(50)
    assert sorted(kept(filter_logits(logits, top_k=5, top_p=None))) == sorted(
        logits.topk(5).indices.tolist()
    )
    # Ties at the k-th value must not let extra candidates through.
    assert len(kept(filter_logits(torch.zeros(10), top_k=3, top_p=None))) == 3


def test_filters_off():
    logits = torch.randn(2, 3, 7)
    for top_k, top_p in [(None, None), (0, 1.0), (7, None), (100, None)]:
        assert torch.equal(filter_logits(logits, top_k, top_p), logits)


@pytest.mark.parametrize(("top_p", "n_kept"), [(0.01, 1), (0.5, 1), (0.8, 2), (0.81, 3), (0.96, 4)])
def test_top_p_keeps_smallest_set_reaching_p(top_p, n_kept):
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    assert kept(filter_logits(probs.log(), None, top_p)) == list(range(n_kept))
    # Same answer when the vocabulary is not sorted by probability, and in a batch.
    perm = torch.tensor([2, 0, 3, 1])
    batch = torch.stack([probs.log(), probs[perm].log()])
    filtered = filter_logits(batch, None, top_p)
    assert kept(filtered[0]) == list(range(n_kept))
    assert sorted(perm[kept(filtered[1])].tolist()) == list(range(n_kept))


def test_top_p_of_one_switches_the_nucleus_off_even_for_the_least_probable_token():
    # p = 1.0 is "off": a token of probability ~1e-13 stays a candidate, not cut as rounding.
    assert kept(filter_logits(torch.tensor([0.0, 0.0, -30.0]), None, 1.0)) == [0, 1, 2]


@pytest.mark.parametrize(
    ("setting", "message"),
    [({"top_k": -1}, r"^top_k must be >= 0 \(0 or None disables it\), got -1$"),
     ({"top_p": 0.0}, r"^top_p must be in \(0, 1\] \(1.0 or None disables it\), got 0.0$"),
     ({"top_p": 1.5}, r"^top_p must be in \(0, 1\] \(1.0 or None disables it\), got 1.5$")],
)  # fmt: skip
def test_a_filter_out_of_range_is_refused_naming_the_setting_its_range_and_the_value(
    setting, message
):
    with pytest.raises(ValueError, match=message):
        filter_logits(torch.zeros(4), **setting)


def test_top_k_and_top_p_combine():
    probs = torch.tensor([0.4, 0.3, 0.2, 0.1])
    # top_k=2 leaves [0.4, 0.3] -> renormalised [0.57, 0.43]; p=0.5 then needs only one.
    assert kept(filter_logits(probs.log(), top_k=2, top_p=0.5)) == [0]


def test_generate_is_reproducible(model):
    prompt = [1, 2, 3]
    a = generate(model, prompt, 12, Decoding(seed=0))
    assert len(a) == 12
    assert generate(model, prompt, 12, Decoding(seed=0)) == a
    assert generate(model, prompt, 12, Decoding(seed=1)) != a


def test_generate_leaves_global_rng_and_mode_alone(model):
    model.train()
    state = torch.get_rng_state()
    generate(model, [1], 5)
    assert torch.equal(torch.get_rng_state(), state)
    assert model.training
    model.eval()


@pytest.mark.parametrize(
    "sampling", [{"temperature": 0.0}, {"temperature": 1.0}, {"top_k": 10, "top_p": 0.9}]
)
def test_cache_and_full_recompute_agree_within_window(model, sampling):
    prompt = [5, 9, 2, 7]
    decoding = Decoding(seed=3, **sampling)
    cached = generate(model, prompt, WINDOW - len(prompt), decoding, use_cache=True)
    full = generate(model, prompt, WINDOW - len(prompt), decoding, use_cache=False)
    assert cached == full
    assert len(cached) == WINDOW - len(prompt)


def test_cache_slides_by_re_prefilling_half_the_window(model):
    # Oracle for the documented policy: the cache sees the prompt, grows to the full window,
    # then restarts from the last WINDOW // 2 tokens.
    prompt = list(range(1, 11))
    context, visible, expected = list(prompt), len(prompt), []
    with torch.no_grad():
        for _ in range(3 * WINDOW):
            logits = model(torch.tensor([context[-visible:]]))[0]
            token = int(logits[0, -1].argmax())
            expected.append(token)
            context.append(token)
            visible = visible + 1 if visible < WINDOW else WINDOW // 2
    assert generate(model, prompt, 3 * WINDOW, Decoding(temperature=0.0)) == expected


@pytest.mark.parametrize("use_cache", [True, False])
def test_prompt_longer_than_window_is_truncated(model, use_cache):
    long_prompt = list(range(3 * WINDOW))
    out = generate(model, long_prompt, 5, Decoding(temperature=0.0), use_cache=use_cache)
    assert out == generate(
        model, long_prompt[-WINDOW:], 5, Decoding(temperature=0.0), use_cache=use_cache
    )
    assert len(out) == 5


@pytest.mark.parametrize("context_len", [1, 2, 3])
def test_tiny_windows_slide_without_error(context_len):
    torch.manual_seed(0)
    small = GPT(GPTConfig(vocab_size=8, context_len=context_len, n_layer=1, n_head=1, n_embd=8))
    assert len(generate(small, [1, 2, 3, 4], 10)) == 10


def test_stop_id_ends_generation_and_is_not_returned(model):
    free = generate(model, [1, 2], 10, Decoding(seed=4))
    stop = free[3]
    assert (
        generate(model, [1, 2], 10, Decoding(seed=4), stop_ids={stop}) == free[: free.index(stop)]
    )


def test_generate_rejects_bad_arguments(model):
    with pytest.raises(ValueError, match=r"^prompt_ids is empty; start from at least an end-of"):
        generate(model, [], 5)
    with pytest.raises(ValueError, match=r"^max_new_tokens must be >= 0, got -1$"):
        generate(model, [1], -1)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, [1], 5, Decoding(temperature=-0.5))
    assert generate(model, [1], 0) == []


def test_sampled_distribution_matches_softmax_of_filtered_logits():
    # End-to-end check of temperature + top-k together on a 4-token vocabulary.
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    expected = torch.softmax(torch.tensor([2.0, 1.0, 0.0]) / 0.5, dim=0)
    generator = gen(1)
    draws = [sample_next_token(logits, 0.5, 3, None, generator) for _ in range(5_000)]
    freq = torch.bincount(torch.tensor(draws), minlength=4) / len(draws)
    assert freq[3] == 0
    torch.testing.assert_close(freq[:3], expected, atol=0.03, rtol=0)


def test_top_p_breaks_ties_at_the_nucleus_boundary_by_token_id():
    """Equally probable candidates are common (low-precision logits round to the same value).
    Among those at the nucleus boundary the lowest token ids stay, whatever sorting algorithm
    the device uses, so a seeded generation keeps the same nucleus everywhere."""
    uniform = torch.zeros(100)
    assert kept(filter_logits(uniform, None, 0.25)) == list(range(25))
    head_and_ties = torch.cat([torch.tensor([4.0]), torch.zeros(99)])
    nucleus = kept(filter_logits(head_and_ties, None, 0.5))
    assert nucleus == list(range(len(nucleus))) and 2 < len(nucleus) < 100


def test_a_nucleus_short_of_p_by_no_more_than_the_rounding_slack_is_complete():
    """The slack that absorbs float32 rounding of the mass (1e-6) is inclusive: two tokens of
    probability 0.5 and p = 0.5 + 1e-6 keep one, as p = 0.5 does."""
    assert kept(filter_logits(torch.zeros(2), None, 0.5)) == [0]
    assert kept(filter_logits(torch.zeros(2), None, 0.5 + 1e-6)) == [0]
    assert kept(filter_logits(torch.zeros(2), None, 0.5 + 1e-5)) == [0, 1]


def test_the_largest_uniform_draw_still_picks_a_candidate_token(monkeypatch):
    """torch.rand can return 1 - 2**-24, while the softmax of many logits sums to a hair below
    1 in float32: the draw must still land on a candidate, never past the vocabulary."""
    largest = torch.nextafter(torch.tensor([1.0]), torch.tensor([0.0]))
    monkeypatch.setattr(torch, "rand", lambda *args, **kwargs: largest.clone())
    logits = torch.randn(200, 8, generator=gen(5))
    for row in logits:
        token = sample_next_token(row, 1.0, 6, None, gen())
        assert token in row.topk(6).indices.tolist()


def test_generation_runs_on_the_models_device_whatever_the_default_device():
    """A CUDA model in a process whose default device is the CPU must draw its random numbers
    on its own device (the meta default device stands in: anything made there fails)."""
    torch.manual_seed(0)
    small = GPT(GPTConfig(vocab_size=16, context_len=8, n_layer=1, n_head=1, n_embd=8))
    decoding = Decoding(seed=2, top_k=10, top_p=0.9)
    expected = generate(small, [3, 1, 4], 4, decoding)
    with torch.device("meta"):
        assert generate(small, [3, 1, 4], 4, decoding) == expected
        assert generate(small, [3, 1, 4], 4, decoding, use_cache=False) == expected
