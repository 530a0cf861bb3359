"""Load-aware replica choice and the retry-once policy (pure: no I/O, no clock).

Protocol:

* Each replica has a :class:`ReplicaState`: this gateway's own in-flight generations on it
  (counted the moment a call starts and ends), the ``queued + running`` it reported on its
  last ``GetLoad`` poll, how many of this gateway's generations were in flight when that
  poll was answered, its health (gRPC ``grpc.health.v1`` Check SERVING), whether it is
  draining (``Load.draining``) and whether it is retiring (gone from DNS; it keeps serving
  its in-flight calls but takes no new ones).
* Outstanding work of a replica = own in-flight now + work of OTHER clients, where other
  work = reported - own in-flight at report time (never below 0). The gateway's own share
  is always current; only other gateways' share is as old as the last poll.
* Without a routing key, :func:`pick` chooses, among replicas in rotation, the one with the
  least outstanding work; ties are broken uniformly at random, so replicas with equal load
  share requests evenly and several gateways with the same (stale) view do not herd onto one
  replica.
  This is an exact scan, not power-of-two-choices: replica counts are small (tens) and the
  scan is O(n). When no replica is in rotation it falls back to any replica not retiring,
  so the caller gets the service's real error instead of an invented one.
* Cache affinity: a request with a routing key (``prompt_cache_key``, scoped to its tenant)
  goes to the candidate that ranks first for the key by rendezvous (highest-random-weight)
  hashing -- a stable hash of (key, replica address), so every gateway agrees without
  coordination and a replica leaving or joining moves only its own keys -- because that
  replica holds the key's prompt prefix in its KV cache. Bounded load, as HAProxy's
  ``hash-balance-factor``: the key's replica is **overloaded** when its outstanding work is
  above ``AFFINITY_FACTOR`` x the least-loaded candidate's + ``slack``
  (``--affinity-slack``); the request then goes to the next replica in the key's ranking that
  is not. The least-loaded candidate is never overloaded, so the worst case is plain
  least-loaded choice; a replica out of rotation is not a candidate at all (its keys go to
  their next replica, and come back when it returns).
* :func:`may_retry`: a generation is retried at most once, on a different replica, and
  only when it failed with UNAVAILABLE (replica gone, connection refused or reset,
  draining) before its first message arrived. A stream that has produced output is never
  retried: its partial output is already on its way to the client.
"""
from __future__ import annotations

import hashlib
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc

MAX_ATTEMPTS = 2  # the first try and one retry
RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})
AFFINITY_FACTOR = 2  # a key's replica is overloaded past 2 x the least-loaded's outstanding + slack
AFFINITY_SLACK = 4   # the default slack: an idle pool does not move a key for a few requests


@dataclass(eq=False)  # replicas are compared by identity
class ReplicaState:
    address: str
    in_flight: int = 0                 # this gateway's generations running on it now
    reported: int | None = None        # queued + running at the last GetLoad answer
    own_at_report: int = 0             # in_flight when that answer arrived
    healthy: bool = False              # last health check said SERVING (unknown = False)
    draining: bool = False             # last GetLoad said it accepts no new work
    retiring: bool = False             # left the DNS answer; closes when in_flight is 0

    @property
    def in_rotation(self) -> bool:
        return self.healthy and not self.draining and not self.retiring

    def outstanding(self) -> int:
        others = 0 if self.reported is None else max(0, self.reported - self.own_at_report)
        return self.in_flight + others

    def record_load(self, queued: int, running: int, draining: bool) -> None:
        self.reported = queued + running
        self.own_at_report = self.in_flight
        self.draining = draining


R = TypeVar("R", bound=ReplicaState)


def candidates(replicas: Sequence[R], exclude: Collection[str] = ()) -> list[R]:
    """Replicas a new request may go to: in rotation, else (fallback) any not retiring."""
    usable = [r for r in replicas if r.address not in exclude and not r.retiring]
    healthy = [r for r in usable if r.in_rotation]
    return healthy or usable


def routing_key(tenant: str, prompt_cache_key: str | None) -> str | None:
    """The cache-affinity key of a request: its ``prompt_cache_key`` within its tenant (so two
    tenants' equal keys spread like any two keys); None without one."""
    return f"{tenant}\0{prompt_cache_key}" if prompt_cache_key else None


def affinity(key: str, address: str) -> int:
    """The rendezvous weight of ``address`` for ``key`` (the same in every process: not ``hash``)."""
    digest = hashlib.blake2b(f"{key}\0{address}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def pick(replicas: Sequence[R], rng: random.Random, exclude: Collection[str] = (), key: str | None = None,
         slack: int = AFFINITY_SLACK) -> R | None:
    """The key's replica unless overloaded (see the module docstring); without a key, the least
    outstanding candidate, ties broken at random. None when there is no candidate."""
    pool = candidates(replicas, exclude)
    if not pool:
        return None
    least = min(r.outstanding() for r in pool)
    if key is not None:
        bound = AFFINITY_FACTOR * least + slack
        ranked = sorted(pool, key=lambda r: affinity(key, r.address), reverse=True)
        return next(r for r in ranked if r.outstanding() <= bound)  # the least loaded always qualifies
    return rng.choice([r for r in pool if r.outstanding() == least])


def may_retry(code: grpc.StatusCode | None, received_any: bool, attempts: int) -> bool:
    """Whether a failed generation goes to another replica (see the module docstring)."""
    return not received_any and attempts < MAX_ATTEMPTS and code in RETRYABLE_CODES
