"""The pipeline's Spark jobs, defined once for both ways of running them.

Local mode turns each job into a SparkSubmitOperator; EMR mode turns the same
list into ``command-runner.jar spark-submit`` steps. Arguments are Jinja
templates that Airflow renders in either mode, so a flag added here reaches
both and the modes cannot drift.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sparklm import settings

# Stands for a Jinja expression for the run's plan (plan_run's result: locations and
# allow-lists), which the DAG names by the task object (``xcom(planned)``), not by a task id.
PLAN = "PLAN"
RUN_ROOT = f"{{{{ {PLAN}['run_root'] }}}}"
REGISTRY = f"{{{{ {PLAN}['registry'] }}}}"
# The version folder a continued run starts from ('' for none), resolved once by plan_run.
INIT_FROM = {"init_from": f"{{{{ {PLAN}.get('init_from') or '' }}}}"}
# The deployment's allow-lists, fixed by plan_run and enforced again by the jobs (EMR too).
CORPUS_PREFIXES = f"{{{{ {PLAN}['corpus_prefixes'] }}}}"
REGISTRY_PREFIXES = f"{{{{ {PLAN}['registry_prefixes'] }}}}"
# Stands for a Jinja expression naming where the job scripts live: the local jobs/ folder,
# or the jobs/ folder of the code bundle uploaded for EMR (known only at run time).
CODE_ROOT = "CODE_ROOT"
# The seed prompts shipped with the code. The DAG names them when the prompts_uri Param is
# empty: on EMR spark-submit runs a downloaded copy of the script, with no conf/ beside it.
SHIPPED_PROMPTS = f"{CODE_ROOT} ~ '/{settings.SHIPPED_PROMPTS}'"
# generate's corpus allow-list: the deployment's, plus the shipped prompts (the code's own file).
GENERATE_CORPUS_PREFIXES = (
    f"{{{{ {PLAN}['corpus_prefixes'] if {PLAN}['corpus_prefixes'].strip() == '*' "
    f"else {SHIPPED_PROMPTS} ~ ',' ~ {PLAN}['corpus_prefixes'] }}}}"
)
# Where an EMR node keeps the jobs' virtualenv and, in it, their conf/ folder (the bootstrap
# action puts both there).
EMR_NODE_VENV = "/usr/local/llm-venv"
# A command-line flag and the Jinja template of its value.
Flag = tuple[str, str]


def xcom(task: Any) -> str:
    """A Jinja expression for what ``task`` (an operator, or a TaskFlow call's XComArg)
    returned. The id comes from the task object, so renaming the task cannot leave a stale
    id in a template: a reference to a task that no longer exists fails when the DAG parses."""
    operator = getattr(task, "operator", task)
    return f"ti.xcom_pull(task_ids={operator.task_id!r})"


def setting_flags(stage: str, templates: Mapping[str, str] | None = None) -> tuple[Flag, ...]:
    """``--flag {{ params.name }}`` for every Param the stage takes (``sparklm.settings``;
    settings the form does not show keep the job's default). An empty optional value renders
    as ``''``, which the job reads as "not given"; a list renders as JSON. ``templates``
    replaces the template of the settings it names."""
    flags = []
    for s in settings.for_stage(stage):
        if not s.section:
            continue
        value = f"params.{s.name}"
        if s.kind == "array":
            value += " | tojson"
        elif s.optional:
            value = f"{value} if {value} is not none else ''"
        template = (templates or {}).get(s.name, f"{{{{ {value} }}}}")
        flags.append((s.cli_flag, template))
    return tuple(flags)


def spark_conf(conf_dir: str) -> dict[str, str]:
    """Spark's configuration for every job, the same in both modes (the local operators' conf,
    ``--conf`` flags in each EMR step). ``conf_dir`` is the jobs' ``conf/`` folder on the
    driver's machine. The shuffle width is deliberately absent: each job sets it from its task
    slots when nobody else did (``sparklm.runtime.entrypoint.spark_session``)."""
    return {
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.extraJavaOptions": (
            f"-Dlog4j2.configurationFile=file:{conf_dir}/log4j2.properties"
        ),
    }


@dataclass(frozen=True)
class SparkJob:
    """One stage: its entry script under ``jobs/``, its templated command-line flags and
    how the DAG runs it (both modes read these; nothing else special-cases a stage)."""

    stage: str
    script: str
    flags: tuple[Flag, ...] = ()
    # Local-mode task retries (transient faults; a job's bad-input exit is never retried).
    retries: int = 1
    # How long the stage may run, in either mode: the local task's execution_timeout and the
    # EMR step watcher's timeout (LLM_TIMEOUT_HOURS_<STAGE> overrides it; see ``timeout``).
    timeout_hours: float = 4
    # Whether a successful run of this stage updates the model Asset (either mode).
    publishes_model: bool = False

    def timeout(self, environ: Mapping[str, str]) -> timedelta:
        """How long the stage may run: ``timeout_hours``, or the deployment's
        ``LLM_TIMEOUT_HOURS_<STAGE>`` (e.g. ``LLM_TIMEOUT_HOURS_TRAIN=96`` for a long run). A task
        that hangs (a stuck read, a job far larger than planned) then fails instead of holding
        the DAG, whose runs go one at a time, for ever."""
        hours = environ.get(f"LLM_TIMEOUT_HOURS_{self.stage.upper()}", "")
        return timedelta(hours=float(hours) if hours else self.timeout_hours)

    def arguments(self, code_root: str, plan: str) -> list[str]:
        """The job's arguments after the script path, ``--run-root`` first.

        ``code_root`` is a Jinja expression for the jobs folder, e.g. ``'/opt/llm/jobs'``;
        ``plan`` one for the run's plan, e.g. ``xcom(planned)``.
        """
        expressions = {CODE_ROOT: code_root, PLAN: plan}
        pattern = re.compile("|".join(map(re.escape, expressions)))
        args = []
        for flag, value in (("--run-root", RUN_ROOT), *self.flags):
            args += [flag, pattern.sub(lambda m: expressions[m.group()], value)]
        return args


PIPELINE: tuple[SparkJob, ...] = (
    SparkJob("preprocess", "preprocess.py", (
        ("--allowed-corpus-prefixes", CORPUS_PREFIXES),
        *setting_flags("preprocess"),
    )),
    SparkJob("tokenize", "tokenize_corpus.py", setting_flags("tokenize", INIT_FROM)),
    # A killed train task resumes from its last checkpointed round when retried (local mode;
    # on EMR a failed step is final, see EmrStepWatcher).
    SparkJob("train", "train.py", setting_flags("train", INIT_FROM), retries=3,
             timeout_hours=48),
    SparkJob("generate", "generate.py", (
        ("--allowed-corpus-prefixes", GENERATE_CORPUS_PREFIXES),
        *setting_flags("generate", {
            "prompts_uri": f"{{{{ params.prompts_uri or {SHIPPED_PROMPTS} }}}}",
        }),
    ), timeout_hours=2),
    SparkJob("publish", "publish.py", (
        ("--registry", REGISTRY),
        ("--allowed-registry-prefixes", REGISTRY_PREFIXES),
        ("--allowed-corpus-prefixes", CORPUS_PREFIXES),
        ("--dag-run-id", "{{ run_id }}"),
        *setting_flags("publish"),
    ), timeout_hours=1, publishes_model=True),
)  # fmt: skip
assert tuple(job.stage for job in PIPELINE) == settings.STAGES
