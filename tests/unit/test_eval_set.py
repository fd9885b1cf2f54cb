"""The registry's evaluation set: capped whole documents, exact bytes, checked on read."""

import gzip
import json

import pytest

from helpers.jobs import load_job
from sparklm.registry import eval_set
from sparklm.registry.eval_set import EvalSetError, capped
from sparklm.runtime import storage
from sparklm.runtime.allowlist import NotAllowed
from sparklm.runtime.storage import StorageError, SymlinkRefused

HOSTILE = ["first line\nsecond line", "emoji 👩\u200d👩\u200d👧, \"quotes\" and \\ slashes",
           "combining e\u0301 and \u0915\u094d\u0937", "trailing newline\n",
           "\u2028 separators"]  # fmt: skip


def test_documents_survive_the_file_exactly_and_the_checksum_is_of_those_bytes():
    s = capped(HOSTILE, "test", 10_000)
    again = eval_set.parse(s.data, "again")
    assert again.documents == tuple(HOSTILE)
    assert again.sha256 == s.sha256 and s.data.count(b"\n") == len(HOSTILE)
    assert s.text_bytes == sum(len(d.encode()) for d in HOSTILE)


def test_the_cap_keeps_whole_documents_and_cuts_the_crossing_one_at_a_line_break():
    docs = ["a" * 40, "b" * 40, "c" * 10 + "\n" + "d" * 30]
    s = capped(docs, "test", 95)
    assert s.documents == ("a" * 40, "b" * 40, "c" * 10) and s.truncated
    assert capped(docs, "test", 200).documents == tuple(docs)
    assert not capped(docs, "test", 200).truncated
    one_line = capped(["x" * 1000], "one line", 100)  # a single line longer than the cap
    assert one_line.documents == ("x" * 100,)
    with pytest.raises(EvalSetError, match="holds no text"):
        capped(["", ""], "empty", 100)


def test_explicit_input_reads_text_and_json_lines(tmp_path):
    (tmp_path / "a.txt").write_text("plain text\nfile", encoding="utf-8")
    records = [{"text": "record one"}, {"text": "record two"}]
    (tmp_path / "b.jsonl.gz").write_bytes(
        gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode())
    )
    s = eval_set.from_input([str(tmp_path / "*")], 1000)
    assert s.documents == ("plain text\nfile", "record one", "record two")
    with pytest.raises(StorageError, match="no input file matches"):
        eval_set.from_input([str(tmp_path / "missing.txt")], 1000)


def test_a_stored_set_is_read_back_only_while_it_matches_its_checksum(tmp_path):
    registry = f"file://{tmp_path}"
    s = capped(HOSTILE, "test", 10_000)
    eval_set.store(registry, "m", s)
    eval_set.put_in_force(registry, "m", s.describe())
    pointer = eval_set.current(registry, "m")
    assert pointer["sha256"] == s.sha256
    assert eval_set.load(registry, "m", pointer).documents == s.documents
    stored = tmp_path / "m" / "evaluation" / f"{s.sha256}.jsonl"
    stored.write_bytes(stored.read_bytes() + b'{"text": "tampered"}\n')
    with pytest.raises(EvalSetError, match="no longer matches its checksum"):
        eval_set.load(registry, "m", pointer)
    stored.unlink()
    with pytest.raises(EvalSetError, match="is missing"):
        eval_set.load(registry, "m", pointer)
    assert storage.exists(eval_set.pointer_uri(registry, "m"))


def test_the_set_and_its_pointer_are_never_read_or_written_through_a_link(tmp_path):
    registry, elsewhere = tmp_path / "registry", tmp_path / "elsewhere"
    s = capped(HOSTILE, "test", 10_000)
    eval_set.store(f"file://{elsewhere}", "m", s)
    eval_set.put_in_force(f"file://{elsewhere}", "m", s.describe())
    (registry / "m").mkdir(parents=True)
    (registry / "m" / "evaluation.json").symlink_to(elsewhere / "m" / "evaluation.json")
    uri = f"file://{registry}"
    with pytest.raises(SymlinkRefused, match="symbolic link"):
        eval_set.current(uri, "m")
    with pytest.raises(SymlinkRefused):
        eval_set.put_in_force(uri, "m", s.describe())
    (registry / "m" / "evaluation.json").unlink()
    (registry / "m" / "evaluation").symlink_to(elsewhere / "m" / "evaluation")
    for call in (lambda: eval_set.current(uri, "m"), lambda: eval_set.store(uri, "m", s),
                 lambda: eval_set.load(uri, "m", s.describe())):  # fmt: skip
        with pytest.raises(SymlinkRefused):
            call()
    assert (elsewhere / "m" / "evaluation.json").read_text().count(s.sha256) == 2


def test_publish_reads_an_explicit_set_only_under_the_corpus_allow_list(tmp_path):
    publish = load_job("publish")
    (tmp_path / "allowed").mkdir()
    (tmp_path / "allowed" / "eval.txt").write_text("held-out text", encoding="utf-8")
    (tmp_path / "secret.txt").write_text("not the pipeline's to read", encoding="utf-8")
    registry = f"file://{tmp_path / 'registry'}"

    def choose(eval_input):
        args = publish.parse_args(
            [
                "--run-root",
                f"file://{tmp_path / 'run'}",
                "--registry",
                registry,
                "--model-name",
                "m",
                "--eval-input",
                eval_input,
                "--allowed-corpus-prefixes",
                f"file://{tmp_path}/allowed/",
            ]
        )
        return publish.choose_evaluation_set(args, registry, "m", {})  # fmt: skip

    chosen, problem = choose(str(tmp_path / "allowed" / "eval.txt"))
    assert chosen.documents == ("held-out text",) and problem is None
    with pytest.raises(NotAllowed, match="outside the allowed locations"):
        choose(str(tmp_path / "secret.txt"))
