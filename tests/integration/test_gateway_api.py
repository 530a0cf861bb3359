"""Stored-response endpoints, tenants, models, input_tokens, probes and metrics."""
from __future__ import annotations

import aiohttp
import openai
import pytest

from tests.fixtures.gateway import AUTH_KEYS, plain

SHORT = {"temperature": 0, "max_output_tokens": 16}
ITEMS = [{"role": "user", "content": f"message {i}"} for i in range(5)]


async def _get(url: str, headers: dict | None = None) -> tuple[int, dict | str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=headers or {}) as resp:
            body = await resp.json() if resp.content_type == "application/json" else await resp.text()
            return resp.status, body


async def test_get_and_delete(gateway):
    c = gateway.client
    resp = await c.responses.create(model="default", input="Hi", **SHORT)
    assert plain(await c.responses.retrieve(resp.id)) == plain(resp)
    status, body = await _get(f"{gateway.base_url}/responses/{resp.id}")
    assert status == 200 and body["id"] == resp.id
    async with aiohttp.ClientSession() as session:
        async with session.delete(f"{gateway.base_url}/responses/{resp.id}") as r:
            assert r.status == 200
            assert await r.json() == {"id": resp.id, "object": "response.deleted", "deleted": True}
        async with session.delete(f"{gateway.base_url}/responses/{resp.id}") as r:
            assert r.status == 404 and (await r.json())["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.NotFoundError):
        await c.responses.retrieve(resp.id)
    with pytest.raises(openai.NotFoundError) as info:  # a deleted response cannot be continued
        await c.responses.create(model="default", input="again", previous_response_id=resp.id, **SHORT)
    assert info.value.body["code"] == "previous_response_not_found"


async def test_the_sdks_beta_namespace(gateway):
    """openai-python's ``beta.responses`` (``?beta=true``, the ``openai-beta`` header): the same
    endpoints; ``multi_agent`` off is accepted, on is refused by name."""
    c = gateway.client
    resp = await c.beta.responses.create(model="default", input="Hi", multi_agent={"enabled": False},
                                         betas=["responses_multi_agent=v1"], **SHORT)
    assert resp.status == "completed" and resp.output[0].type == "message"
    assert (await c.beta.responses.retrieve(resp.id)).id == resp.id
    streamed = [event.type async for event in await c.beta.responses.create(
        model="default", input="Hi", stream=True, multi_agent=None, **SHORT)]
    assert streamed[0] == "response.created" and streamed[-1] == "response.completed"
    with pytest.raises(openai.BadRequestError) as info:
        await c.beta.responses.create(model="default", input="Hi", multi_agent={"enabled": True}, **SHORT)
    assert (info.value.body["code"], info.value.body["param"]) == ("unsupported_parameter", "multi_agent.enabled")
    await c.beta.responses.delete(resp.id)
    with pytest.raises(openai.NotFoundError):
        await c.responses.retrieve(resp.id)


async def test_input_items_pagination(gateway):
    c = gateway.client
    resp = await c.responses.create(model="default", input=ITEMS, **SHORT)
    everything = await c.responses.input_items.list(resp.id, order="asc", limit=100)
    texts = [item.content[0].text for item in everything.data]
    assert texts == [f"message {i}" for i in range(5)] and everything.has_more is False
    ids = [item.id for item in everything.data]
    assert everything.first_id == ids[0] and everything.last_id == ids[-1]

    page1 = await c.responses.input_items.list(resp.id, order="asc", limit=2)
    assert [i.id for i in page1.data] == ids[:2] and page1.has_more
    page2 = await c.responses.input_items.list(resp.id, order="asc", limit=2, after=page1.last_id)
    assert [i.id for i in page2.data] == ids[2:4] and page2.has_more
    page3 = await c.responses.input_items.list(resp.id, order="asc", limit=2, after=page2.last_id)
    assert [i.id for i in page3.data] == ids[4:] and not page3.has_more

    desc = await c.responses.input_items.list(resp.id)  # default order desc, limit 20
    assert [i.id for i in desc.data] == ids[::-1]
    status, body = await _get(f"{gateway.base_url}/responses/{resp.id}/input_items?order=asc&before={ids[3]}")
    assert status == 200 and [i["id"] for i in body["data"]] == ids[:3] and body["object"] == "list"

    for query, param in (("limit=0", "limit"), ("limit=abc", "limit"), ("order=sideways", "order")):
        status, body = await _get(f"{gateway.base_url}/responses/{resp.id}/input_items?{query}")
        assert status == 400 and body["error"]["param"] == param
    status, body = await _get(f"{gateway.base_url}/responses/resp_nope/input_items")
    assert status == 404


async def test_tenant_isolation_with_two_keys(auth_gateway):
    a = auth_gateway.client
    b = openai.AsyncOpenAI(base_url=auth_gateway.base_url, api_key=AUTH_KEYS[1], max_retries=0)
    try:
        resp = await a.responses.create(model="default", input="secret of tenant a", **SHORT)
        assert (await a.responses.retrieve(resp.id)).id == resp.id
        with pytest.raises(openai.NotFoundError):
            await b.responses.retrieve(resp.id)
        with pytest.raises(openai.NotFoundError):
            await b.responses.input_items.list(resp.id)
        with pytest.raises(openai.NotFoundError) as info:
            await b.responses.create(model="default", input="x", previous_response_id=resp.id, **SHORT)
        assert info.value.body["code"] == "previous_response_not_found"
        with pytest.raises(openai.NotFoundError):
            await b.responses.delete(resp.id)
        assert (await a.responses.retrieve(resp.id)).id == resp.id  # b's delete did nothing
    finally:
        await b.close()


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer sk-wrong"}, {"Authorization": "Basic abc"}])
async def test_missing_or_wrong_key_is_401(auth_gateway, headers):
    status, body = await _get(auth_gateway.base_url + "/models", headers)
    assert status == 401
    assert body["error"]["type"] == "authentication_error" and body["error"]["code"] == "invalid_api_key"


async def test_probes_and_metrics_need_no_key(auth_gateway):
    for path in ("/healthz", "/readyz", "/metrics"):
        status, _ = await _get(auth_gateway.root + path)
        assert status == 200, path


async def test_models(gateway):
    models = await gateway.client.models.list()
    assert len(models.data) == 1
    model = models.data[0]
    assert model.object == "model" and model.owned_by and model.created > 0
    assert (await gateway.client.models.retrieve(model.id)).id == model.id
    assert (await gateway.client.models.retrieve("default")).id == model.id
    with pytest.raises(openai.NotFoundError) as info:
        await gateway.client.models.retrieve("gpt-nope")
    assert info.value.body["code"] == "model_not_found"
    resp = await gateway.client.responses.create(model=model.id, input="Hi", **SHORT)
    assert resp.model == model.id


async def test_input_tokens(gateway):
    c = gateway.client
    short = await c.responses.input_tokens.count(model="default", input="Hi")
    longer = await c.responses.input_tokens.count(model="default", input="Hi there, how are you today?")
    assert short.object == "response.input_tokens" and 0 < short.input_tokens < longer.input_tokens
    resp = await c.responses.create(model="default", input="Hi there, how are you today?", **SHORT)
    assert resp.usage.input_tokens == longer.input_tokens  # the same chat Generate would see


async def test_health_and_readiness(gateway):
    assert await _get(gateway.root + "/healthz") == (200, {"status": "ok"})
    status, body = await _get(gateway.root + "/readyz")
    assert status == 200 and body["status"] == "ready"


async def test_metrics_exposition(gateway):
    await gateway.client.responses.create(model="default", input="Hi", **SHORT)
    status, text = await _get(gateway.root + "/metrics")
    assert status == 200
    for name in ("trtllm_gateway_http_requests_total", "trtllm_gateway_http_request_duration_seconds",
                 "trtllm_gateway_time_to_first_token_seconds", "trtllm_gateway_inter_token_latency_seconds",
                 "trtllm_gateway_e2e_request_latency_seconds", "trtllm_gateway_active_streams",
                 "trtllm_gateway_output_tokens_total", "trtllm_gateway_store_operation_seconds",
                 "trtllm_gateway_overhead_seconds", "trtllm_gateway_upstream_requests_total"):
        assert name in text, name
    assert 'trtllm_gateway_http_requests_total{method="POST",route="/v1/responses",status="200"}' in text
    assert 'operation="save"' in text
    tokens = [line for line in text.splitlines() if line.startswith("trtllm_gateway_output_tokens_total ")]
    assert tokens and float(tokens[0].split()[1]) > 0
