"""API keys and tenants: Bearer parsing, rejection, tenant derivation."""
from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from trtllm_gateway.auth import Authenticator, tenant_of
from trtllm_gateway.errors import ApiError


def _request(authorization: str | None = None):
    headers = {"Authorization": authorization} if authorization is not None else {}
    return make_mocked_request("GET", "/v1/models", headers=headers)


def test_no_keys_means_auth_off_and_one_tenant():
    auth = Authenticator(())
    assert not auth.enabled and auth.tenant(_request()) == "" and auth.tenant(_request("Bearer x")) == ""


def test_each_key_is_its_own_tenant_and_the_key_is_not_stored():
    auth = Authenticator(("sk-a", "sk-b"))
    a, b = auth.tenant(_request("Bearer sk-a")), auth.tenant(_request("bearer sk-b"))
    assert a and b and a != b
    assert a == tenant_of(b"sk-a") and "sk-a" not in a


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic sk-a", "Bearer sk-c", "Bearer sk-a2"])
def test_missing_or_unknown_keys_are_401(header):
    with pytest.raises(ApiError) as info:
        Authenticator(("sk-a",)).tenant(_request(header))
    assert info.value.status == 401 and info.value.kind.type == "authentication_error"


def test_a_key_that_is_not_utf8_is_401_not_500():
    """aiohttp hands over header bytes that are not UTF-8 as surrogate escapes ("\\udcff"), and
    make_mocked_request cannot build such a request, so this stand-in carries just the headers."""
    class Request:
        headers = {"Authorization": "Bearer sk-\udcff\udcfe"}

    with pytest.raises(ApiError) as info:
        Authenticator(("sk-a",)).tenant(Request())
    assert info.value.status == 401
