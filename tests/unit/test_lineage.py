"""Continuing from a registry version: which version ``init_from`` names, its files checked, the
shape a continued run keeps, and the lineage it records. The versions here are written the way
publish lays them out (run.json's checksums, promotion.json last), as older code wrote them:
without a lineage record."""

import hashlib
import json

import pytest

from helpers.registry import publish_by_hand
from sparklm.registry.lineage import LineageError, Parent, for_job, resolve
from sparklm.registry.versions import RegistryError
from sparklm.runtime.errors import PipelineError
from sparklm.settings import default


def test_latest_a_version_id_and_the_folder_uri_name_the_same_version(tmp_path):
    uri = publish_by_hand(tmp_path)
    registry = f"file://{tmp_path}"
    assert resolve("latest", registry, "m") == resolve("v1", registry, "m") == uri
    assert resolve(uri + "/", registry, "m") == uri
    assert resolve(None, registry, "m") is None and resolve("", registry, "m") is None


def test_a_version_of_another_registry_or_model_is_refused(tmp_path):
    other = publish_by_hand(tmp_path / "other")
    with pytest.raises(LineageError, match="is not a version of 'm' in this run's registry"):
        resolve(other, f"file://{tmp_path / 'mine'}", "m")
    with pytest.raises(LineageError, match="is not a version of 'n'"):
        resolve(other, f"file://{tmp_path / 'other'}", "n")


def test_latest_without_a_promoted_version_says_what_to_publish_first(tmp_path):
    publish_by_hand(tmp_path, latest=False)
    with pytest.raises(RegistryError, match="no promoted version of 'm'"):
        resolve("latest", f"file://{tmp_path}", "m")


def test_a_missing_version_is_refused_naming_it(tmp_path):
    publish_by_hand(tmp_path)
    with pytest.raises(LineageError, match=r"no published version at .*/m/v9 \(no promotion"):
        Parent.open(resolve("v9", f"file://{tmp_path}", "m"))


def test_a_version_without_weights_is_refused(tmp_path):
    uri = publish_by_hand(tmp_path)
    run_json = tmp_path / "m" / "v1" / "run.json"
    run = json.loads(run_json.read_text())
    run["artifacts"] = [a for a in run["artifacts"] if a["path"] != "model.safetensors"]
    run_json.write_text(json.dumps(run))
    with pytest.raises(LineageError, match="has no model.safetensors in its run.json"):
        Parent.open(uri)


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "tokenizer.json"])
def test_a_file_changed_after_publishing_is_refused(tmp_path, name):
    uri = publish_by_hand(tmp_path)
    path = tmp_path / "m" / "v1" / name
    path.write_bytes(path.read_bytes().replace(b"1", b"2", 1) + b" ")
    with pytest.raises(LineageError, match=f"{name} no longer matches the checksum"):
        Parent.open(uri).read(name)


def test_a_linked_version_file_is_not_followed(tmp_path):
    uri = publish_by_hand(tmp_path)
    secret = tmp_path / "secret.json"
    secret.write_text("{}")
    config = tmp_path / "m" / "v1" / "config.json"
    config.unlink()
    config.symlink_to(secret)
    with pytest.raises(PipelineError, match="symbolic link"):
        Parent.open(uri)


def test_a_continued_run_keeps_the_versions_shape(tmp_path):
    parent = Parent.open(publish_by_hand(tmp_path))
    parent.check_settings({"n_layer": default("n_layer"), "n_embd": default("n_embd")})
    parent.check_settings({"n_layer": 1, "n_embd": 16, "vocab_size": 300, "dropout": 0.3})
    parent.check_settings({"vocab_size": 512})  # what it asked for; its corpus gave 300
    with pytest.raises(LineageError) as refused:
        parent.check_settings({"n_layer": 3})
    assert str(refused.value) == (
        "the n_layer Param is 3, but version v1 (init_from) has n_layer 1: a continued run "
        "keeps its version's shape. Set n_layer to 1 or leave it at its default, or leave "
        "init_from empty to train a new model"
    )
    with pytest.raises(LineageError, match="--position is 'learned', but version v1"):
        parent.check_settings({"position": "learned"}, "--{}".format)


