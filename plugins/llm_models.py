"""Airflow plugin: the "Models" view of the model registry (see ``llm_pipeline.models_view``).

Registers the read-only FastAPI app at ``/llm-models`` and an external view that shows its
page inside Airflow's UI (menu entry "Models", route ``/plugin/llm-models``).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from llm_pipeline.models_view import URL_PREFIX, app


class LlmModelsPlugin(AirflowPlugin):
    name = "llm_models"
    fastapi_apps = [{"name": "llm_models", "app": app, "url_prefix": URL_PREFIX}]
    external_views = [{
        "name": "Models",
        "href": f"{URL_PREFIX}/",
        "destination": "nav",
        "url_route": "llm-models",
    }]  # fmt: skip
