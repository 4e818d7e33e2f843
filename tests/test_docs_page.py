"""``/docs`` is Swagger UI served by the product itself: nothing from another host, so it
works on a closed network (this machine has none), and it links ``/openapi.json``."""

from __future__ import annotations

import re

from scripts.processes import wait_for
from tests.browser import needs_chromium, severe
from web.views.docs import spec


def test_the_page_loads_nothing_from_another_host(client):
    page = client.get("/docs").get_data(as_text=True)
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources and all(s.startswith(("/", "data:")) for s in sources), sources
    assert '<a href="/openapi.json">' in page
    for name, kind, marker in (
        ("swagger-ui-bundle.js", "javascript", "SwaggerUIBundle"),
        ("swagger-ui.css", "text/css", ".swagger-ui"),
    ):
        path = next(s for s in sources if s.startswith(f"/docs/assets/{name}"))
        with client.get(path) as answer:
            assert answer.status_code == 200 and kind in answer.content_type
            assert marker in answer.get_data(as_text=True)
            assert answer.cache_control.max_age and answer.cache_control.max_age > 0


def test_only_swagger_ui_s_files_are_served(client):
    for name in ("index.html", "..%2Fflask_swagger_ui.py", "LICENSE"):
        answer = client.get(f"/docs/assets/{name}")
        assert answer.status_code == 404 and answer.json["code"] == "not_found"


@needs_chromium
def test_swagger_ui_shows_every_operation_offline(api, browser):
    from selenium.webdriver.common.by import By

    operations = sum(len(methods) for methods in spec()["paths"].values())
    browser.get(f"{api.base}/docs")

    def shown() -> int:
        return len(browser.find_elements(By.CSS_SELECTOR, ".opblock"))

    wait_for(lambda: shown() == operations, 30, f"Swagger UI's {operations} operations")
    title = browser.find_element(By.CSS_SELECTOR, ".info .title").text
    assert title.startswith("MIA backend")
    assert severe(browser) == []
