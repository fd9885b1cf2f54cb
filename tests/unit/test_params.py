"""Run conf checks: unknown keys are refused with the Param each one probably meant."""

import pytest

from llm_pipeline.params import UnknownConfKeys, check_conf_keys, pipeline_params

PARAMS = list(pipeline_params())


@pytest.mark.parametrize(
    ("key", "meant"),
    [("learning_rate", "lr"), ("local-steps", "local_steps"), ("Rounds", "rounds"),
     ("vocab_sise", "vocab_size"), ("max_new_token", "max_new_tokens")],
)  # fmt: skip
def test_a_mistyped_conf_key_is_refused_naming_the_param_it_meant(key, meant):
    with pytest.raises(UnknownConfKeys) as refused:
        check_conf_keys({key: 1, "rounds": 2}, PARAMS)
    message = str(refused.value)
    assert f"unknown conf key {key!r} (did you mean {meant!r}?)" in message
    assert "valid keys are " + ", ".join(sorted(PARAMS)) in message


def test_every_unknown_key_is_listed_even_without_a_guess():
    with pytest.raises(UnknownConfKeys, match=r"keys 'colour', 'learning_rate' \(did you mean"):
        check_conf_keys({"learning_rate": 0.1, "colour": "red"}, PARAMS)


def test_known_keys_and_an_empty_conf_pass():
    check_conf_keys({}, PARAMS)
    check_conf_keys({"lr": 0.01, "run_root": None, "prompts": []}, PARAMS)
