"""Typed settings of the Responses gateway, parsed once from CLI flags and env vars.

Every flag `--some-name` has an environment variable `TRTLLM_GATEWAY_SOME_NAME`; the flag
wins over the variable, the variable over the default. `--help` documents each one.
List-valued settings (`--service`, `--api-keys`) take comma-separated values.
"""
from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trtllm_common.settings as common
from trtllm_common.loop import EVENT_LOOPS

from .discovery import parse_targets
from .reasoning_crypto import parse_keys

ENV_PREFIX = "TRTLLM_GATEWAY_"

REASONING_DIALECTS = ("openai", "open_responses")

_field = common.setting


@dataclass(frozen=True)
class GatewaySettings:
    host: str = _field("127.0.0.1", "Address the HTTP server binds to.")
    port: int = _field(8080, "HTTP port (0 picks a free port).")
    workers: int = _field(
        0, "Gateway processes serving the port, under a parent that supervises them (1: one process, no "
        "parent). 0: the CPUs the cgroup allows (its CPU quota rounded down, at least 1), or 1 with an "
        "in-memory store.")
    service: tuple[str, ...] = _field(
        ("127.0.0.1:50051",), "Inference service replicas, comma-separated: host:port (one replica) "
        "and/or dns:///name:port (every A/AAAA record is a replica, re-resolved periodically).")
    resolve_interval_s: float = _field(10.0, "How often dns:/// service targets are re-resolved, in seconds.")
    load_poll_interval_s: float = _field(
        1.0, "How often each replica's gRPC health and GetLoad are polled for routing, in seconds.")
    affinity_slack: int = _field(
        4, "Requests with a prompt_cache_key stay on the key's replica while its outstanding requests "
        "are at most 2 x the least-loaded replica's + this; past that they go to the key's next replica.")
    store_url: str = _field(
        "sqlite:///./var/responses.db",
        "Response store URL: sqlite:///relative.db, sqlite:////abs.db, sqlite://:memory: or "
        "postgresql://user@host/db.")
    store_retention_s: float = _field(
        0.0, "Delete stored responses older than this many seconds (0 keeps them forever).")
    background_workers: int = _field(
        16, "Background responses each gateway process (each of --workers) runs at once (0: it runs none, "
        "other processes and replicas do).")
    job_lease_s: float = _field(
        30.0, "Lease of a running background response or stored stream, renewed every third of it; "
        "when its replica dies, another takes it over after this long.")
    job_max_attempts: int = _field(
        3, "Claims of a background response before it is failed (it is re-run only when none of "
        "its output had been streamed).")
    event_log: str = _field(
        "stored", "Which responses keep an event log in the store (read by GET ?stream=true&starting_after=N): "
        "stored: background responses and every stream:true store:true response (any stored stream can be "
        "resumed or followed while it runs); background: background responses only, as OpenAI (a "
        "foreground stored stream is saved once, at its end, so it costs about what an unstored one does).",
        choices=("stored", "background"))
    event_poll_interval_s: float = _field(
        0.2, "How often resumed streams, cancel requests and the background queue are polled "
        "in the store.")
    claim_backoff_max_s: float = _field(
        2.0, "While a gateway process owns no background job and finds none to claim, its claim poll "
        "slows from --event-poll-interval-s up to this (at most a third of --job-lease-s); its own "
        "creates are still claimed at once.")
    api_keys: tuple[str, ...] = _field(
        (), "Accepted API keys, comma-separated. Empty (and no --api-keys-file) disables auth.")
    api_keys_file: str | None = _field(None, "File with one accepted API key per line (# comments).")
    metrics_api_key: str = _field(
        "", "Bearer key that GET /metrics requires (its series name the replicas' addresses). Empty: public.")
    max_body_bytes: int = _field(16 * 1024 * 1024, "Largest request body accepted; larger gets 413.")
    max_input_items: int = _field(
        10_000, "Most items in a request's input, and most content parts in all its items together; "
        "more gets 400.")
    max_content_parts: int = _field(1_000, "Most content parts in one input item; more gets 400.")
    max_tools: int = _field(128, "Most tools in a request (OpenAI's limit); more gets 400.")
    max_schema_bytes: int = _field(
        1024 * 1024, "Most bytes of JSON Schema in a request (every tool's parameters plus text.format's "
        "schema, as compact UTF-8 JSON); more gets 400.")
    header_timeout_s: float = _field(
        75.0, "A connection must send a whole request line and headers within this many seconds of "
        "opening or of its previous response (idle keep-alive time included), else it is closed.")
    body_timeout_s: float = _field(
        120.0, "A request body must arrive whole within this many seconds of its headers, else 408.")
    max_connections: int = _field(
        4096, "Most open HTTP connections (lowered to fit the open-file limit); more get 503 at once.")
    ping_interval_s: float = _field(15.0, "Idle SSE streams get a ': ping' comment this often.")
    request_timeout_s: float = _field(
        600.0, "Deadline of one generation on the service (whole stream), in seconds.")
    rpc_timeout_s: float = _field(10.0, "Deadline of unary service calls (CountTokens, GetModelInfo, health).")
    model_info_ttl_s: float = _field(30.0, "How long GetModelInfo answers are cached.")
    truncation_reserve_tokens: int = _field(
        256, "With truncation=auto and no max_output_tokens: tokens kept free for the output.")
    max_message_bytes: int = _field(16 * 1024 * 1024, "Largest gRPC message sent or received.")
    keepalive_time_s: float = _field(30.0, "gRPC keepalive ping interval on the service channel.")
    keepalive_timeout_s: float = _field(10.0, "How long to wait for a gRPC keepalive ack.")
    shutdown_timeout_s: float = _field(30.0, "On SIGTERM/SIGINT, how long open streams may take to finish.")
    reasoning_dialect: str = _field(
        "openai", "Event names of raw reasoning text: openai (response.reasoning_text.*) or "
        "open_responses (response.reasoning.*).", choices=REASONING_DIALECTS)
    reasoning_key: tuple[str, ...] = _field(
        (), "Keys of reasoning encrypted_content, comma-separated id:secret (secret >= 32 characters); "
        "the first encrypts, all decrypt (rotation). Empty: a random key per process (replicas and "
        "restarts cannot open each other's).")
    default_temperature: float = _field(
        1.0, "temperature of requests that send none (OpenAI's default, 1.0; Codex sends none: a small "
        "model answers more reliably near 0).")
    default_max_output_tokens: int = _field(
        0, "max_output_tokens of requests that send none (0: up to the end of the context; Codex sends none).")
    hosted_tools: str = _field(
        "drop", "Hosted tools (web_search, file_search, mcp, ...), which this server cannot run: drop "
        "(not offered to the model, echoed, logged and counted) or reject (400).", choices=("drop", "reject"))
    log_level: str = _field("INFO", "Log level.")
    log_format: str = _field("json", "Log format.", choices=("json", "text"))
    event_loop: str = _field(
        "uvloop", "Event loop: uvloop (libuv: less CPU per event) or asyncio (the standard library's).",
        choices=EVENT_LOOPS)

    def replace(self, **changes: Any) -> GatewaySettings:
        return dataclasses.replace(self, **changes)

    def all_api_keys(self) -> tuple[str, ...]:
        """Keys from --api-keys plus --api-keys-file (read once at startup)."""
        keys = list(self.api_keys)
        if self.api_keys_file:
            for line in Path(self.api_keys_file).read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    keys.append(line)
        return tuple(keys)


