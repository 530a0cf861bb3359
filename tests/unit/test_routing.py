"""Unit tests of replica routing: the picker, the retry-once policy, target parsing and
discovery diffs (pure, fake load numbers), and the pool's retire-after-in-flight rule."""
from __future__ import annotations

import random
import socket
from collections import Counter

import grpc
import pytest

from trtllm_gateway.discovery import diff, parse_target, parse_targets, resolve_all
from trtllm_gateway.metrics import GatewayMetrics
from trtllm_gateway.routing import (
    AFFINITY_FACTOR,
    AFFINITY_SLACK,
    MAX_ATTEMPTS,
    ReplicaState,
    affinity,
    candidates,
    may_retry,
    pick,
    routing_key,
)
from trtllm_gateway.service_client import ReplicaPool
from trtllm_gateway.settings import GatewaySettings


def replicas(*loads: int, healthy: bool = True) -> list[ReplicaState]:
    """Replicas r0, r1, ... whose own in-flight counts are ``loads``."""
    return [ReplicaState(f"r{i}", in_flight=n, healthy=healthy) for i, n in enumerate(loads)]


# --- outstanding work ----------------------------------------------------------------

def test_outstanding_adds_other_clients_share_of_the_last_report():
    r = ReplicaState("a", in_flight=2, healthy=True)
    r.record_load(queued=3, running=4, draining=False)   # 7 reported while we had 2 in flight
    assert (r.reported, r.own_at_report) == (7, 2)
    assert r.outstanding() == 2 + 5
    r.in_flight = 4                                       # two more of ours since the report
    assert r.outstanding() == 4 + 5


def test_outstanding_never_counts_a_negative_share():
    r = ReplicaState("a", in_flight=3, healthy=True)
    r.record_load(queued=0, running=1, draining=False)   # the server had not admitted ours yet
    assert r.outstanding() == 3


def test_outstanding_without_a_report_is_own_in_flight():
    assert ReplicaState("a", in_flight=5).outstanding() == 5


# --- the picker ------------------------------------------------------------------------

def test_pick_takes_the_least_outstanding():
    rs = replicas(3, 1, 2)
    assert pick(rs, random.Random(0)).address == "r1"


def test_pick_counts_other_clients_load():
    rs = replicas(0, 1, 1)
    rs[0].record_load(queued=2, running=3, draining=False)   # r0 is busy with another gateway's work
    assert pick(rs, random.Random(0)).address in ("r1", "r2")


def test_ties_are_broken_at_random_among_the_least_only():
    rs = replicas(1, 0, 0, 0)
    picks = Counter(pick(rs, random.Random(seed)).address for seed in range(600))
    assert set(picks) == {"r1", "r2", "r3"}
    assert all(150 <= picks[a] <= 250 for a in ("r1", "r2", "r3")), picks


def test_unhealthy_draining_and_retiring_replicas_are_out_of_rotation():
    rs = replicas(5, 0, 0, 0)
    rs[1].healthy = False
    rs[2].draining = True
    rs[3].retiring = True
    assert [r.address for r in candidates(rs)] == ["r0"]
    assert pick(rs, random.Random(0)).address == "r0"


def test_a_replica_rejoins_when_healthy_again():
    rs = replicas(3, 0)
    rs[1].healthy = False
    assert pick(rs, random.Random(0)).address == "r0"
    rs[1].healthy = True
    assert pick(rs, random.Random(0)).address == "r1"


def test_no_healthy_replica_falls_back_to_any_not_retiring():
    rs = replicas(2, 1, 0, healthy=False)
    rs[2].retiring = True
    assert pick(rs, random.Random(0)).address == "r1"


def test_nothing_to_pick():
    assert pick([], random.Random(0)) is None
    rs = replicas(0)
    rs[0].retiring = True
    assert pick(rs, random.Random(0)) is None


def test_excluded_replicas_are_not_picked():
    rs = replicas(0, 4, 9)
    assert pick(rs, random.Random(0), exclude=["r0"]).address == "r1"
    assert pick(rs, random.Random(0), exclude=["r0", "r1", "r2"]) is None


def _closed_loop(rs: list[ReplicaState], requests: int, concurrency: int) -> Counter:
    """Acquire/release bookkeeping as the pool does it; equal requests finish oldest first."""
    rng, sent, in_flight = random.Random(7), Counter(), []
    for _ in range(requests):
        if len(in_flight) == concurrency:
            in_flight.pop(0).in_flight -= 1
        r = pick(rs, rng)
        r.in_flight += 1
        in_flight.append(r)
        sent[r.address] += 1
    return sent


