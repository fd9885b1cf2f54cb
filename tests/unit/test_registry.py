"""Registry names, locations and the promotion gate."""

import math

import pytest

from helpers.corpora import write_text
from sparklm.model.evaluation import Score
from sparklm.registry.versions import (
    PROMOTION,
    RegistryError,
    check_name,
    check_registry,
    list_models,
    list_versions,
    promotion_decision,
    read_latest,
    registry_uri,
    version_uri,
    write_latest,
)
from sparklm.runtime import allowlist
from sparklm.runtime.storage import StorageError, SymlinkRefused, filesystem
from sparklm.settings import SETTINGS, SettingError


@pytest.mark.parametrize("name", ["wiki-gpt", "model_1.2", "A"])
def test_good_names(name):
    assert check_name("model name", name) == name


@pytest.mark.parametrize(
    "name", ["", "../x", "a/b", "..", ".hidden", "s3://x", "a" * 65, "a..b", "wiki-gpt\n"]
)
def test_bad_names_are_refused(name):
    with pytest.raises(RegistryError, match="invalid model name"):
        check_name("model name", name)


@pytest.mark.parametrize("name", ["a..b", "wiki-gpt\n", "../x"])
def test_the_form_and_the_registry_refuse_the_same_names(name):
    """The model-name setting (form, plan_run, --model-name) and the registry share one
    pattern: a name the registry would refuse at publish is refused before any stage runs."""
    with pytest.raises(SettingError):
        SETTINGS["model_name"].check(name)


@pytest.mark.parametrize("version", ["latest.json", "evaluation"])
def test_a_version_cannot_take_the_name_of_the_model_folders_own_entries(version):
    assert check_name("model name", version) == version  # a model may be called so
    with pytest.raises(RegistryError, match="model folder's own entries"):
        check_name("version", version)


def test_refused_names_and_versions_say_what_a_valid_one_looks_like():
    with pytest.raises(RegistryError) as refused:
        check_name("version", "latest.json")
    assert str(refused.value) == (
        "invalid version 'latest.json': latest.json, evaluation are the model folder's own "
        "entries; choose another --version"
    )
    with pytest.raises(RegistryError) as refused:
        version_uri("file:///r", "m", "../v1")
    assert str(refused.value) == (
        "invalid version '../v1': use 1-64 letters, digits, '.', '_' or '-', starting with a "
        "letter or digit (no '/', no '..')"
    )
    with pytest.raises(RegistryError, match=r"^invalid model name 'a/b': use 1-64"):
        version_uri("file:///r", "a/b", "v1")


def test_a_registry_is_an_s3_or_file_uri_without_dot_segments_or_a_trailing_slash():
    assert check_registry("s3://models/registry/teamX/", None) == "s3://models/registry/teamX"
    assert check_registry("s3://models/", None) == "s3://models"  # a whole bucket too
    with pytest.raises(RegistryError, match=r"^registry 's3://models/\./x' contains '\.\.' or"):
        check_registry("s3://models/./x", None)
    with pytest.raises(RegistryError, match=r"^registry 'pkg://gensim/x' must be an s3:// or "
                       "file:// URI$"):  # fmt: skip
        check_registry("pkg://gensim/x", None)
    with pytest.raises(RegistryError) as refused:
        check_registry("s3://other/registry", ["s3://models/registry"])
    assert str(refused.value) == (
        "registry 's3://other/registry' is outside the allowed locations "
        "['s3://models/registry']: choose a registry under one of them, or have the deployment "
        "add it to the llm_registry_allowed_prefixes Variable (--allowed-registry-prefixes, "
        "LLM_REGISTRY_ALLOWED_PREFIXES)"
    )


@pytest.mark.parametrize("check", [registry_uri, lambda uri: check_registry(uri, None)])
def test_a_registry_with_glob_characters_is_refused_naming_them(check):
    """Publish clears a version folder of its registry; s3fs would read these characters as a
    pattern there. (``registry_uri`` is also generate's ``--registry``.)"""
    with pytest.raises(StorageError) as refused:
        check("s3://models/reg-[a]?")
    assert str(refused.value) == (
        "registry 's3://models/reg-[a]?' contains the glob characters '?', '[', which storage "
        "would match against other folders' names: choose a registry without '*', '?' or '['"
    )


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
LATEST = {"version": "v1", "val_bpb": 9.0}  # its own split's number: never compared


def decide(candidate, latest_bpb, latest=LATEST, tolerance=0.0, metrics=METRICS, problem=None,
           baseline=3.0):  # fmt: skip
    score = None if candidate is None else Score(candidate, 0.0, 0, 0, baseline)
    return promotion_decision(metrics, latest, tolerance, candidate=score, latest_bpb=latest_bpb,
                              problem=problem)  # fmt: skip


