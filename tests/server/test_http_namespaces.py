"""Namespaces over HTTP, health probes and the OpenAPI document."""

from __future__ import annotations

import httpx

from tests.server.conftest import expect, expect_error


def test_namespace_lifecycle(http: httpx.Client) -> None:
    created = expect(http.post("/v1/namespaces", json={"name": "tenant-a"}), 201)
    assert created == {"name": "tenant-a", "streams": 0, "subscriptions": 0}
    assert expect(http.get("/v1/namespaces/tenant-a"), 200)["name"] == "tenant-a"
    expect(http.post("/v1/namespaces/tenant-a/streams", json={"name": "s"}), 201)

    refused = http.delete("/v1/namespaces/tenant-a")
    expect_error(refused, 409, "namespace_not_empty")
    expect(http.delete("/v1/namespaces/tenant-a/streams/s"), 204)
    expect(http.delete("/v1/namespaces/tenant-a"), 204)
    expect_error(http.get("/v1/namespaces/tenant-a"), 404, "namespace_not_found")


def test_default_namespace_exists_and_pagination(http: httpx.Client) -> None:
    for name in ("page-a", "page-b", "page-c"):
        expect(http.post("/v1/namespaces", json={"name": name}), 201)
    names, cursor = [], None
    while True:
        params = {"limit": 1} | ({"cursor": cursor} if cursor else {})
        page = expect(http.get("/v1/namespaces", params=params), 200)
        assert len(page["items"]) <= 1
        names += [item["name"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert "default" in names
    assert {"page-a", "page-b", "page-c"} <= set(names)
    assert names == sorted(names)


def test_health_probes(http: httpx.Client) -> None:
    assert expect(http.get("/healthz"), 200) == {"status": "ok"}
    assert expect(http.get("/readyz"), 200) == {"ready": True}


def test_openapi_documents_every_route(http: httpx.Client) -> None:
    document = expect(http.get("/openapi.json"), 200)
    operations = [operation for path in document["paths"].values() for operation in path.values()]
    assert len(operations) >= 45
    for operation in operations:
        assert operation.get("summary"), operation
        assert (
            "200" in operation["responses"]
            or "201" in operation["responses"]
            or ("204" in operation["responses"])
        )
    publish = document["paths"]["/v1/namespaces/{namespace}/publish"]["post"]
    assert set(publish["requestBody"]["content"]) == {
        "application/json",
        "application/octet-stream",
    }
    assert publish["responses"]["413"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    assert {"MessageIn", "PublishBatch", "ErrorBody"} <= set(document["components"]["schemas"])
    docs = http.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