def test_equal_requests_spread_exactly_evenly():
    assert _closed_loop(replicas(0, 0, 0), 60, 6) == {"r0": 20, "r1": 20, "r2": 20}


def test_a_replica_busy_with_other_clients_gets_less():
    rs = replicas(0, 0, 0)
    rs[0].record_load(queued=0, running=2, draining=False)   # another gateway keeps 2 running there
    sent = _closed_loop(rs, 60, 6)
    assert sent["r0"] < sent["r1"] and sent["r0"] < sent["r2"], sent


# --- cache affinity (prompt_cache_key) ------------------------------------------------

KEYS = [f"t\0conversation-{n}" for n in range(400)]


def _owner(rs: list[ReplicaState], key: str) -> str:
    return max(rs, key=lambda r: affinity(key, r.address)).address


def test_a_key_always_goes_to_the_same_replica_whatever_the_rng_or_order():
    rs = replicas(0, 0, 0, 0)
    for key in KEYS[:50]:
        chosen = {pick(order, random.Random(seed), key=key).address
                  for seed in range(5) for order in (rs, rs[::-1])}
        assert chosen == {_owner(rs, key)}


def test_keys_spread_over_the_replicas():
    rs = replicas(0, 0, 0, 0)
    owners = Counter(pick(rs, random.Random(0), key=key).address for key in KEYS)
    assert set(owners) == {"r0", "r1", "r2", "r3"} and min(owners.values()) >= 60, owners


def test_the_keys_replica_keeps_them_up_to_the_bound_then_the_next_in_the_ranking_takes_them():
    rs = replicas(0, 0, 0)
    key = KEYS[0]
    first, second, third = sorted(rs, key=lambda r: affinity(key, r.address), reverse=True)
    third.in_flight = 1                                   # the least loaded: 1
    bound = AFFINITY_FACTOR * 1 + AFFINITY_SLACK
    first.in_flight, second.in_flight = bound, bound      # at the bound: still the key's replica
    assert pick(rs, random.Random(0), key=key) is first
    first.in_flight = bound + 1                           # overloaded: the next in the key's ranking
    assert pick(rs, random.Random(0), key=key) is second
    second.in_flight = bound + 1                          # both overloaded: the least loaded
    assert pick(rs, random.Random(0), key=key) is third
    assert pick(rs, random.Random(0), key=key, slack=bound) is first  # --affinity-slack widens the bound


def test_a_gone_replica_moves_only_its_own_keys_and_gets_them_back():
    rs = replicas(0, 0, 0)
    before = {key: pick(rs, random.Random(0), key=key).address for key in KEYS}
    rs[1].healthy = False
    during = {key: pick(rs, random.Random(0), key=key).address for key in KEYS}
    assert "r1" not in during.values()
    assert all(during[k] == before[k] for k in KEYS if before[k] != "r1")  # nobody else's keys moved
    assert pick(rs, random.Random(0), exclude=[before[KEYS[0]]], key=KEYS[0]).address != before[KEYS[0]]
    rs[1].healthy = True
    assert {key: pick(rs, random.Random(0), key=key).address for key in KEYS} == before


def test_without_a_key_the_choice_is_least_loaded():
    rs = replicas(3, 0, 5)
    assert routing_key("tenant", None) is None and routing_key("tenant", "") is None
    assert pick(rs, random.Random(0), key=None).address == "r1"


def test_the_key_is_scoped_to_the_tenant():
    assert routing_key("a", "k") != routing_key("b", "k")
    rs = replicas(*([0] * 8))
    owners = {pick(rs, random.Random(0), key=routing_key(f"tenant-{n}", "same")).address for n in range(40)}
    assert len(owners) > 1  # one popular key name does not pile every tenant onto one replica


# --- the retry policy ---------------------------------------------------------------

@pytest.mark.parametrize("code, received, attempts, expected", [
    (grpc.StatusCode.UNAVAILABLE, False, 1, True),          # replica gone before output: retry
    (grpc.StatusCode.UNAVAILABLE, True, 1, False),          # output already sent: never
    (grpc.StatusCode.UNAVAILABLE, False, MAX_ATTEMPTS, False),  # only once
    (grpc.StatusCode.RESOURCE_EXHAUSTED, False, 1, False),  # a full queue is the client's 429
    (grpc.StatusCode.INVALID_ARGUMENT, False, 1, False),
    (grpc.StatusCode.DEADLINE_EXCEEDED, False, 1, False),
    (grpc.StatusCode.INTERNAL, False, 1, False),
    (None, False, 1, False),
])
def test_retry_once_policy(code, received, attempts, expected):
    assert may_retry(code, received, attempts) is expected