def test_a_first_version_must_be_within_the_tolerance_of_the_unigram_baseline():
    promoted, reason = decide(2.5, None, latest=None)
    assert promoted and "2.5000 bits/byte on the evaluation set <= its unigram baseline" in reason
    promoted, reason = decide(32.0, None, latest=None)  # lr = 50: it learned nothing
    assert not promoted and "worse than the set's unigram baseline (3.0000" in reason
    assert "Published, not promoted" in reason
    assert decide(3.4, None, latest=None, tolerance=0.5)[0]
    assert not decide(2.5, None, latest=None, baseline=math.nan)[0]
    # Once there is a latest, the baseline plays no part: the latest is the bar.
    assert decide(3.5, 3.6, baseline=1.0)[0]


def test_the_gate_compares_scores_on_the_evaluation_set_only():
    assert decide(1.9, 2.0)[0]
    assert decide(2.0, 2.0)[0]
    promoted, reason = decide(2.1, 2.0)
    assert not promoted and "worse than latest version v1 (2.0000 on the same bytes)" in reason
    assert decide(2.1, 2.0, tolerance=0.2)[0]
    # Validation bits/byte of the two runs (2.0 against 9.0 here) plays no part.
    assert not decide(2.1, 2.0, metrics={**METRICS, "val_bpb": 0.1})[0]


def test_an_unscored_candidate_or_latest_is_never_promoted():
    promoted, reason = decide(None, None, latest=None, problem="the set is missing")
    assert not promoted and reason == "the set is missing"
    assert not decide(None, 2.0)[0]
    assert not decide(math.inf, 2.0)[0]
    promoted, reason = decide(1.0, None)
    assert not promoted and "no score to compare with" in reason


def test_non_finite_metrics_block_promotion_even_for_a_first_version():
    promoted, reason = decide(1.0, None, latest=None, metrics={**METRICS, "val_loss": math.nan})
    assert not promoted and "val_loss" in reason
    nan_both = {"val_bpb": math.inf, "val_loss": math.nan}
    assert decide(1.0, 2.0, metrics=nan_both) == (False, "non-finite metrics: val_bpb, val_loss")


def test_a_candidate_whose_evaluation_score_is_nan_is_refused_saying_so():
    assert decide(math.nan, 2.0) == (False, "bits/byte on the evaluation set is nan")
    assert decide(math.nan, None, latest=None) == (False, "bits/byte on the evaluation set is nan")


def test_a_first_version_exactly_at_the_baseline_plus_tolerance_is_promoted():
    assert decide(3.25, None, latest=None, baseline=3.0, tolerance=0.25)[0]
    promoted, reason = decide(3.5, None, latest=None, baseline=3.0, tolerance=0.25)
    assert not promoted and reason.endswith(
        "Published, not promoted: train longer, or on more text"
    )


def published(tmp_path, uri_of_version):
    """A registry with one version of model ``m`` whose latest.json says ``uri_of_version``."""
    registry = f"file://{tmp_path / 'registry'}"
    write_latest(registry, "m", {"version": "v1", "uri": uri_of_version(registry), "val_bpb": 2.0})
    return registry


def test_latest_is_followed_into_its_own_registry_only(tmp_path):
    registry = published(tmp_path, lambda r: f"{r}/m/v1")
    assert read_latest(registry, "m")["version"] == "v1"
    for outside in (f"file://{tmp_path}/elsewhere/m/v1", f"file://{tmp_path}/registry/m/v2",
                    f"file://{tmp_path}/registry/m/v1/../../../x", "s3://other/m/v1"):  # fmt: skip
        registry = published(tmp_path, lambda r, uri=outside: uri)
        with pytest.raises(RegistryError, match="not a version folder of its own registry"):
            read_latest(registry, "m")


def test_a_pointer_followed_nowhere_names_what_it_says_where_it_must_point_and_the_fix(tmp_path):
    registry = published(tmp_path, lambda r: "s3://other/m/v1")
    with pytest.raises(RegistryError) as refused:
        read_latest(registry, "m")
    assert str(refused.value) == (
        f"{registry}/m/latest.json points at 's3://other/m/v1', which is not a version folder "
        f"of its own registry ({registry}/m/VERSION): the pointer was edited or copied from "
        "another registry. Republish the model, or fix the pointer's uri"
    )


@pytest.mark.parametrize(
    "pointer", [{"version": "v1"}, {"uri": "x"}, {"version": "../v1", "uri": "x"}]
)
def test_a_pointer_without_a_version_and_uri_of_its_own_registry_is_refused(tmp_path, pointer):
    registry = f"file://{tmp_path / 'registry'}"
    write_latest(registry, "m", pointer)
    with pytest.raises(RegistryError, match="not a version folder of its own registry"):
        read_latest(registry, "m")