def test_the_lineage_counts_every_token_in_the_weights(tmp_path):
    old = Parent.open(publish_by_hand(tmp_path))  # published before lineage was recorded
    assert old.tokens_trained_total() == 8192  # its own training: metrics.csv's last row
    continued = Parent.open(publish_by_hand(
        tmp_path, "v2", lineage={"parent": {"version": "v1"}, "tokens_trained": 100,
                                 "tokens_trained_total": 8292}))  # fmt: skip
    assert continued.tokens_trained_total() == 8292
    described = continued.describe()
    assert described["version"] == "v2" and described["eval_bits_per_byte"] == 2.5
    assert described["weights_sha256"] == hashlib.sha256(
        (tmp_path / "m" / "v2" / "model.safetensors").read_bytes()).hexdigest()  # fmt: skip


def test_a_job_needs_the_version_folder_not_a_name(tmp_path):
    with pytest.raises(LineageError, match="a job needs the version folder's URI"):
        for_job("latest")
    assert for_job(None) is None
    assert for_job(publish_by_hand(tmp_path)).version == "v1"


def test_the_train_job_checks_what_the_lineage_reads_before_it_trains(tmp_path):
    """A version whose metrics.csv changed after publishing (read for the lineage of versions
    written before it was recorded) is refused when the job starts, not after its last round."""
    from types import SimpleNamespace

    from helpers.jobs import load_job

    uri = publish_by_hand(tmp_path)
    metrics = tmp_path / "m" / "v1" / "metrics.csv"
    metrics.write_bytes(metrics.read_bytes().replace(b"8192", b"9999"))
    parent = Parent.open(uri)
    args = SimpleNamespace(init_from=uri)
    upstream = {
        "run_root": "file:///run",
        "stats": {"tokenizer_from": {"sha256": parent.sha256("tokenizer.json")}},
    }
    with pytest.raises(LineageError, match="metrics.csv no longer matches the checksum"):
        load_job("train").parent_version(args, upstream)


def test_a_version_file_is_read_only_up_to_its_bound(tmp_path):
    uri = publish_by_hand(tmp_path)
    tokenizer = tmp_path / "m" / "v1" / "tokenizer.json"
    with tokenizer.open("ab") as f:
        f.truncate(20 * 2**20)  # 20 MiB: past any tokenizer the vocabulary bound allows
    with pytest.raises(PipelineError, match="tokenizer.json is larger than"):
        Parent.open(uri).read("tokenizer.json")


@pytest.mark.parametrize(("content", "problem"),
                         [(b'{"pointer": ', "is damaged, not JSON"),
                          (b'["v1"]', "is damaged: it holds a list, not an object")])  # fmt: skip
def test_a_damaged_promotion_record_is_refused_naming_it_and_the_fix(tmp_path, content, problem):
    uri = publish_by_hand(tmp_path)
    (tmp_path / "m" / "v1" / "promotion.json").write_bytes(content)
    with pytest.raises(LineageError) as exc:
        Parent.open(uri)
    assert str(exc.value).startswith(f"init_from: {uri}/promotion.json {problem}")
    assert str(exc.value).endswith(": continue from another version, or republish this one")


def test_a_continued_run_reading_its_tokens_many_times_over_is_warned(tmp_path, caplog):
    """Continued on the new text alone, a version overfits it (make bench-continue): the log
    says so, and how to replay the old corpus; a run from scratch, or one reading its tokens
    a few times, is not warned."""
    import logging

    from helpers.jobs import load_job
    from sparklm.model.gpt import GPTConfig
    from sparklm.model.training import TrainConfig

    train = load_job("train")
    parent = Parent.open(publish_by_hand(tmp_path))
    model = GPTConfig(vocab_size=300, context_len=32, n_layer=1, n_head=2, n_embd=32)
    cfg = TrainConfig(partitions=2, rounds=4, local_steps=10, batch_size=4)  # 10,240 tokens read
    with caplog.at_level(logging.WARNING, logger="sparklm"):
        train.warn_of_many_passes(None, model, cfg, 100)
        train.warn_of_many_passes(parent, model, cfg, 2048)  # 5 passes: the limit
        assert not caplog.records
        train.warn_of_many_passes(parent, model, cfg, 2000)
    [record] = caplog.records
    assert record.getMessage() == (
        f"train: continuing from version {parent.version}, this run reads its 2,000 training "
        "tokens 5 times over, and a continued model overfits a small text. Give the old "
        "corpus together with the new (corpus=OLD,NEW) so that it is replayed, or lower --rounds"
    )