# --- targets and discovery --------------------------------------------------------

def test_parse_targets():
    ts = parse_targets(["10.0.0.1:50051,dns:///inf.ns.svc.cluster.local:50051", "[::1]:7", "dns:50051"])
    assert [(t.host, t.port, t.dns) for t in ts] == [
        ("10.0.0.1", 50051, False), ("inf.ns.svc.cluster.local", 50051, True), ("::1", 7, False),
        ("dns", 50051, False)]


@pytest.mark.parametrize("entry, message", [
    ("localhost", "expected host:port"), ("h:0", "port must be"), ("h:http", "port must be"),
    (":50051", "missing host"), ("dns:///name", "expected host:port"), ("::1:5", "IPv6 as [addr]:port"),
    ("unix:/run/x.sock", "only host:port and dns:///"), ("dns://8.8.8.8/name:1", "only host:port"),
])
def test_bad_targets_are_clear_errors(entry, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_target(entry)
    with pytest.raises(ValueError, match="at least one"):
        parse_targets([" , "])


def fake_dns(records: dict[str, list[str]]):
    async def getaddrinfo(host, port, *, type=0):
        if host not in records:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        family = {True: socket.AF_INET6, False: socket.AF_INET}
        return [(family[":" in ip], type, 6, "", (ip, port)) for ip in records[host]]
    return getaddrinfo


async def test_resolve_all_lists_every_record_and_keeps_fixed_addresses():
    dns = fake_dns({"inf": ["10.0.0.1", "10.0.0.2", "10.0.0.1", "fd00::3"]})
    got, complete = await resolve_all(parse_targets(["inf-0:1", "dns:///inf:50051"]), dns)
    assert complete and got == {"inf-0:1", "10.0.0.1:50051", "10.0.0.2:50051", "[fd00::3]:50051"}


async def test_failed_lookup_retires_nothing():
    got, complete = await resolve_all(parse_targets(["dns:///gone:1", "a:2"]), fake_dns({}))
    assert not complete and got == {"a:2"}
    assert diff({"a:2", "10.0.0.1:1"}, got, complete) == (set(), set())
    assert diff({"a:2", "10.0.0.1:1"}, {"a:2", "10.0.0.9:1"}, True) == ({"10.0.0.9:1"}, {"10.0.0.1:1"})


# --- the pool: retiring replicas finish their in-flight calls first -----------------

def _pool(*service: str, dns=None) -> ReplicaPool:
    settings = GatewaySettings(service=service, rpc_timeout_s=0.5)
    return ReplicaPool(parse_targets(service), settings, GatewayMetrics(), random.Random(0), dns)


async def test_retired_replica_closes_after_its_last_call():
    pool = _pool("127.0.0.1:1", "127.0.0.1:2")
    try:
        for r in pool.replicas:
            r.healthy = True
        busy = pool.acquire()
        pool._retire(busy)
        assert busy in pool.replicas and not busy.in_rotation   # still serving its call
        assert all(pool.acquire() is not busy for _ in range(5))
        pool.release(busy)
        assert busy not in pool.replicas
    finally:
        await pool.close()


async def test_refresh_adds_new_records_and_retires_vanished_ones():
    records = {"inf": ["127.0.0.1", "127.0.0.2"]}
    pool = _pool("dns:///inf:9", dns=fake_dns(records))   # port 9 (discard): nothing listens
    try:
        await pool.refresh()
        assert sorted(r.address for r in pool.replicas) == ["127.0.0.1:9", "127.0.0.2:9"]
        assert not any(r.healthy for r in pool.replicas)     # joined, but failed their first probe
        held = next(r for r in pool.replicas if r.address == "127.0.0.2:9")
        held.in_flight = 1
        records["inf"] = ["127.0.0.2", "127.0.0.3"]
        await pool.refresh()
        assert sorted(r.address for r in pool.replicas) == ["127.0.0.2:9", "127.0.0.3:9"]
        records["inf"] = ["127.0.0.3"]
        await pool.refresh()
        assert held in pool.replicas and held.retiring        # waits for its call
        pool.release(held)
        assert [r.address for r in pool.replicas] == ["127.0.0.3:9"]
    finally:
        await pool.close()
