"""The real Codex CLI (``@openai/codex``, pinned in the Makefile's ``codex`` target) against
the gateway: ``codex exec --json`` in a temp dir with a temp ``CODEX_HOME`` whose config
points a custom provider at the gateway (``wire_api = "responses"``).

* Scripted engine (the service, parsers, gRPC and gateway are real; the "model's" words
  come from a script): the first turn answers with Codex's shell tool call,
  ``exec_command`` with ``{"cmd": "echo codex-ok"}``; Codex runs it and sends the output
  back as a ``function_call_output``, which reaches the model as a tool result; the model
  answers and the turn completes. Over SSE, and over Codex's WebSocket transport
  (``supports_websockets = true`` on the provider).
* A second turn (``codex exec resume --last``) over a scripted reasoning model: Codex
  sends back, as ``store: false`` clients do, the first turn's reasoning item with its
  ``encrypted_content``; the gateway opens it and the model reads its earlier reasoning
  (a gateway with another ``--reasoning-key`` refuses it).
* The real default model (8k context) with Codex's prompt trimmed (docs/gateway.md
  "Clients") behind a gateway that fills what Codex does not send (``--default-temperature
  0``, ``--default-max-output-tokens 256``): the turn completes. Untrimmed, the request is
  valid and refused only as ``context_length_exceeded``.

Codex runs with ``--strict-config``, so every config key used here exists in the pinned
version.

The Codex binary is installed by ``make codex`` (``make test`` runs it); the fixture runs it
when the binary is missing.
"""
from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from tests.fixtures.gateway import start_gateway
from tests.fixtures.scripted_engine import ScriptedEngine
from tests.fixtures.service import serve_in_process

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CODEX = ROOT / ".venv" / "codex" / "node_modules" / ".bin" / "codex"
COMMAND = "echo codex-ok"
CALL = '<tool_call>\n{"name": "exec_command", "arguments": {"cmd": "echo codex-ok"}}\n</tool_call>'
ANSWER = "The command printed codex-ok."
#: Codex's prompt trimmed to fit an 8k-token model (docs/gateway.md "Clients"). Codex 0.171
#: has no output-cap key: the gateway's --default-max-output-tokens is the cap.
TRIMMED = """
model_instructions_file = "{instructions}"
model_context_window = 8192
web_search = "disabled"
include_permissions_instructions = false
include_environment_context = false
[agents]
enabled = false
[features]
goals = false
"""


@pytest.fixture(scope="module")
def codex() -> Path:
    if not CODEX.exists():
        subprocess.run(["make", "-s", "codex"], cwd=ROOT, check=True)
    return CODEX


@dataclass
class Run:
    events: list[dict]
    stderr: str
    returncode: int


def _config(home: Path, base_url: str, *, websockets: bool = False, extra: str = "") -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(f"""
model = "default"
model_provider = "gateway"
approval_policy = "never"
sandbox_mode = "danger-full-access"
{extra}
[model_providers.gateway]
name = "trtllm-responses gateway"
base_url = "{base_url}"
wire_api = "responses"
env_key = "GATEWAY_API_KEY"
supports_websockets = {str(websockets).lower()}
""")


