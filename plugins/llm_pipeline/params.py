"""The trigger form: every knob of the pipeline as a validated, documented Param.

Each Param is built from its ``Setting`` in ``sparklm.settings`` (default, type, bounds
or choices, title, help and form section), the one place they are defined. Airflow
checks the JSON schema when a run is triggered (UI, API or ``airflow dags test -c``),
so a bad value is refused before any Spark job starts; ``plan_run`` then applies the
settings' own checks, which also refuse what JSON schema cannot (NaN, infinities).

Conventions of Airflow 3.3's form that the spec follows: a Param whose ``type`` lacks
``"null"`` is required, and ``""`` counts as missing, so a Param that may stay empty is
an ``optional`` setting, typed ``["null", …]`` with a ``None`` default.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from airflow.sdk import Param

from sparklm.settings import Setting, for_form


def pipeline_params() -> dict[str, Param]:
    """Every Param of the DAG, in the form's order, each in its section."""
    return {s.name: to_param(s) for s in for_form()}


def to_param(setting: Setting) -> Param:
    """The Param of one setting: its default, JSON schema, label, help and section."""
    return Param(setting.default, title=setting.title, description=setting.description,
                 section=setting.section, **setting.json_schema())  # fmt: skip


class UnknownConfKeys(ValueError):
    """A run was triggered with ``conf`` keys that are not Params (a typo, an old name)."""


def check_conf_keys(conf: Mapping[str, Any], valid: Iterable[str]) -> None:
    """Refuse conf keys that are not Params, suggesting the Param each one probably meant."""
    valid = sorted(valid)
    unknown = sorted(set(conf) - set(valid))
    if not unknown:
        return
    problems = []
    for key in unknown:
        guess = closest_param(key, valid)
        problems.append(f"{key!r}" + (f" (did you mean {guess!r}?)" if guess else ""))
    raise UnknownConfKeys(
        f"unknown conf key{'s' if len(unknown) > 1 else ''} {', '.join(problems)}: "
        f"fix the name; valid keys are {', '.join(valid)}"
    )


def closest_param(key: str, valid: list[str]) -> str | None:
    """The Param a mistyped key most likely meant: the same name with ``-`` or another case,
    its initials (``learning_rate`` → ``lr``), or the closest spelling."""
    name = key.strip().lower().replace("-", "_")
    initials = "".join(word[0] for word in name.split("_") if word)
    for candidate in (name, initials):
        if candidate in valid:
            return candidate
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    return close[0] if close else None
