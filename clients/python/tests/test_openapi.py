"""docs/openapi.yaml is the contract: a valid OpenAPI 3.1 document, whose every example the real
bridge answers as documented, and from which Schemathesis fuzzes the real bridge: no 5xx, every
error JSON, documented statuses and types, and the scrape unchanged by refused requests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import ROOT, Bridge, parse_exposition

DOC = ROOT / "docs" / "openapi.yaml"
SPEC = yaml.safe_load(DOC.read_text())

# Series a refused request must not move: everything the events make, not the bridge's own
# request counters, store health, or values that move with the clock.
NOT_EVENT_DERIVED = (
    "reflexio_ingest_requests_total",
    "reflexio_store_",
    "reflexio_clock_",
    "reflexio_stale_locks",
    "reflexio_otlp_",
    "reflexio_legacy_",
    "reflexio_bridge_",
    "reflexio_http_",
    "process_",
)


def event_derived(scrape: Dict[str, float]) -> Dict[str, float]:
    return {k: v for k, v in scrape.items() if not k.startswith(NOT_EVENT_DERIVED)}


@pytest.fixture(scope="module")
def shared_bridge(tmp_path_factory):
    b = Bridge(tmp_path_factory.mktemp("bridge"), [], {})
    b.start()
    yield b
    b.stop()


def test_the_document_is_valid_openapi_3_1():
    assert SPEC["openapi"].startswith("3.1.")
    validate(SPEC)


def test_the_document_covers_every_endpoint_and_status():
    paths = SPEC["paths"]
    assert set(paths) == {"/v1/events", "/metrics", "/metrics/prometheus", "/healthz", "/readyz", "/"}
    post = paths["/v1/events"]["post"]
    assert set(post["responses"]) == {"202", "400", "401", "413", "415", "422", "429", "503"}
    for status in ("429", "503"):
        answer = post["responses"][status]
        if "$ref" in answer:
            answer = SPEC["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
        assert "Retry-After" in answer["headers"]
    names = {p["$ref"].rsplit("/", 1)[1] for p in post["parameters"]}
    assert names == {"IdempotencyKey", "ContentEncoding"}
    assert set(SPEC["components"]["securitySchemes"]) == {"bearerAuth", "basicAuth"}
    mapping = SPEC["components"]["schemas"]["Event"]["discriminator"]["mapping"]
    assert set(mapping) == {"transcription", "digest", "fact", "retention", "lock_acquired",
                            "lock_released", "cove_config"}


def examples() -> List[Tuple[str, str, object, dict]]:
    content = SPEC["paths"]["/v1/events"]["post"]["requestBody"]["content"]
    out = []
    for media_type, body in content.items():
        for name, example in body["examples"].items():
            out.append((media_type, name, example["value"], example["x-expected"]))
    return out


EXAMPLES = examples()


@pytest.mark.parametrize("media_type,name,value,expected", EXAMPLES,
                         ids=[f"{m.split('/')[1]}:{n}" for m, n, _, _ in EXAMPLES])
def test_every_example_is_answered_as_documented(shared_bridge, media_type, name, value, expected):
    body = value.encode() if isinstance(value, str) else json.dumps(value).encode()
    before = event_derived(shared_bridge.scrape())
    answer = shared_bridge.post(body, content_type=media_type)
    doc = answer.json()
    assert answer.status == expected["status"], doc
    if answer.status == 202:
        assert doc == {"accepted": expected["accepted"]}
        return
    assert set(doc) == {"error", "index", "field", "line"}, doc
    assert doc["index"] == expected["index"], doc
    for key in ("field", "line"):
        if key in expected:
            assert doc[key] == expected[key], doc
    assert event_derived(shared_bridge.scrape()) == before, "a refused batch changed the scrape"


def test_get_endpoints_answer_as_documented(shared_bridge):
    for path, status, content_type in [
        ("/healthz", 200, "application/json"),
        ("/readyz", 200, "application/json"),
        ("/metrics/prometheus", 200, "text/plain"),
        ("/metrics", 200, "text/plain"),
        ("/", 200, "text/html"),
    ]:
        answer = shared_bridge.request("GET", path)
        assert (answer.status, answer.headers["content-type"].split(";")[0]) == (status, content_type), path
    a = shared_bridge.request("GET", "/metrics").body
    b = shared_bridge.request("GET", "/metrics/prometheus").body
    assert parse_exposition(a.decode()).keys() == parse_exposition(b.decode()).keys()


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx, value) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return (json.dumps(value) + "\n").encode()


schema = schemathesis.openapi.from_path(DOC)


def fuzz(operation_id: str, max_examples: int):
    """A test fuzzing one operation of the document against the real bridge."""

    @schema.include(operation_id=operation_id).parametrize()
    @settings(max_examples=max_examples, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def test(case, shared_bridge):
        posting = case.method.upper() == "POST"
        before = event_derived(shared_bridge.scrape()) if posting else None
        response = case.call(base_url=shared_bridge.url, timeout=30)
        case.validate_response(
            response,
            checks=[
                not_a_server_error,
                status_code_conformance,
                content_type_conformance,
                response_headers_conformance,
                response_schema_conformance,
            ],
        )
        if response.status_code >= 400:
            doc = response.json()
            assert set(doc) == {"error", "index", "field", "line"}, doc
        if posting and response.status_code != 202:
            after = event_derived(shared_bridge.scrape())
            assert after == before, "a refused request changed the scrape"

    return test


test_fuzz_post_events = fuzz("postEvents", 150)
test_fuzz_get_metrics = fuzz("getMetrics", 10)
test_fuzz_get_metrics_prometheus = fuzz("getMetricsPrometheus", 10)
test_fuzz_get_healthz = fuzz("getHealthz", 10)
test_fuzz_get_readyz = fuzz("getReadyz", 10)
test_fuzz_get_landing_page = fuzz("getLandingPage", 10)