def test_no_promoted_version_is_an_error_naming_the_missing_pointer_and_the_task_to_run(tmp_path):
    registry = f"file://{tmp_path / 'registry'}"
    with pytest.raises(RegistryError) as missing:
        read_latest(registry, "m")
    assert str(missing.value) == (
        f"no promoted version of 'm' in {registry}: {registry}/m/latest.json is missing; run "
        "the pipeline's publish task (or check --registry and --model-name)"
    )


@pytest.mark.parametrize("read", [read_latest, list_versions])
def test_readers_refuse_a_bad_model_name_calling_it_a_model_name(tmp_path, read):
    with pytest.raises(RegistryError, match=r"^invalid model name '\.\./m': use 1-64"):
        read(f"file://{tmp_path}", "../m")


def test_only_complete_versions_with_valid_names_are_listed(tmp_path):
    """A version is listed once its promotion.json (written last) exists; folders whose names
    no version can take are not versions, complete or not."""
    model = tmp_path / "registry" / "m"
    for folder, complete in [("v2", True), ("v1", True), ("v3-crashed", False),
                             ("evaluation", True), ("-bad", True), ("bad name", True)]:  # fmt: skip
        (model / folder).mkdir(parents=True)
        if complete:
            write_text(model / folder / PROMOTION, "{}")
    assert list_versions(f"file://{tmp_path / 'registry'}", "m") == ["v1", "v2"]

    registry = published(tmp_path, lambda r: f"{r}/m/v1")
    elsewhere = write_text(tmp_path / "elsewhere.json", "{}")
    latest = tmp_path / "registry" / "m" / "latest.json"
    latest.unlink()
    latest.symlink_to(elsewhere)
    with pytest.raises(SymlinkRefused, match="latest.json is a symbolic link"):
        read_latest(registry, "m")
    with pytest.raises(SymlinkRefused):
        write_latest(registry, "m", {"version": "v2", "uri": f"{registry}/m/v2"})
    assert elsewhere.read_text() == "{}"


def test_the_models_of_a_registry_are_its_folders_named_as_a_model_can_be_sorted(tmp_path):
    """What the Models view lists: one entry per model folder, under the folder's own name
    (the name its latest.json and versions are read under); files and folders that no model
    can be called (they could never have been published) are left out."""
    registry = tmp_path / "registry"
    for folder in ["wiki-gpt", "GPT-X", "A1", "-bad", "bad name", "m ", "a..b", ".hidden"]:
        (registry / folder).mkdir(parents=True)
    write_text(registry / "notes.txt", "not a model")
    assert list_models(f"file://{registry}") == ["A1", "GPT-X", "wiki-gpt"]
    assert list_models(f"file://{tmp_path / 'no-registry-yet'}") == []


def test_a_folder_whose_name_ends_in_a_newline_is_not_listed_as_a_model(tmp_path):
    """The name pattern ends in ``$``, which also matches before a final newline: such a
    folder must not be listed as a model that check_name (and so every page) refuses."""
    (tmp_path / "m").mkdir()
    (tmp_path / "m\n").mkdir()
    assert list_models(f"file://{tmp_path}") == ["m"]


@pytest.mark.parametrize(
    ("uri", "prefixes", "allowed"),
    [
        ("s3://b/corpora/x.txt", "s3://b/corpora/", True),
        ("s3://b/corpora", "s3://b/corpora", True),
        ("s3://b/corpora-evil/x.txt", "s3://b/corpora", False),
        ("/data/books/*.txt.gz", "/data/books/*.txt.gz", True),
        ("/data/books/../secret.txt", "/data/books", False),
        ("file:///data/a.txt", "/data", True),
        ("pkg://gensim/test/test_data/x.bz2", "pkg://gensim/test/test_data/", True),
        ("pkg://gensim/test/test_data/../../x", "pkg://gensim/test/test_data/", False),
        ("s3://anything/x", "*", True),
        ("s3://b/x", "", False),
    ],
)  # fmt: skip
def test_allow_lists_match_whole_segments(uri, prefixes, allowed):
    assert allowlist.is_allowed(uri, allowlist.parse(prefixes)) is allowed


def test_allow_lists_fall_back_to_the_environment_then_anywhere(monkeypatch):
    monkeypatch.delenv(allowlist.CORPUS_ENV, raising=False)
    assert allowlist.parse(None, allowlist.CORPUS_ENV) is None
    monkeypatch.setenv(allowlist.CORPUS_ENV, "")
    assert allowlist.parse(None, allowlist.CORPUS_ENV) is None
    monkeypatch.setenv(allowlist.CORPUS_ENV, "s3://b/c")
    assert allowlist.parse(None, allowlist.CORPUS_ENV) == ["s3://b/c"]
    with pytest.raises(allowlist.NotAllowed, match="llm_corpus_allowed_prefixes"):
        allowlist.check_corpus(["s3://b/c/x.txt", "s3://b/d.txt"], None)


