"""The "Models" view: the plugin's JSON endpoints and its page inside the Airflow UI.

Two versions are published (in process, the real jobs) into the registry the shared
``airflow_stack`` reads by default; then the api-server's plugin is called with and
without a token, and the page is opened in headless Chromium inside Airflow's UI.
"""

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from helpers.browser import WAIT_SECONDS
from helpers.corpora import small_corpus
from helpers.jobs import TINY, load_job

pytestmark = pytest.mark.slow

MODEL = "view-gpt"


@pytest.fixture(scope="module")
def published(airflow_stack, spark, tmp_path_factory):
    """Two versions of ``MODEL`` in the stack's default registry; their publish manifests."""
    base = tmp_path_factory.mktemp("models-view")
    registry = airflow_stack.registry
    root = f"file://{base / 'run'}"
    load_job("preprocess").main(["--run-root", root, "--input",
                                 str(small_corpus(base / "corpus", documents=30))])  # fmt: skip
    load_job("tokenize_corpus").main(["--run-root", root, "--vocab-size", "300"])
    manifests = []
    for seed, rounds in (("1", "2"), ("2", "3")):
        load_job("train").main(["--run-root", root, *TINY, "--rounds", rounds,
                                "--local-steps", "5", "--seed", seed])  # fmt: skip
        load_job("generate").main(["--run-root", root, "--prompt", "Paragraph 1 of",
                                   "--max-new-tokens", "8"])  # fmt: skip
        manifests.append(load_job("publish").main([
            "--run-root", root, "--registry", registry, "--model-name", MODEL,
            "--tolerance", "10", "--dag-run-id", f"manual__view_{seed}"]))  # fmt: skip
    return registry, manifests


def test_the_json_endpoints_need_a_signed_in_user(airflow_stack, published):
    stack = airflow_stack
    registry, manifests = published
    for path in ("/llm-models/api/models", f"/llm-models/api/models/{MODEL}", "/llm-models/"):
        anonymous = httpx.get(f"{stack.url}{path}", timeout=30)
        assert anonymous.status_code in (401, 403), path
        assert MODEL not in anonymous.text
    listing = stack.get("/llm-models/api/models")
    assert listing["registry"] == registry
    assert {"name": MODEL, "latest": manifests[-1]["params"]["version"],
            "problem": None} in listing["models"]  # fmt: skip
    detail = stack.get(f"/llm-models/api/models/{MODEL}")
    versions = [v["version"] for v in detail["versions"]]
    assert versions == [m["params"]["version"] for m in reversed(manifests)]  # newest first
    newest = detail["versions"][0]
    assert newest["is_latest"] and newest["promoted"] and newest["eval_bpb"] > 0
    assert newest["airflow"] == {"dag_id": "llm_decoder", "run_id": "manual__view_2"}
    assert len(newest["metrics"]) == 3 and newest["tokens_trained"] > 0
    assert newest["samples"][0]["prompt"] == "Paragraph 1 of"
    png = stack.request("GET", f"/llm-models/api/models/{MODEL}/versions/{versions[0]}/loss.png")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    for bad in ("..", "a%2F..%2Fb"):
        assert stack.request("GET", f"/llm-models/api/models/{bad}").status_code == 404


def test_the_page_inside_the_airflow_ui_shows_both_versions_the_latest_and_loss_curves(
    airflow_stack, browser, published, tmp_path
):  # fmt: skip
    stack = airflow_stack
    _, manifests = published
    browser.get(f"{stack.url}/plugin/llm-models")
    frame = browser.find_element(By.CSS_SELECTOR, "iframe")
    browser.switch_to.frame(frame)
    try:
        WebDriverWait(browser, WAIT_SECONDS).until(
            lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == "true"
        )
        section = browser.find_element(By.CSS_SELECTOR, f"section[data-model='{MODEL}']")
        for manifest in manifests:
            assert manifest["params"]["version"] in section.text
        [latest] = section.find_elements(By.CSS_SELECTOR, ".version.is-latest")
        assert latest.get_attribute("data-version") == manifests[-1]["params"]["version"]
        assert latest.find_element(By.CSS_SELECTOR, ".latest-marker").text == "LATEST"
        charts = section.find_elements(By.CSS_SELECTOR, "svg.loss-chart polyline")
        assert len(charts) == 2 * len(manifests)  # train and validation, per version
        assert section.find_elements(By.CSS_SELECTOR, "img.loss-png")
        assert "promoted" in latest.text and "manual__view_2" in latest.text
    finally:
        browser.switch_to.default_content()
    screenshot = tmp_path / "models-view.png"  # kept with pytest's tmp dirs as an artifact
    browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000
