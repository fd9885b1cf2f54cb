"""The trigger form in headless Chromium against a real Airflow: what a user clicks.

The ``airflow_stack`` fixture runs api-server, scheduler, dag-processor and triggerer on
127.0.0.1; the ``browser`` fixture is signed in to it. Runs are followed through the REST API.
The run the form triggers asks for human approval, which a person gives (``helpers.approval``;
a rejection: tests/airflow/test_approval.py).
"""

from __future__ import annotations

import json

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.wait import WebDriverWait

from airflow_stack import DAG_ID, USER
from helpers.approval import (
    answer,
    approval_request,
    parked,
    read_json,
    run_state,
    runs_path,
    task_instance,
    wait_for,
)
from helpers.browser import WAIT_SECONDS, click, settled
from helpers.corpora import small_corpus
from helpers.jobs import SMALL_CONF
from helpers.paths import REPO
from llm_pipeline import deadline
from llm_pipeline.params import pipeline_params
from llm_pipeline.review import literal
from sparklm.runtime import storage
from sparklm.runtime.stages import read_manifest
from sparklm.settings import SECTIONS

pytestmark = pytest.mark.slow

SECTION_OF = {name: param.schema["section"] for name, param in pipeline_params().items()}


def runs(stack) -> dict[str, dict]:
    return {r["dag_run_id"]: r for r in stack.get(runs_path())["dag_runs"]}


def new_run(stack, before: dict, timeout: float = 60) -> dict:
    """The run that appears after ``before`` was listed."""
    return stack.wait_until(lambda: next((r for i, r in runs(stack).items() if i not in before),
                                         None), timeout, "a new run is listed")  # fmt: skip


def version_of(stack, run: dict) -> str:
    """The registry version a run published (its publish stage's manifest)."""
    plan = plan_of(stack, run["dag_run_id"])
    return read_manifest(plan["run_root"], "publish")["stats"]["version_uri"]


def plan_of(stack, run_id: str) -> dict:
    """What plan_run decided (its XCom): the run root and the registry."""
    return stack.get(f"{runs_path(run_id)}/taskInstances/plan_run/xcomEntries/return_value",
                     deserialize=True)["value"]  # fmt: skip


def expand(browser, section: str) -> None:
    """Open one section of the form (opening one closes the others)."""
    header = browser.find_element(By.XPATH, f"//button[normalize-space(.)='{section}']")
    if header.get_attribute("aria-expanded") != "true":
        click(browser, header)
    WebDriverWait(browser, WAIT_SECONDS).until(
        lambda _: header.get_attribute("aria-expanded") == "true"
    )


def show_section(browser, section: str) -> None:
    """Open ``section`` and wait until it has finished unfolding (for a clean screenshot)."""
    last = field(browser, [n for n, s in SECTION_OF.items() if s == section][-1])
    following = SECTIONS[SECTIONS.index(section) + 1]
    header = browser.find_element(By.XPATH, f"//button[normalize-space(.)='{following}']")
    WebDriverWait(browser, WAIT_SECONDS).until(
        lambda _: header.location["y"] > last.location["y"] + last.size["height"]
    )
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'})",
                           browser.find_element(By.XPATH, "//button[normalize-space(.)="
                                                f"'{section}']"))  # fmt: skip


def field(browser, name: str):
    """The form field of Param ``name``, its section opened and the field settled."""
    expand(browser, SECTION_OF[name])
    return settled(browser, browser.find_element(By.NAME, f"element_{name}"))


def type_into(browser, element, value) -> None:
    """Replace a field's text as a user does: select all, type, check it, leave the field.

    Text goes one key at a time: sent as one burst, a long text lost a keystroke in this
    form (one around the 50th); typed key by key, none is lost. Numbers go in one burst:
    the number field turns a lone "-" into "NaN", which a busy browser still shows now and
    then; the value is read back and, if it differs, typed again.
    """
    text = str(value)
    for _ in range(3):
        click(browser, element)
        element.send_keys(Keys.CONTROL, "a")
        for keys in [text] if element.get_attribute("role") == "spinbutton" else text:
            element.send_keys(keys)
        if element.get_attribute("value") == text:
            break
    assert element.get_attribute("value") == text
    element.send_keys(Keys.TAB)


def turn_on(browser, name: str) -> None:
    """Turn a boolean Param's switch on by clicking it, as a user does (the checkbox itself
    is hidden inside the switch's label)."""
    expand(browser, SECTION_OF[name])
    checkbox = browser.find_element(By.NAME, f"element_{name}")
    if not checkbox.is_selected():
        click(browser, checkbox.find_element(By.XPATH, "./ancestor::label[1]"))
    WebDriverWait(browser, WAIT_SECONDS).until(lambda _: checkbox.is_selected())


def trigger_button(browser):
    """The dialog's submit button (the page's own button is labelled "Trigger Dag")."""
    return browser.find_element(By.XPATH, "//button[normalize-space(.)='Trigger' "
                                          "and not(@aria-label)]")  # fmt: skip


def open_trigger_form(browser, stack) -> None:
    browser.get(f"{stack.url}/dags/{DAG_ID}")
    click(browser, browser.find_element(By.CSS_SELECTOR, "button[aria-label='Trigger Dag']"))
    settled(browser, trigger_button(browser))


