"""Compressed request bodies (issue 12 item 5): ``Content-Encoding: zstd`` (as Codex can
send), ``gzip`` and ``deflate`` are decoded by the gateway (``body_encoding.py``) with
``--max-body-bytes`` bounding the DECODED body: a decompression bomb is a 413 once the
decoded bytes pass the limit, long before it would have been decoded whole (32 GiB of zeros
here, which neither side could hold in memory), and the connection stays usable."""
from __future__ import annotations

import gzip
import json
import zlib

import aiohttp
import pytest
from backports import zstd

BODY = {"model": "default", "input": "Say hello.", "max_output_tokens": 16, "temperature": 0}


def _deflate(data: bytes) -> bytes:
    return zlib.compress(data)


ENCODINGS = {"zstd": zstd.compress, "gzip": gzip.compress, "deflate": _deflate}


async def _post(url: str, data: bytes, encoding: str, session: aiohttp.ClientSession | None = None):
    headers = {"Content-Type": "application/json", "Content-Encoding": encoding, "Authorization": "Bearer x"}
    if session is None:
        async with aiohttp.ClientSession() as session:
            return await _post(url, data, encoding, session)
    async with session.post(url, data=data, headers=headers) as resp:
        return resp.status, await resp.json()


@pytest.mark.parametrize("encoding", list(ENCODINGS))
async def test_compressed_bodies_are_decoded(gateway, encoding):
    raw = json.dumps({**BODY, "input": "hello " * 2000}).encode()
    status, body = await _post(gateway.base_url + "/responses/input_tokens", ENCODINGS[encoding](raw), encoding)
    assert status == 200, body
    assert body["input_tokens"] > 2000


async def test_a_zstd_create_generates(gateway):
    status, body = await _post(gateway.base_url + "/responses", zstd.compress(json.dumps(BODY).encode()), "zstd")
    assert status == 200, body
    assert body["status"] in ("completed", "incomplete") and body["output"]


def _zstd_bomb(frames: int) -> bytes:
    """`frames` concatenated zstd frames of 1 GiB of zeros each (about 32 KB apiece)."""
    compressor = zstd.ZstdCompressor(level=1)
    frame = b"".join(compressor.compress(bytes(1 << 24)) for _ in range(64)) + compressor.flush()
    return frame * frames


@pytest.mark.parametrize("encoding", ["zstd", "gzip"])
async def test_a_decompression_bomb_is_413_on_the_decoded_size(gateway, encoding):
    bomb = _zstd_bomb(32) if encoding == "zstd" else gzip.compress(bytes(64 << 20), compresslevel=1) * 8
    assert len(bomb) < 4 << 20  # far under --max-body-bytes (16 MiB) as sent
    connector = aiohttp.TCPConnector(limit=1)  # one connection: the second request reuses it
    async with aiohttp.ClientSession(connector=connector) as session:
        status, body = await _post(gateway.base_url + "/responses", bomb, encoding, session)
        assert status == 413, body
        assert body["error"]["code"] == "request_too_large" and "once decoded" in body["error"]["message"]
        raw = json.dumps({"model": "default", "input": "hi"}).encode()
        status, body = await _post(gateway.base_url + "/responses/input_tokens", gzip.compress(raw), "gzip", session)
        assert status == 200, body


@pytest.mark.parametrize("encoding,message", [("zstd", "not valid zstd data"), ("br", "'br' is not supported")])
async def test_a_body_that_is_not_what_its_encoding_says_is_400(gateway, encoding, message):
    status, body = await _post(gateway.base_url + "/responses", json.dumps(BODY).encode(), encoding)
    assert status == 400 and body["error"]["type"] == "invalid_request_error", body
    assert message in body["error"]["message"]


async def test_several_codings_are_undone_in_reverse_order(gateway):
    raw = json.dumps({"model": "default", "input": "hi"}).encode()
    status, body = await _post(gateway.base_url + "/responses/input_tokens", zstd.compress(gzip.compress(raw)),
                               "gzip, zstd")
    assert status == 200, body
