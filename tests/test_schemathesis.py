"""schemathesis against a real `livemart serve`: requests generated from /openapi.json.

Every operation, WHIP/WHEP included, gets schema-valid and schema-violating requests,
half of them aimed at resources that exist (a room, product, sale, reservation and group
owned by the fuzzing user) so the handlers get past their 404s. Checks: no 5xx, every status code and content
type is one the document declares, JSON bodies match the declared schemas, and declared
auth is enforced. The number of examples is bounded to keep the test well under a minute.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import CheckFunction

from tests.processes import TEST_API_KEY, TEST_SECRET, LivemartProcess, ProcessGroup, token

pytestmark = pytest.mark.slow

#: Examples per operation and mode (about 40 operations x 2 modes x 2 stacks).
EXAMPLES = 5
#: WHIP/WHEP take SDP: generated text is never a usable offer, so they cannot reach a 2xx
#: here (tests/test_media_relay.py drives them with real offers).
MEDIA_PREFIXES = ("/whip", "/whep")

# WHIP/WHEP bodies are SDP text: send generated strings as they are.
schemathesis.serializer.alias("application/sdp", "text/plain")

CHECKS: list[CheckFunction] = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.ignored_auth,
]


def seed(server: LivemartProcess, headers: dict[str, str]) -> dict[str, Any]:
    """Resources the fuzzing user owns, so requests can name things that exist."""
    with httpx.Client(base_url=server.url, headers=headers, timeout=10) as http:

        def made(path: str, **body: Any) -> dict[str, Any]:
            response = http.post(path, json=body)
            assert response.status_code in (200, 201), response.text
            value: dict[str, Any] = response.json()
            return value

        room = made("/api/rooms", title="fuzzed room")
        product = made("/api/products", title="fuzzed tea", price_cents=500, currency="EUR")
        sale = made("/api/flash-sales", product_id=product["id"], stock=1000, per_user_limit=1000)
        held = made(f"/api/flash-sales/{sale['id']}/reservations", quantity=1)
        group = made("/api/groups", name="fuzzed group")
        invite = made(f"/api/groups/{group['id']}/invites")
        sent = made(f"/api/groups/{group['id']}/messages", text="hello", client_msg_id="seed-1")
    return {
        "room_id": room["id"],
        "product_id": product["id"],
        "sale_id": sale["id"],
        "reservation_id": held["id"],
        "group_id": group["id"],
        "user_id": "fuzz",
        "code": invite["code"],
        "seq": sent["seq"],
    }


@pytest.fixture(params=["embedded", "cluster"])
def server(request: pytest.FixtureRequest, livemart: ProcessGroup) -> LivemartProcess:
    """SQLite and the in-process broker, or PostgreSQL and Redis (the production path)."""
    if request.param == "embedded":
        return livemart()
    return livemart(
        redis_url=request.getfixturevalue("redis_url"),
        redis_prefix=request.getfixturevalue("redis_prefix"),
        database_url=request.getfixturevalue("postgres_url"),
    )


def test_http_api_survives_schemathesis(server: LivemartProcess) -> None:
    headers = {
        "Authorization": f"Bearer {token('fuzz', 'Fuzz', TEST_SECRET)}",
        "X-API-Key": TEST_API_KEY,
    }
    known = seed(server, headers)
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 40, [op.label for op in operations]
    seen: dict[str, list[int]] = {}

    for operation in operations:
        names = {p.name for p in operation.path_parameters}
        existing = {name: value for name, value in known.items() if name in names}
        strategies = [operation.as_strategy(mode) for mode in GenerationMode]
        if existing:
            strategies += [operation.as_strategy(mode, path_parameters=existing) for mode in GenerationMode]

        @settings(
            max_examples=EXAMPLES * len(strategies) // 2,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=st.one_of(strategies))
        def exercise(case: schemathesis.Case) -> None:
            response = case.call_and_validate(base_url=server.url, headers=headers, checks=CHECKS, timeout=10)
            seen.setdefault(case.operation.label, []).append(response.status_code)

        exercise()
    assert server.returncode is None, server.log_tail()
    # The generated requests must reach the handlers, not stop at routing or validation.
    json_ops = [op.label for op in operations if not op.path.startswith(MEDIA_PREFIXES)]
    succeeded = [label for label in json_ops if any(code < 300 for code in seen.get(label, []))]
    assert len(succeeded) >= len(json_ops) * 2 // 3, seen
