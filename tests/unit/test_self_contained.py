"""`make test` works from a fresh clone: the tests use nothing outside the repository and
its installed dependencies (the development machine's ``../shared/data`` is not there)."""

import ast
import re

from helpers.paths import REPO

SHARED_DATA = re.compile(r"(^|/)shared(/|$)")


def test_no_test_reads_from_outside_the_repository():
    found = []
    for path in sorted((REPO / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            # REPO.parent / "shared" / …, or a path through a "shared" data folder.
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "parent"
                and (isinstance(node.value, ast.Name) and node.value.id == "REPO")
            ):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: REPO.parent")
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and (SHARED_DATA.search(node.value) and "\n" not in node.value)
            ):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}")
    assert not found, "tests reach outside the repository:\n" + "\n".join(found)
