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


DAMAGED_POINTERS = {"truncated": b'{"sha256": "ab', "not JSON": b"\xff\xfe not json",
                    "a list": b"[]", "without its checksum": b'{"source": "x"}'}  # fmt: skip


@pytest.mark.parametrize("content", DAMAGED_POINTERS.values(), ids=DAMAGED_POINTERS)
def test_a_damaged_pointer_is_the_sets_own_error_naming_the_file_and_the_fix(tmp_path, content):
    registry = f"file://{tmp_path}"
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "evaluation.json").write_bytes(content)
    with pytest.raises(EvalSetError, match=r"m/evaluation\.json is damaged.*restore it from"):
        eval_set.current(registry, "m")


@pytest.mark.parametrize("content", DAMAGED_POINTERS.values(), ids=DAMAGED_POINTERS)
def test_publish_does_not_promote_on_a_damaged_pointer_and_says_why(tmp_path, content):
    publish = load_job("publish")
    registry = f"file://{tmp_path / 'registry'}"
    (tmp_path / "registry" / "m").mkdir(parents=True)
    (tmp_path / "registry" / "m" / "evaluation.json").write_bytes(content)
    args = publish.parse_args(["--run-root", f"file://{tmp_path / 'run'}", "--registry",
                               registry, "--model-name", "m"])  # fmt: skip
    chosen, problem = publish.choose_evaluation_set(args, registry, "m", {})
    assert chosen is None
    assert problem.startswith("the candidate cannot be scored on the registry's evaluation set: ")
    assert "evaluation.json is damaged" in problem


def damage_the_latest(registry, how: str) -> None:
    """Damage version v1 (written by ``publish_by_hand``) so that it cannot be scored."""
    import hashlib

    from helpers.registry import CONFIG
    from sparklm.data.tokenizer import train_from_counts
    from sparklm.model.gpt import GPT
    from sparklm.model.weights import model_bytes

    folder = registry / "m" / "v1"
    if how == "run.json of another shape":
        (folder / "run.json").write_text("[1]")
        return
    files = {"tokenizer.json": train_from_counts({"hello": 5, " world": 3}, 300).to_str().encode()}
    if how == "weights that do not fit config.json":
        two_layers = GPT(type(CONFIG)(**{**CONFIG.to_dict(), "n_layer": 2}))
        files["model.safetensors"] = model_bytes(two_layers)
    elif how == "a tokenizer.json tokenizers cannot read":
        files["tokenizer.json"] = b'{"fake": "tokenizer"}'
    for name, data in files.items():
        (folder / name).write_bytes(data)
    run = json.loads((folder / "run.json").read_text())
    for artifact in run["artifacts"]:
        if artifact["path"] in files:
            artifact["sha256"] = hashlib.sha256(files[artifact["path"]]).hexdigest()
    (folder / "run.json").write_text(json.dumps(run))


@pytest.mark.parametrize("how", ["run.json of another shape", "weights that do not fit config.json",
                                 "a tokenizer.json tokenizers cannot read"])  # fmt: skip
def test_a_latest_version_that_cannot_be_scored_is_a_reason_not_a_crash(tmp_path, how):
    """The gate scores the current latest too: whatever is wrong with its files is the reason
    the candidate is not promoted (the candidate is still published), never a traceback."""
    from helpers.registry import publish_by_hand

    publish = load_job("publish")
    publish_by_hand(tmp_path)
    damage_the_latest(tmp_path, how)
    score, reason = publish.score_published(f"file://{tmp_path}", "m", "v1",
                                            capped(["hello world"], "test", 100))  # fmt: skip
    assert score is None and reason.startswith("the current latest v1 cannot be scored")