@pytest.mark.parametrize("spec", ["link", "link/*.txt", "link/s.txt", "real/link/s.txt"])
def test_a_corpus_reached_through_a_link_below_an_allowed_prefix_is_refused(tmp_path, spec):
    """A link inside an allowed folder would make the prefix allow whatever it points to."""
    write_text(tmp_path / "outside" / "s.txt", "secret\n")
    (tmp_path / "allowed" / "real").mkdir(parents=True)
    for at in ("link", "real/link"):
        (tmp_path / "allowed" / at).symlink_to(tmp_path / "outside", target_is_directory=True)
    link = tmp_path / "allowed" / ("real/link" if spec.startswith("real/") else "link")
    with pytest.raises(allowlist.NotAllowed) as refused:
        allowlist.check_corpus([f"{tmp_path}/allowed/{spec}"], f"file://{tmp_path}/allowed")
    assert str(refused.value) == (
        f"corpus '{tmp_path}/allowed/{spec}' goes through the symbolic link {link} (to "
        f"{tmp_path}/outside) below the allowed location file://{tmp_path}/allowed: a link there "
        "could lead reads anywhere. Name the folder it points to instead, if that is allowed, or "
        "replace the link with a real folder"
    )


def test_links_at_or_above_an_allowed_prefix_and_real_folders_below_it_are_accepted(tmp_path):
    write_text(tmp_path / "data" / "corpus" / "a.txt", "text\n")
    (tmp_path / "linked").symlink_to(tmp_path / "data", target_is_directory=True)
    specs = [f"{tmp_path}/linked/corpus", f"{tmp_path}/linked/corpus/*.txt",
             f"{tmp_path}/linked/corpus/a.txt"]  # fmt: skip
    allowlist.check_corpus(specs, f"file://{tmp_path}/linked")  # the deployment's own link
    allowlist.check_corpus(specs, f"file://{tmp_path}/linked/corpus")
    allowlist.check_corpus(specs, f"file://{tmp_path}/elsewhere,file://{tmp_path}/linked")
    allowlist.check_corpus([f"{tmp_path}/data/corpus/a.txt"], f"file://{tmp_path}/data")


def test_a_link_is_fine_when_another_allowed_prefix_reaches_the_corpus_without_one(tmp_path):
    write_text(tmp_path / "outside" / "s.txt", "text\n")
    (tmp_path / "allowed").mkdir()
    (tmp_path / "allowed" / "link").symlink_to(tmp_path / "outside", target_is_directory=True)
    allowlist.check_corpus([f"{tmp_path}/allowed/link/s.txt"],
                           f"file://{tmp_path}/allowed,file://{tmp_path}/allowed/link")  # fmt: skip


def test_an_s3_registry_lists_its_model_folders_and_no_phantom_of_itself(
    aws_api_server, monkeypatch
):
    """On AWS S3 a folder is a key prefix: a key with an empty segment (``registry//x``, which
    any other S3 client can write) lists the registry's own prefix among its folders; that is
    not a model named after the registry. (The tests' SeaweedFS folds ``//``; moto's S3, like
    AWS's, keeps it.)"""
    from s3fs import S3FileSystem

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", aws_api_server)
    monkeypatch.setattr(S3FileSystem, "_cache", {})  # a fresh instance, on moto's endpoint
    fs, _ = filesystem("s3://registry-bucket/registry")
    fs.mkdir("registry-bucket")
    fs.pipe({"registry-bucket/registry/wiki-gpt/v1/config.json": b"{}",
             "registry-bucket/registry//stray": b""})  # fmt: skip
    assert list_models("s3://registry-bucket/registry") == ["wiki-gpt"]


@pytest.mark.parametrize("content", [b'{"version": "v1", "uri', b"not json", b"[]", b'"v1"',
                                     b"\xff\xfe", b" " * (2**20 + 1)])  # fmt: skip
def test_a_damaged_latest_pointer_is_a_registry_error_naming_the_file_and_the_fix(
    tmp_path, content
):
    (tmp_path / "registry" / "m").mkdir(parents=True)
    (tmp_path / "registry" / "m" / "latest.json").write_bytes(content)
    with pytest.raises(RegistryError, match=r"m/latest\.json is damaged.*restore it from"):
        read_latest(f"file://{tmp_path / 'registry'}", "m")


def test_a_latest_pointer_that_is_not_a_regular_file_is_never_read(tmp_path):
    """A FIFO named latest.json would block the reader (the Models view's request) for ever."""
    import os

    (tmp_path / "registry" / "m").mkdir(parents=True)
    os.mkfifo(tmp_path / "registry" / "m" / "latest.json")
    with pytest.raises(RegistryError, match=r"m/latest\.json is damaged"):
        read_latest(f"file://{tmp_path / 'registry'}", "m")
