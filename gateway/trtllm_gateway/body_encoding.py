"""Compressed request bodies: ``Content-Encoding: zstd`` (as Codex sends), ``gzip`` and
``deflate``, decoded with the size limit applied to the DECODED bytes.

Protocol: HTTP content codings (RFC 9110 §8.4); docs/gateway.md "Compressed request
bodies". The server reads the body as sent (aiohttp's own decoding is off: during its
lingering close it would go on decoding what follows a refused bomb for 10 s), bounded by
``--max-body-bytes``; :func:`decode` then inflates it in steps of at most the room left
under the same limit, so a decompression bomb is refused (413 ``request_too_large``) after
at most ``limit + 1`` bytes were produced, whatever it would expand to. Several codings
(``gzip, zstd``) are undone in reverse order; concatenated gzip members and zstd frames are
all decoded; ``identity`` is no coding. Anything else is a 400 naming the coding, and data
that is not what its coding says is a 400 too.

zstd comes from ``backports.zstd``: the API of Python 3.14's ``compression.zstd`` (and the
package aiohttp itself uses), so the import changes when the project moves to 3.14.
"""
from __future__ import annotations

import zlib
from collections.abc import Callable

from backports.zstd import ZstdDecompressor, ZstdError

from .errors import ApiError

CODINGS = ("zstd", "gzip", "x-gzip", "deflate")
_GZIP_WBITS, _ZLIB_WBITS, _RAW_WBITS = 16 + zlib.MAX_WBITS, zlib.MAX_WBITS, -zlib.MAX_WBITS


def codings(header: str | None) -> list[str]:
    """The content codings of a ``Content-Encoding`` header, in the order they were applied."""
    names = [c.strip().lower() for c in (header or "").split(",")]
    return [c for c in names if c and c != "identity"]


def decode(raw: bytes, header: str | None, limit: int) -> bytes:
    """``raw`` with every coding of ``header`` undone; 413 past ``limit`` decoded bytes."""
    data = raw
    for coding in reversed(codings(header)):
        if coding not in CODINGS:
            raise ApiError("invalid_request", f"Content-Encoding {coding!r} is not supported; send zstd, gzip, "
                           "deflate or an uncompressed body.")
        try:
            data = _DECODERS[coding](data, limit)
        except (zlib.error, ZstdError, EOFError):
            raise ApiError("invalid_request", f"The request body is not valid {coding} data.") from None
    return data


class _Output:
    """Decoded bytes, refusing the ones past ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit, self.data = limit, bytearray()

    @property
    def room(self) -> int:
        """How much more one step may produce: one byte past the limit says 'too large'."""
        return self.limit + 1 - len(self.data)

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > self.limit:
            raise ApiError("body_too_large", f"The request body is too large: more than {self.limit} bytes once "
                           "decoded.")


def _zlib(wbits: int) -> Callable[[bytes, int], bytes]:
    def run(data: bytes, limit: int) -> bytes:
        out = _Output(limit)
        if wbits == _ZLIB_WBITS and data and data[0] & 0x0F != 8:
            return run_stream(data, _RAW_WBITS, out)  # "deflate" sent without its zlib header
        return run_stream(data, wbits, out)
    return run


def run_stream(data: bytes, wbits: int, out: _Output) -> bytes:
    while data:  # one gzip member (or the one zlib stream) per round
        decoder = zlib.decompressobj(wbits)
        pending = data
        while not decoder.eof:
            if not pending:
                raise EOFError("truncated")
            out.add(decoder.decompress(pending, out.room))
            pending = decoder.unconsumed_tail
        data = decoder.unused_data if wbits == _GZIP_WBITS else b""
    return bytes(out.data)


def _zstd(data: bytes, limit: int) -> bytes:
    out = _Output(limit)
    while data:  # one frame per round
        decoder = ZstdDecompressor()
        out.add(decoder.decompress(data, out.room))
        while not decoder.eof:
            if decoder.needs_input:
                raise EOFError("truncated")
            out.add(decoder.decompress(b"", out.room))
        data = decoder.unused_data
    return bytes(out.data)


_DECODERS: dict[str, Callable[[bytes, int], bytes]] = {
    "zstd": _zstd, "gzip": _zlib(_GZIP_WBITS), "x-gzip": _zlib(_GZIP_WBITS), "deflate": _zlib(_ZLIB_WBITS)}
