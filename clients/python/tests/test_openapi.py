"""docs/openapi.yaml is the contract: a valid OpenAPI 3.1 document, whose every example the real
bridge answers as documented, whose refusals (405 with Allow, 408, 429, 431) the real bridge
answers where documented, whose retryable statuses are exactly what the Python client retries,
and from which Schemathesis fuzzes the real bridge: no 5xx, every error JSON, documented statuses
and types, and the scrape unchanged by refused requests."""

from __future__ import annotations

import json
import socket
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
from reflexio_telemetry._sender import retryable

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


def resolved(answer: dict) -> dict:
    """A response of the document, its `$ref` followed."""
    if "$ref" in answer:
        return SPEC["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
    return answer


# What the HTTP layer and the web configuration's rate limit answer on every GET route.
GET_REFUSALS = {"400", "408", "429", "431"}


def test_the_document_covers_every_endpoint_and_status():
    paths = SPEC["paths"]
    assert set(paths) == {"/v1/events", "/metrics", "/metrics/prometheus", "/healthz", "/readyz", "/"}
    post = paths["/v1/events"]["post"]
    assert set(post["responses"]) == {"202", "400", "401", "408", "413", "415", "422", "429",
                                      "431", "503"}
    for status in ("429", "503"):
        assert "Retry-After" in resolved(post["responses"][status])["headers"]
    scrape = {"200", "401"} | GET_REFUSALS
    for path, statuses in [
        ("/metrics", scrape),
        ("/metrics/prometheus", scrape),
        ("/", scrape),
        ("/healthz", {"200"} | GET_REFUSALS),
        ("/readyz", {"200", "503"} | GET_REFUSALS),
    ]:
        assert set(paths[path]["get"]["responses"]) == statuses, path
        assert "Retry-After" in resolved(paths[path]["get"]["responses"]["429"])["headers"]
    # Every error answer is the JSON error (the readiness probe's 503 is its own document).
    for path, item in paths.items():
        for method, operation in item.items():
            if method.startswith("x-"):
                continue
            for status, answer in operation["responses"].items():
                if int(status) >= 400 and (path, status) != ("/readyz", "503"):
                    schema = resolved(answer)["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (path, status)
    assert "Allow" in SPEC["components"]["responses"]["MethodNotAllowed"]["headers"]
    names = {p["$ref"].rsplit("/", 1)[1] for p in post["parameters"]}
    assert names == {"IdempotencyKey", "ContentEncoding"}
    assert set(SPEC["components"]["securitySchemes"]) == {"bearerAuth", "basicAuth"}
    mapping = SPEC["components"]["schemas"]["Event"]["discriminator"]["mapping"]
    assert set(mapping) == {"transcription", "digest", "fact", "retention", "lock_acquired",
                            "lock_released", "cove_config"}


def test_the_client_retries_exactly_what_the_document_says_to_retry():
    post = SPEC["paths"]["/v1/events"]["post"]
    listed = post["x-retryable"]
    codes = {c for c in listed if isinstance(c, int)}
    classes = {c[0] for c in listed if isinstance(c, str) and c.endswith("XX")}
    documented = {int(s) for s in post["responses"] if int(s) >= 400}
    assert codes <= documented, "x-retryable names a status the bridge does not answer"
    for status in range(400, 600):
        says = status in codes or str(status)[0] in classes
        assert retryable(status) == says, f"the client and the document disagree on {status}"
    assert retryable(0), "no answer at all is retried"
    # The prose says the same as x-retryable.
    text = post["description"]
    retry = text.split("**What to retry**")[1].split("**Never as it is:**")[0]
    never = text.split("**Never as it is:**")[1].split("\n\n")[0]
    for status in documented:
        assert (f"`{status}`" in retry) == (status in codes), status
        assert (f"`{status}`" in never) == (status not in codes), status


def test_each_path_takes_its_methods_and_answers_405_with_allow_for_others(shared_bridge):
    for path, item in SPEC["paths"].items():
        methods = {m.upper() for m in item if not m.startswith("x-")}
        if "GET" in methods:
            methods.add("HEAD")
        methods.add("OPTIONS")
        allow = item["x-allow"]
        assert set(allow.split(", ")) == methods, path
        options = shared_bridge.request("OPTIONS", path)
        assert (options.status, options.headers.get("allow")) == (204, allow), path
        for method in sorted({"GET", "POST", "PUT", "DELETE", "PATCH"} - methods):
            answer = shared_bridge.request(method, path)
            assert (answer.status, answer.headers.get("allow")) == (405, allow), (method, path)
            assert set(answer.json()) == {"error", "index", "field", "line"}, (method, path)


def raw_exchange(port: int, request: bytes) -> Tuple[int, dict]:
    """Sends `request` as it is and reads the answer until the bridge closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_the_refusals_documented_are_what_the_bridge_answers(bridges, tmp_path):
    web = tmp_path / "web.yml"
    web.write_text("rate_limit:\n  interval: 1h\n  burst: 4\n")
    b = bridges(["--body-timeout", "300ms", "--web-config-file", str(web)])

    def documented(path: str, method: str, status: int) -> None:
        assert str(status) in SPEC["paths"][path][method]["responses"], (path, method, status)

    # A head too large: the HTTP layer's 431, on a GET route.
    headers = {f"X-Filler-{i}": "x" for i in range(100)}
    answer = b.request("GET", "/metrics", headers=headers)
    assert answer.status == 431, answer
    assert set(answer.json()) == {"error", "index", "field", "line"}
    documented("/metrics", "get", 431)
    # A body that stops arriving: 408 once the body timeout has passed.
    status, doc = raw_exchange(
        b.port,
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n[{\"type\":",
    )
    assert status == 408, doc
    assert set(doc) == {"error", "index", "field", "line"}
    documented("/v1/events", "post", 408)
    # Past the rate limit's burst: 429 with Retry-After on every route.
    statuses = [b.request("GET", "/healthz").status for _ in range(6)]
    assert 429 in statuses, statuses
    for path, item in SPEC["paths"].items():
        method = "post" if "post" in item else "get"
        answer = b.request(method.upper(), path, body=b"[]" if method == "post" else None,
                           headers={"Content-Type": "application/json"})
        assert answer.status == 429, (path, answer)
        assert int(answer.headers["retry-after"]) >= 1
        assert set(answer.json()) == {"error", "index", "field", "line"}
        documented(path, method, 429)


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
