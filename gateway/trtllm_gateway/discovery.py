"""Service targets of the gateway and their resolution to replica addresses.

Protocol (``--service``, comma-separated entries):

* ``host:port`` or ``[v6addr]:port``: one replica, exactly that address (gRPC resolves a
  host name itself and keeps one connection: it is ONE replica however many records it has).
* ``dns:///name:port``: every A/AAAA record of ``name`` is a replica (``ip:port``, IPv6 as
  ``[ip]:port``), as a Kubernetes headless Service publishes its ready pods. The name is
  resolved with ``loop.getaddrinfo`` (in the loop's thread pool, never on the loop) at
  startup and every ``--resolve-interval-s``; the pool adds new addresses and retires
  vanished ones.
* A lookup that fails (NXDOMAIN, resolver down) leaves that name's replicas as they were:
  a DNS hiccup must not empty the rotation. Health checks take dead replicas out anyway.

Other schemes (``dns://authority/...``, ``unix:``, ``ipv4:``) are refused with a clear error.
"""
from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

log = logging.getLogger("trtllm_gateway.discovery")

DNS_PREFIX = "dns:///"
GetAddrInfo = Callable[..., Awaitable[list]]
# gRPC target schemes we do not resolve; "dns:50051" is still host "dns", port 50051
_OTHER_SCHEME = re.compile(r"^(dns|unix|unix-abstract|ipv4|ipv6|vsock|xds):(?!\d+$)")


@dataclass(frozen=True)
class Target:
    text: str      # as configured
    host: str      # without IPv6 brackets
    port: int
    dns: bool      # resolve to every record (dns:///) vs. one fixed address


def _split_host_port(text: str, entry: str) -> tuple[str, int]:
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"service target {entry!r}: expected [ipv6]:port")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f"service target {entry!r}: expected host:port (IPv6 as [addr]:port)")
    if not host:
        raise ValueError(f"service target {entry!r}: missing host")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"service target {entry!r}: port must be a number from 1 to 65535")
    return host, int(port_text)


def parse_target(entry: str) -> Target:
    """One ``--service`` entry; ValueError with a readable message when it is malformed."""
    entry = entry.strip()
    dns = entry.startswith(DNS_PREFIX)
    rest = entry[len(DNS_PREFIX):] if dns else entry
    if not dns and ("://" in entry or _OTHER_SCHEME.match(entry)):
        raise ValueError(f"service target {entry!r}: only host:port and dns:///name:port are supported")
    host, port = _split_host_port(rest, entry)
    return Target(entry, host, port, dns)


def parse_targets(entries: Iterable[str]) -> list[Target]:
    """All entries; an entry may itself hold comma-separated targets (as the env var does)."""
    parts = [part for entry in entries for part in entry.split(",") if part.strip()]
    if not parts:
        raise ValueError("--service needs at least one host:port or dns:///name:port")
    return [parse_target(part) for part in parts]


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def resolve(target: Target, getaddrinfo: GetAddrInfo) -> set[str]:
    """Addresses of one target; raises OSError when a DNS lookup fails."""
    if not target.dns:
        return {format_address(target.host, target.port)}
    infos = await getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    return {format_address(info[4][0], target.port) for info in infos}


async def resolve_all(targets: list[Target], getaddrinfo: GetAddrInfo | None = None) -> tuple[set[str], bool]:
    """(every address found, whether every lookup succeeded)."""
    getaddrinfo = getaddrinfo or asyncio.get_running_loop().getaddrinfo
    results = await asyncio.gather(*(resolve(t, getaddrinfo) for t in targets), return_exceptions=True)
    addresses: set[str] = set()
    complete = True
    for target, result in zip(targets, results, strict=True):
        if isinstance(result, BaseException):
            complete = False
            log.warning("could not resolve service target %s: %s", target.text, result)
        else:
            addresses |= result
    return addresses, complete


def diff(current: Iterable[str], resolved: set[str], complete: bool) -> tuple[set[str], set[str]]:
    """(addresses to add, addresses to retire); an incomplete lookup retires nothing."""
    current = set(current)
    return resolved - current, (current - resolved) if complete else set()
