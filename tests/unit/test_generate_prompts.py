"""The generate job's prompts: the seed prompts shipped beside it, and a user's file only
under the corpus allow-list (its lines end up in the registry)."""

import jinja2
import pytest

from helpers.jobs import load_job
from helpers.paths import JOBS
from llm_pipeline.pipeline import PIPELINE
from sparklm.runtime import allowlist, entrypoint

SHIPPED = [line.strip() for line in (JOBS / "conf" / "prompts.txt").read_text().splitlines()
           if line.strip()]  # fmt: skip


def prompts_of(generate, argv):
    args = generate.parse_args(argv)
    prompts, _ = generate.load_prompts(args.prompts_uri, args.prompt, args.allowed_corpus_prefixes)
    return prompts


def test_the_job_alone_samples_the_prompts_shipped_beside_it(tmp_path, monkeypatch):
    generate = load_job("generate")
    monkeypatch.setenv(allowlist.CORPUS_ENV, "s3://corpora-only/")  # the code's own file passes
    run = ["--run-root", f"file://{tmp_path / 'run'}"]
    assert SHIPPED and prompts_of(generate, run) == SHIPPED
    assert prompts_of(generate, [*run, "--prompt", "Just this"]) == ["Just this"]
    shipped = (JOBS / "conf" / "prompts.txt").as_uri()  # what the manifest records they are
    assert generate.load_prompts(None, [], None)[1] == shipped
    assert generate.load_prompts(None, ["Just this"], None)[1] is None


def test_a_prompts_file_outside_the_corpus_allow_list_is_refused_before_it_is_read(
    tmp_path, monkeypatch, capsys
):
    generate = load_job("generate")
    (tmp_path / "allowed").mkdir()
    (tmp_path / "allowed" / "prompts.txt").write_text("Once upon\n", encoding="utf-8")
    (tmp_path / "secret.txt").write_text("not the pipeline's to read\n", encoding="utf-8")
    run = ["--run-root", f"file://{tmp_path / 'run'}"]
    allowed = ["--allowed-corpus-prefixes", f"file://{tmp_path}/allowed/"]
    assert prompts_of(
        generate, [*run, *allowed, "--prompts", str(tmp_path / "allowed" / "prompts.txt")]
    ) == ["Once upon"]
    for flags in (allowed, []):  # the flag, else the environment variable
        monkeypatch.setenv(allowlist.CORPUS_ENV, f"file://{tmp_path}/allowed/")
        with pytest.raises(SystemExit) as ended:
            entrypoint.run(generate.main,
                           [*run, *flags, "--prompts", str(tmp_path / "secret.txt")])  # fmt: skip
        assert ended.value.code == 2
        [line] = [x for x in capsys.readouterr().err.splitlines() if x.startswith("ERROR:")]
        assert "prompts file " in line and "secret.txt' is outside the allowed locations" in line
        assert "llm_corpus_allowed_prefixes" in line


@pytest.mark.parametrize("prefixes", ["s3://bkt/corpora", "*"])
def test_the_dag_passes_generate_its_allow_list_which_admits_the_shipped_prompts(prefixes):
    [job] = [job for job in PIPELINE if job.stage == "generate"]
    arguments = job.arguments("'/opt/llm/jobs'", plan="plan")
    context = {"plan": {"run_root": "s3://bkt/runs/r1", "corpus_prefixes": prefixes},
               "params": {"prompts_uri": None, "prompts": []}}  # fmt: skip
    rendered = [jinja2.Environment().from_string(a).render(**context) for a in arguments]
    flags = dict(zip(rendered, rendered[1:], strict=False))
    assert flags["--prompts"] == "/opt/llm/jobs/conf/prompts.txt"
    allowlist.check_corpus([flags["--prompts"]], flags["--allowed-corpus-prefixes"])
    widened = allowlist.parse(flags["--allowed-corpus-prefixes"])
    assert (
        widened is None
        if prefixes == "*"
        else widened == ["file:///opt/llm/jobs/conf/prompts.txt", "s3://bkt/corpora"]
    )  # that file, nothing beside it
