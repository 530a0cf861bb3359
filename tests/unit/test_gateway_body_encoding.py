"""Decoding compressed request bodies under the size limit (``body_encoding.py``)."""
from __future__ import annotations

import gzip
import zlib

import pytest
from backports import zstd

from trtllm_gateway.body_encoding import codings, decode
from trtllm_gateway.errors import ApiError

DATA = b'{"model": "m", "input": "' + b"x" * 5000 + b'"}'


@pytest.mark.parametrize("header,encode", [
    ("zstd", zstd.compress), ("gzip", gzip.compress), ("x-gzip", gzip.compress), ("deflate", zlib.compress),
    ("deflate", lambda d: zlib.compress(d)[2:-4]),  # raw deflate, as some clients send it
    ("GZIP", gzip.compress), ("identity", lambda d: d), ("gzip, zstd", lambda d: zstd.compress(gzip.compress(d))),
    ("gzip", lambda d: gzip.compress(d[:100]) + gzip.compress(d[100:])),  # concatenated members
    ("zstd", lambda d: zstd.compress(d[:100]) + zstd.compress(d[100:])),  # concatenated frames
])
def test_codings_are_undone(header, encode):
    assert decode(encode(DATA), header, len(DATA)) == DATA


@pytest.mark.parametrize("header,encode", [("zstd", zstd.compress), ("gzip", gzip.compress),
                                           ("deflate", zlib.compress)])
def test_one_byte_over_the_limit_once_decoded_is_413(header, encode):
    with pytest.raises(ApiError) as info:
        decode(encode(DATA), header, len(DATA) - 1)
    assert (info.value.kind.status, info.value.code) == (413, "request_too_large")


@pytest.mark.parametrize("header,body,message", [
    ("zstd", b"not zstd", "not valid zstd data"), ("gzip", gzip.compress(DATA)[:-12], "not valid gzip data"),
    ("deflate", b"\x00\x01", "not valid deflate data"), ("br", b"x", "'br' is not supported"),
    ("compress", b"x", "'compress' is not supported"),
])
def test_bad_data_and_unknown_codings_are_400(header, body, message):
    with pytest.raises(ApiError) as info:
        decode(body, header, 1 << 20)
    assert info.value.kind.status == 400 and message in info.value.message


def test_the_header_lists_codings_in_the_order_applied():
    assert codings(None) == [] and codings("identity") == [] and codings(" gzip ,Zstd") == ["gzip", "zstd"]
