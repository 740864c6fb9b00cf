"""``/docs`` works offline: Swagger UI from vendored files, no other host contacted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.live_server import LiveServer, live_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    db = tmp_path_factory.mktemp("docs") / "chat.sqlite3"
    with live_server(db=str(db)) as running:
        yield running


def test_the_docs_page_names_no_other_host(server: LiveServer) -> None:
    html = httpx.get(f"{server.url}/docs").text
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in html
    assert "/static/vendor/swagger-ui/swagger-ui.css" in html
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    assert (Path(__file__).parents[2] / "src/webchat/static/vendor/swagger-ui/LICENSE").is_file()


def test_the_docs_render_in_chromium_without_any_outside_request(
    server: LiveServer, page: Any
) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{server.url}/docs")
    page.wait_for_selector(".swagger-ui .info .title")
    assert "webchat" in page.inner_text(".swagger-ui .info .title")
    page.wait_for_selector(".opblock-summary-path[data-path='/chat']")
    hosts = {urlsplit(url).netloc for url in requested if not url.startswith("data:")}
    assert hosts == {f"127.0.0.1:{server.port}"}, requested
    assert any(url.endswith("/openapi.json") for url in requested)