def in_memory_store(url: str) -> bool:
    """A store private to one process (``sqlite://:memory:``)."""
    return url.endswith(":memory:")


def _help(f: dataclasses.Field, env: str) -> str:
    default = ",".join(f.default) if isinstance(f.default, tuple) else f.default
    text = f"{f.metadata['help']} [env {env}; default: {default if default not in ('', None) else 'none'}]"
    return text.replace("%", "%%")


def build_parser() -> argparse.ArgumentParser:
    return common.build_parser(
        GatewaySettings, ENV_PREFIX, _help, prog="trtllm-responses-gateway",
        description="OpenAI Responses API gateway over the trtllm_responses inference service.")


def parse_settings(argv: Sequence[str] | None = None, env: dict[str, str] | None = None) -> GatewaySettings:
    """Flags over env vars over defaults; raises SystemExit on a bad value, like argparse."""
    parser = build_parser()
    settings = common.parse(GatewaySettings, parser, ENV_PREFIX, argv, env)
    _check(parser, settings)
    return settings


def _check(parser: argparse.ArgumentParser, s: GatewaySettings) -> None:
    try:
        parse_targets(s.service)
    except ValueError as exc:
        parser.error(str(exc))
    if s.workers < 0 or (s.workers > 1 and in_memory_store(s.store_url)):
        parser.error("--workers must be >= 0, and 0 or 1 with an in-memory store (each process would have its own)")
    if s.resolve_interval_s <= 0 or s.load_poll_interval_s <= 0:
        parser.error("--resolve-interval-s and --load-poll-interval-s must be positive")
    if s.affinity_slack < 0:
        parser.error("--affinity-slack must be >= 0")
    if s.background_workers < 0 or s.job_lease_s <= 0 or s.job_max_attempts < 1 or s.event_poll_interval_s <= 0 \
            or s.claim_backoff_max_s < 0:
        parser.error("--background-workers and --claim-backoff-max-s must be >= 0, --job-max-attempts >= 1, "
                     "and --job-lease-s and --event-poll-interval-s positive")
    if s.max_body_bytes <= 0 or s.ping_interval_s <= 0 or s.request_timeout_s <= 0:
        parser.error("--max-body-bytes, --ping-interval-s and --request-timeout-s must be positive")
    if s.header_timeout_s <= 0 or s.body_timeout_s <= 0 or s.max_connections < 1:
        parser.error("--header-timeout-s, --body-timeout-s and --max-connections must be positive")
    if not 0 <= s.default_temperature <= 2 or not (s.default_max_output_tokens == 0 or
                                                   16 <= s.default_max_output_tokens < 2**31):
        parser.error("--default-temperature must be in [0, 2], --default-max-output-tokens 0 or at least 16")
    if min(s.max_input_items, s.max_content_parts, s.max_tools, s.max_schema_bytes) < 1:
        parser.error("--max-input-items, --max-content-parts, --max-tools and --max-schema-bytes must be positive")
    try:
        parse_keys(s.reasoning_key)
    except ValueError as exc:
        parser.error(str(exc))
    if s.api_keys_file and not Path(s.api_keys_file).is_file():
        parser.error(f"--api-keys-file {s.api_keys_file!r} does not exist")
