"""Encrypted reasoning content: reasoning a stateless client carries from turn to turn.

Protocol (docs/gateway.md "Reasoning"; docs/responses-api.md §2):

* ``include: ["reasoning.encrypted_content"]`` gives every finished reasoning item an
  ``encrypted_content`` string (:func:`sealer`, called by ``streaming.py``'s reasoning kind):
  ``rsn1.<key id>.<base64url(nonce ‖ ciphertext ‖ tag)>``, unpadded. The plaintext is the
  item's reasoning text (UTF-8); the cipher is AES-256-GCM with a random 96-bit nonce.
* Associated data binds the ciphertext to its format, its key id and the **tenant** (the
  hash of the API key, ``auth.py``): another tenant's gateway call cannot open it, and any
  changed byte fails authentication.
* Keys: ``--reasoning-key id:secret[,id:secret...]``. The first key encrypts; every listed
  key decrypts, so a rotation adds the new key first and drops the old one once clients no
  longer send items sealed with it. A key's AES key is HKDF-SHA256 of its secret (at least
  32 characters, e.g. ``openssl rand -base64 32``), so the secret need not be raw key bytes.
  Unset: one random key per process, with a warning when it is first used -- its items open
  only on the same process, so several replicas, or a restart, need a shared key.
* Input (:func:`reveal`): a reasoning item of the request's own ``input`` that carries
  ``encrypted_content`` is opened and the model sees its text (instead of the item's
  ``summary``/``content``, which the client may have edited or emptied). Content that does not
  open -- malformed, an unknown key id, modified, another tenant's -- is a 400
  ``invalid_encrypted_content`` naming ``input[i].encrypted_content``. Items of the stored
  history (``previous_response_id``, ``conversation``), and stored items an ``item_reference``
  names, were checked when they arrived: they are opened when possible and otherwise rendered
  from their own text.
"""
from __future__ import annotations

import base64
import binascii
import functools
import logging
import os
import re
from collections.abc import Callable, Collection, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import ApiError

log = logging.getLogger("trtllm_gateway.reasoning_crypto")

INCLUDE = "reasoning.encrypted_content"
FORMAT = "rsn1"
KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
MIN_SECRET_CHARS = 32
NONCE_BYTES = 12
_HKDF_INFO = b"trtllm-gateway reasoning encrypted_content v1"


class SealError(ValueError):
    """Encrypted content that does not open; the message says why (safe to show the client)."""


def parse_keys(specs: Sequence[str]) -> list[tuple[str, str]]:
    """``id:secret`` entries as (id, secret), first first; ValueError names the bad entry."""
    keys: list[tuple[str, str]] = []
    for n, spec in enumerate(specs):
        kid, sep, secret = spec.partition(":")
        if not sep or not KEY_ID.match(kid):
            raise ValueError(f"--reasoning-key entry {n + 1} must be 'id:secret' with an id of 1-32 "
                             "characters A-Z a-z 0-9 _ -")
        if len(secret) < MIN_SECRET_CHARS:
            raise ValueError(f"--reasoning-key {kid!r}: the secret must be at least {MIN_SECRET_CHARS} characters")
        if any(kid == other for other, _ in keys):
            raise ValueError(f"--reasoning-key {kid!r} is listed twice")
        keys.append((kid, secret))
    return keys


def _derive(secret: bytes) -> AESGCM:
    return AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(secret))


def _aad(kid: str, tenant: str) -> bytes:
    return f"{FORMAT}\0{kid}\0{tenant}".encode()


class Keyring:
    """The keys that open encrypted content; ``primary`` seals."""

    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        self.primary = keys[0][0]
        self.ciphers = {kid: _derive(secret) for kid, secret in keys}

    def seal(self, text: str, tenant: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self.ciphers[self.primary].encrypt(nonce, text.encode(), _aad(self.primary, tenant))
        return f"{FORMAT}.{self.primary}.{base64.urlsafe_b64encode(nonce + sealed).decode().rstrip('=')}"

    def open(self, token: str, tenant: str) -> str:
        fmt, _, rest = token.partition(".")
        kid, _, body = rest.partition(".")
        if fmt != FORMAT or not KEY_ID.match(kid):
            raise SealError("it is not encrypted content issued by this server")
        cipher = self.ciphers.get(kid)
        if cipher is None:
            raise SealError(f"it was sealed with key {kid!r}, which this server does not hold (the key was "
                            "rotated out, or the server restarted without a configured --reasoning-key)")
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            return cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _aad(kid, tenant)).decode()
        except (binascii.Error, ValueError, InvalidTag):  # short, modified, or another tenant's
            raise SealError("it failed authentication: it was modified, or it was issued for another "
                            "API key") from None


@functools.lru_cache(maxsize=8)
def keyring(specs: tuple[str, ...]) -> Keyring:
    """The keyring of ``--reasoning-key`` (settings validated it); unset: a per-process random key."""
    if specs:
        return Keyring([(kid, secret.encode()) for kid, secret in parse_keys(specs)])
    kid = "process-" + os.urandom(4).hex()
    log.warning("no --reasoning-key set: reasoning encrypted_content uses a random key of this process "
                "(%s); it cannot be opened after a restart or by another gateway replica", kid)
    return Keyring([(kid, os.urandom(32))])


def sealer(specs: tuple[str, ...], tenant: str, include: Sequence[str]) -> Callable[[str], str] | None:
    """``StreamState.seal`` for a request: None unless ``include`` asks for encrypted content."""
    if INCLUDE not in include:
        return None
    ring = keyring(specs)
    return lambda text: ring.seal(text, tenant)


def _opened(specs: tuple[str, ...], tenant: str, item: dict) -> dict:
    """``item`` with its encrypted reasoning as its text; raises SealError when it does not open."""
    token = item.get("encrypted_content") if item.get("type") == "reasoning" else None
    if token is None:
        return item
    text = keyring(specs).open(token, tenant)
    return dict(item, summary=[], content=[{"type": "reasoning_text", "text": text}])


def reveal(specs: tuple[str, ...], tenant: str, history: list[dict], items: list[dict],
           stored: Collection[int] = ()) -> list[dict]:
    """``history + items`` with encrypted reasoning opened (see the module docstring).
    ``stored``: indices of ``items`` taken from the store (``item_reference``), read as history."""
    out = []
    for item in history:
        try:
            out.append(_opened(specs, tenant, item))
        except SealError:
            out.append(item)  # stored history was checked when it arrived: its own text stands
    for i, item in enumerate(items):
        try:
            out.append(_opened(specs, tenant, item))
        except SealError as exc:
            if i in stored:
                out.append(item)
                continue
            param = f"input[{i}].encrypted_content"
            raise ApiError("invalid_request", f"Invalid '{param}': {exc}.", param=param,
                           code="invalid_encrypted_content") from None
    return out
