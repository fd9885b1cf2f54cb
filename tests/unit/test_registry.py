"""Registry names, locations and the promotion gate."""

import math

import pytest

from sparklm.registry import RegistryError, check_name, check_registry, promotion_decision


@pytest.mark.parametrize("name", ["wiki-gpt", "model_1.2", "A"])
def test_good_names(name):
    assert check_name("model name", name) == name


@pytest.mark.parametrize("name", ["", "../x", "a/b", "..", ".hidden", "s3://x", "a" * 65, "a..b"])
def test_bad_names_are_refused(name):
    with pytest.raises(RegistryError, match="invalid model name"):
        check_name("model name", name)


def test_registry_must_stay_under_the_allowed_prefixes():
    allowed = ["s3://models/registry"]
    assert check_registry("s3://models/registry/team", allowed) == "s3://models/registry/team"
    for outside in ("s3://models/registry-evil", "s3://other/registry", "s3://models/x"):
        with pytest.raises(RegistryError, match="outside the allowed"):
            check_registry(outside, allowed)
    with pytest.raises(RegistryError, match=r"'\.\.'"):
        check_registry("s3://models/registry/../x", allowed)
    with pytest.raises(Exception, match="s3://"):
        check_registry("http://example.com/registry", [])


METRICS = {"val_bpb": 2.0, "val_loss": 4.0}


def test_first_version_promotes():
    assert promotion_decision(METRICS, None, 0.0)[0]


def test_better_or_equal_promotes_worse_does_not():
    latest = {"version": "v1", "val_bpb": 2.0}
    assert promotion_decision({**METRICS, "val_bpb": 1.9}, latest, 0.0)[0]
    assert promotion_decision(METRICS, latest, 0.0)[0]
    promoted, reason = promotion_decision({**METRICS, "val_bpb": 2.1}, latest, 0.0)
    assert not promoted and "worse than latest version v1" in reason
    assert promotion_decision({**METRICS, "val_bpb": 2.1}, latest, 0.2)[0]


def test_non_finite_metrics_block_promotion_even_for_a_first_version():
    promoted, reason = promotion_decision({**METRICS, "val_loss": math.nan}, None, 0.0)
    assert not promoted and "val_loss" in reason