async def run_codex(codex: Path, home: Path, work: Path, prompt: str, timeout: float = 50,
                    resume: bool = False) -> Run:
    """``codex exec --json`` as a subprocess (the event loop keeps serving the gateway);
    ``resume``: ``codex exec resume --last``, the next turn of the newest session in ``work``."""
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CODEX_HOME": str(home), "GATEWAY_API_KEY": "dummy-key", "NO_COLOR": "1"}
    command = ["exec", "resume", "--last"] if resume else ["exec", "--color", "never"]
    proc = await asyncio.create_subprocess_exec(
        str(codex), *command, "--json", "--strict-config", "--skip-git-repo-check", prompt,
        cwd=work, env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
    events = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    return Run(events, err.decode(), proc.returncode)


def _reply(prompt: str) -> str:
    last_turn = prompt.rsplit("<|im_start|>user\n", 1)[-1]
    return ANSWER if "<tool_response>" in last_turn else CALL


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def scripted(tokenizer, tmp_path_factory):
    prompts: list[str] = []

    def script(ids: list[int]) -> str:
        prompts.append(tokenizer.decode(ids))
        return _reply(prompts[-1])

    # Codex's untrimmed prompt is about 10k tokens: the scripted model gets room for it
    engine = ScriptedEngine(tokenizer, script, model_id="scripted-codex", context=32768)
    server = await serve_in_process(engine, tool_parser="hermes")
    handle, runner = await start_gateway(server.address, tmp_path_factory.mktemp("codex"))
    yield handle, prompts
    await handle.client.close()
    await runner.cleanup()
    await server.stop()


async def _responses_requests(handle) -> dict[str, float]:
    """Requests to /v1/responses so far by method: POST (SSE) or GET (the WebSocket)."""
    counts = {"POST": 0.0, "GET": 0.0}
    async with aiohttp.ClientSession() as session, session.get(handle.root + "/metrics") as resp:
        for line in (await resp.text()).splitlines():
            match = re.match(r'trtllm_gateway_http_requests_total\{method="(\w+)",route="/v1/responses",.*\} (\S+)',
                             line)
            if match:
                counts[match.group(1)] += float(match.group(2))
    return counts


def _command_items(run: Run) -> list[dict]:
    return [e["item"] for e in run.events
            if e.get("type") == "item.completed" and e["item"].get("type") == "command_execution"]


@pytest.mark.parametrize("transport", ["sse", "websocket"])
async def test_codex_runs_the_engines_command_and_completes_the_turn(codex, scripted, tmp_path, transport):
    handle, prompts = scripted
    first, before = len(prompts), await _responses_requests(handle)
    home = tmp_path / "codex-home"
    _config(home, handle.base_url, websockets=transport == "websocket")
    run = await run_codex(codex, home, tmp_path / "work", "Run the greeting command.")
    assert run.returncode == 0, run.stderr[-3000:]
    [command] = _command_items(run)
    assert COMMAND in command["command"] and "codex-ok" in command["aggregated_output"], command
    assert command["exit_code"] == 0
    assert [e for e in run.events if e["type"] == "turn.completed"], run.events
    messages = [e["item"]["text"] for e in run.events
                if e.get("type") == "item.completed" and e["item"].get("type") == "agent_message"]
    assert messages == [ANSWER]
    after = await _responses_requests(handle)
    if transport == "websocket":  # both model calls went over Codex's WebSocket, none over SSE
        assert after["POST"] == before["POST"] and after["GET"] > before["GET"], (before, after)
    else:
        assert after["POST"] == before["POST"] + 2 and after["GET"] == before["GET"], (before, after)
    seen = prompts[first:]
    assert len(seen) == 2 and '"name": "exec_command"' in seen[0]
    # Codex's function_call_output became the tool result the model read in turn two
    result = seen[1].rsplit("<tool_response>", 1)[-1]
    assert "codex-ok" in result and CALL.split("\n")[1] in seen[1]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def small_model_gateway(service, tmp_path_factory):
    """A gateway over the real default model, set up as docs/gateway.md "Clients" says."""
    handle, runner = await start_gateway(service.address, tmp_path_factory.mktemp("codex-real"),
                                         default_temperature=0.0, default_max_output_tokens=256)
    yield handle
    await handle.client.close()
    await runner.cleanup()


async def test_codex_with_the_real_model_and_a_trimmed_prompt(codex, small_model_gateway, tmp_path):
    instructions = tmp_path / "instructions.md"
    instructions.write_text("You are a terse assistant. Answer in one short sentence.\n")
    home = tmp_path / "codex-home"
    _config(home, small_model_gateway.base_url, extra=TRIMMED.format(instructions=instructions))
    run = await run_codex(codex, home, tmp_path / "work", "Say hello.")
    assert run.returncode == 0, (run.stderr[-3000:], run.events)
    assert [e for e in run.events if e["type"] == "turn.completed"], run.events
    messages = [e["item"]["text"] for e in run.events
                if e.get("type") == "item.completed" and e["item"].get("type") == "agent_message"]
    assert messages and messages[-1].strip(), run.events


async def test_codex_untrimmed_prompt_is_refused_only_for_its_length(codex, gateway, tmp_path):
    """Codex's default prompt (about 10k tokens) is a valid request; the 8k default model's
    only refusal is context_length_exceeded, which Codex reports as running out of room."""
    home = tmp_path / "codex-home"
    _config(home, gateway.base_url)
    run = await run_codex(codex, home, tmp_path / "work", "Say hello.")
    [failed] = [e for e in run.events if e["type"] == "turn.failed"]
    assert "ran out of room in the model's context window" in failed["error"]["message"], run.events


THOUGHT = "The user's lucky number is 7321."
#: A reasoning model's kind of template: earlier assistant turns render their reasoning as
#: <think>...</think>, so the prompt shows whether the reasoning Codex sent back reached the model.
REASONING_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.role == 'assistant' and m.reasoning_content %}<think>{{ m.reasoning_content }}</think>{% endif %}"
    "{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
