"""What the docs restate stays true: the trigger form's sections in docs/pipeline.md follow the
settings spec, and every test the docs cite as evidence exists."""

import re
from itertools import groupby

from helpers.paths import REPO
from sparklm import settings

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_the_params_table_lists_the_forms_sections_as_the_spec_orders_them():
    text = (REPO / "docs" / "pipeline.md").read_text(encoding="utf-8")
    table = {
        row[0]: re.findall(r"`(\w+)`", row[1])
        for row in (line.strip("|").split("|") for line in text.splitlines()
                    if line.startswith("| ") and line.count("|") == 3)
        if row[0].strip() in settings.SECTIONS
    }  # fmt: skip
    spec = {
        section: [s.name for s in group]
        for section, group in groupby(settings.for_form(), key=lambda s: s.section)
    }
    assert {k.strip(): v for k, v in table.items()} == spec
    optional = ", ".join(f"`{s.name}`" for s in settings.for_form() if s.optional)
    assert optional in " ".join(text.split()), "the list of Params that may stay empty"


def test_every_test_the_docs_cite_exists():
    """A cited name is a test's name or, ending in ``_`` (``test_preflight_*``), its prefix."""
    defined = {
        name
        for path in (REPO / "tests").rglob("test_*.py")
        for name in re.findall(r"^def (test_\w+)", path.read_text(encoding="utf-8"), re.M)
    }
    missing = sorted(
        f"{doc.name}: {name}"
        for doc in DOCS
        for name in set(re.findall(r"`(test_\w+)", doc.read_text(encoding="utf-8")))
        if name not in defined
        and not (name.endswith("_") and any(d.startswith(name) for d in defined))
    )
    assert not missing, "docs cite tests that do not exist:\n" + "\n".join(missing)