def test_a_run_triggered_from_the_form_waits_for_a_person_who_approves_it(
    airflow_stack, browser, made_run, tmp_path
):
    stack = airflow_stack
    corpus = small_corpus(tmp_path / "corpus", documents=30)
    latest = f"{made_run['registry']}/{made_run['model']}/latest.json"
    before = runs(stack)
    open_trigger_form(browser, stack)
    # The defaults alone make a valid form: nothing required is empty.
    headers = browser.find_elements(By.XPATH, "//button[@aria-expanded]")
    assert [h.text for h in headers if h.text in SECTIONS] == list(SECTIONS)
    assert trigger_button(browser).is_enabled()
    assert field(browser, "run_root").get_attribute("value") == ""

    # The form keeps numbers within their minimum/maximum as you type: no negative rate.
    type_into(browser, field(browser, "lr"), -1)
    assert field(browser, "lr").get_attribute("value") == "0"
    type_into(browser, field(browser, "lr"), 0.003)

    type_into(browser, field(browser, "corpus"), corpus)
    for name, value in SMALL_CONF.items():  # the prompts field takes one per line
        type_into(browser, field(browser, name), "\n".join(value) if name == "prompts" else value)
    turn_on(browser, "require_approval")
    assert trigger_button(browser).is_enabled()
    show_section(browser, "Training")
    screenshot = tmp_path / "trigger-form.png"  # kept with pytest's tmp dirs as an artifact
    browser.save_screenshot(str(screenshot))
    click(browser, trigger_button(browser))

    run = new_run(stack, before)
    run_id = run["dag_run_id"]
    assert run["run_type"] == "manual"
    assert {k: run["conf"].get(k) for k in SMALL_CONF} == SMALL_CONF  # the form sent them
    assert run["conf"]["corpus"] == str(corpus) and run["conf"]["require_approval"] is True

    # Published, but latest.json waits for the approver, who is shown both models' scores
    # and the new version's samples.
    assert parked(stack, run_id) == 1
    previous = read_json(latest)
    assert previous["version"] == made_run["version"]
    request = approval_request(stack, run_id)
    assert request["options"] == ["Approve", "Reject"]
    assert "bits/byte on the evaluation set" in request["body"]
    assert f"current latest `{previous['version']}`" in request["body"]
    version = version_of(stack, run)
    sample = json.loads(storage.read_bytes(f"{version}/generated.jsonl").splitlines()[0])
    assert "Sample generations" in request["body"]
    assert f"> {literal(sample['prompt'])} {literal(sample['completion'])}" in request["body"]
    assert answer(stack, run_id, "Approve")["responded_by"]["name"] == USER
    assert wait_for(stack, run_id, "promote", {"success", "failed"}) == "success"
    stack.wait_until(lambda: run_state(stack, run_id) == "success", 300, "the run succeeded")

    # No location in the form: the run and the model go where `make run` put its own, and
    # the gate compared the candidate with the model `make run` promoted.
    plan = plan_of(stack, run_id)
    assert plan["run_root"].startswith(f"{stack.runs_base}/")
    assert plan["registry"] == stack.registry == made_run["registry"]
    pointer = read_json(latest)
    assert pointer["uri"] == version and pointer["approved_by"] == USER
    promotion = read_json(f"{version}/promotion.json")
    assert promotion["promoted"] and promotion["review"]["decision"] == "approved"
    assert promotion["compared_to"] == made_run["version"]


def test_an_asset_event_queues_a_run_that_writes_outside_the_checkout_and_overruns_loudly(
    airflow_stack,
):
    stack = airflow_stack
    [asset] = stack.get("/api/v2/assets", name_pattern="llm_corpus")["assets"]
    before = runs(stack)
    stack.post("/api/v2/assets/events", {"asset_id": asset["id"]})
    run = new_run(stack, before)
    try:
        assert run["run_type"] == "asset_triggered"
        assert run["state"] in ("queued", "running")
        stack.wait_until(
            lambda: task_instance(stack, run["dag_run_id"], "plan_run")["state"] == "success",
            900, "plan_run succeeded")  # fmt: skip
        plan = plan_of(stack, run["dag_run_id"])
        assert plan["run_root"].startswith(f"{stack.runs_base}/")
        assert plan["registry"] == stack.registry
        assert str(REPO) not in plan["run_root"] + plan["registry"]
        # Still running 3.6 s after it was queued (the stack's LLM_RUN_DEADLINE_HOURS): the
        # triggerer ran the deadline's callback, which logged one line naming the run.
        line = f"{deadline.MESSAGE}: dag_id={DAG_ID} run_id={run['dag_run_id']} "
        triggerer_log = stack.home / "logs" / "triggerer.log"
        stack.wait_until(lambda: line in triggerer_log.read_text(errors="replace"), 300,
                         "the deadline's line is in the triggerer's log")  # fmt: skip
    finally:  # the default-sized pipeline is not this test's business
        stack.request("PATCH", runs_path(run["dag_run_id"]),
                      json={"state": "failed"}).raise_for_status()  # fmt: skip