REMEMBERED = "I remember my reasoning."


def _reasoning_reply(prompt: str) -> str:
    if f"<think>{THOUGHT}</think>" in prompt:
        return REMEMBERED
    return "I have no earlier reasoning." if "What did you think?" in prompt else f"<think>{THOUGHT}</think>Noted."


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def reasoning_stack(tokenizer, tmp_path_factory):
    """A scripted reasoning model (the `think` parser) behind two gateways with different
    --reasoning-key: the second cannot open what the first sealed."""
    templated = copy.copy(tokenizer)
    templated.chat_template = REASONING_TEMPLATE
    prompts: list[str] = []

    def script(ids: list[int]) -> str:
        prompts.append(templated.decode(ids))
        return _reasoning_reply(prompts[-1])

    engine = ScriptedEngine(templated, script, model_id="scripted-codex-reasoning", context=32768)
    server = await serve_in_process(engine, tool_parser="hermes", reasoning_parser="think")
    first, first_runner = await start_gateway(server.address, tmp_path_factory.mktemp("codex-reasoning"),
                                              reasoning_key=("k1:" + "a" * 32,))
    other, other_runner = await start_gateway(server.address, tmp_path_factory.mktemp("codex-other-key"),
                                              reasoning_key=("k2:" + "b" * 32,))
    yield first, other, prompts
    for handle, runner in ((first, first_runner), (other, other_runner)):
        await handle.client.close()
        await runner.cleanup()
    await server.stop()


def _messages(run: Run) -> list[str]:
    return [e["item"]["text"] for e in run.events
            if e.get("type") == "item.completed" and e["item"].get("type") == "agent_message"]


async def test_codex_resume_sends_the_encrypted_reasoning_back(codex, reasoning_stack, tmp_path):
    """Turn one (``store: false``, ``include: ["reasoning.encrypted_content"]``, as Codex always
    asks) leaves a reasoning item with encrypted content in Codex's session; ``codex exec
    resume --last`` sends it back, the gateway opens it and the model reads its earlier
    reasoning. Resumed against a gateway with another key, the same history is refused as
    content this server cannot open: the reasoning came back encrypted, not as plain text."""
    first, other, prompts = reasoning_stack
    home, work = tmp_path / "codex-home", tmp_path / "work"
    _config(home, first.base_url)
    run = await run_codex(codex, home, work, "Think about my number.")
    assert run.returncode == 0, run.stderr[-3000:]
    assert _messages(run) == ["Noted."] and [e for e in run.events if e["type"] == "turn.completed"]
    reasoning = [e["item"] for e in run.events
                 if e.get("type") == "item.completed" and e["item"].get("type") == "reasoning"]
    assert reasoning and THOUGHT in reasoning[0]["text"], run.events

    seen = len(prompts)
    resumed = await run_codex(codex, home, work, "What did you think?", resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [e for e in resumed.events if e["type"] == "turn.completed"], resumed.events
    assert _messages(resumed) == [REMEMBERED]
    [second] = prompts[seen:]
    assert f"<|im_start|>assistant\n<think>{THOUGHT}</think>Noted.<|im_end|>" in second
    assert second.index("Think about my number.") < second.index(THOUGHT) < second.index("What did you think?")

    _config(home, other.base_url)
    refused = await run_codex(codex, home, work, "What did you think?", resume=True)
    assert len(prompts) == seen + 1, "the foreign-key gateway must refuse before the model runs"
    failure = json.dumps([e for e in refused.events if e["type"] in ("turn.failed", "error")]) + refused.stderr
    assert "invalid_encrypted_content" in failure and "sealed with key 'k1'" in failure, failure[-2000:]
