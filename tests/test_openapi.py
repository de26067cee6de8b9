"""The OpenAPI document against the app it describes: same routes, valid, served as built.

The route comparison is what keeps the document honest: adding an endpoint without
describing it, or describing one nobody serves, fails here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.core.result import Err
from starlette.routing import BaseRoute, Route

from commerce import CommerceSettings
from livemart import openapi
from livemart.app import assemble
from realtime.config import Settings
from realtime.errors import ERROR_STATUS
from rooms.groups import GroupSettings
from rooms.live import RoomSettings

PREFIXES = ("/api", "/whip", "/whep")
METHODS = ("get", "post", "put", "patch", "delete", "options")

Endpoint = tuple[str, str]
"""(method, path) with path parameters written as OpenAPI does: ``{name}``."""


def spec(**groups: Any) -> dict[str, Any]:
    return openapi.document(
        rooms=RoomSettings(),
        groups=GroupSettings(**groups),
        shop=CommerceSettings(),
        max_body_bytes=65536,
    )


def endpoints(routes: Iterable[BaseRoute], prefixes: tuple[str, ...]) -> set[Endpoint]:
    """Starlette routes as (method, path); HEAD is implied by GET, as in OpenAPI."""
    found: set[Endpoint] = set()
    for route in routes:
        if not isinstance(route, Route) or not route.path.startswith(prefixes):
            continue
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        found |= {(method.lower(), path) for method in route.methods or () if method != "HEAD"}
    return found


def documented(document: dict[str, Any], prefixes: tuple[str, ...]) -> set[Endpoint]:
    return {
        (method, path)
        for path, item in document["paths"].items()
        if path.startswith(prefixes)
        for method in item
        if method in METHODS
    }


@pytest.fixture(scope="module")
def app_routes(tmp_path_factory: pytest.TempPathFactory) -> list[BaseRoute]:
    db = tmp_path_factory.mktemp("openapi") / "unused.db"
    assembly = assemble(Settings(database_url=f"sqlite+aiosqlite:///{db}"))
    return list(assembly.app.routes)


def test_every_served_route_is_documented(app_routes: list[BaseRoute]) -> None:
    undocumented = endpoints(app_routes, PREFIXES) - documented(spec(), PREFIXES)
    assert not undocumented, f"add these to livemart/openapi.py: {sorted(undocumented)}"


def test_every_documented_route_is_served(app_routes: list[BaseRoute]) -> None:
    missing = documented(spec(), PREFIXES) - endpoints(app_routes, PREFIXES)
    assert not missing, f"documented but not served: {sorted(missing)}"


def test_document_loads_and_every_operation_resolves() -> None:
    schema = schemathesis.openapi.from_dict(spec())
    results = list(schema.get_all_operations())
    assert not [str(result.err()) for result in results if isinstance(result, Err)]
    assert len(results) == len(documented(spec(), ("/",)))


def test_every_operation_declares_auth_and_errors_in_the_contract_shape() -> None:
    document = spec()
    error_ref = {"$ref": "#/components/schemas/Error"}
    for status, response in document["components"]["responses"].items():
        assert response["content"]["application/json"]["schema"] == error_ref, status
    schemes = set(document["components"]["securitySchemes"])
    for path, item in document["paths"].items():
        for method, op in item.items():
            where = f"{method.upper()} {path}"
            requirements = [name for option in op["security"] for name in option]
            assert set(requirements) <= schemes, where
            statuses = {int(code) for code in op["responses"]}
            if op["security"] and {} not in op["security"]:
                assert 401 in statuses, f"{where} needs a token but documents no 401"
            if "requestBody" in op and op["requestBody"]["content"].get("application/json"):
                assert {400, 413} <= statuses, f"{where} takes JSON but documents no 400/413"
            assert all(code < 500 or code in (501, 503) for code in statuses), where


def test_error_statuses_are_those_of_the_error_table() -> None:
    used = {int(name[1:]) for name in spec()["components"]["responses"]}
    transport = set(ERROR_STATUS.values()) - {500}
    media = {406, 415, 501}
    assert used <= transport | media
    assert transport - {429} <= used, "HTTP can answer every transport status except rate_limited"


def test_bounds_follow_the_settings() -> None:
    body = spec(max_text_chars=77, page_limit=9)["paths"]["/api/groups/{group_id}/messages"]
    text = body["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]["text"]
    assert text["maxLength"] == 77
    limit = next(p for p in body["get"]["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 9


async def test_served_document_is_the_built_one(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'served.db'}")
    assembly = assemble(settings)
    transport = httpx.ASGITransport(app=assembly.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://openapi.test") as http:
        response = await http.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == spec()
