"""Custom tool grammars in the service: the JSON-string form of a lark or regex grammar
accepts exactly the JSON encodings of its strings; forced and auto-mode constraints over
custom tools, checked with xgrammar's matcher on the default model's tokenizer; the planner
refuses a bad grammar naming its request path."""
from __future__ import annotations

import json

import pytest

xgr = pytest.importorskip("xgrammar")
# The imports below need xgrammar: they come after the skip (E402).
from tests.fixtures.grammar import accepts  # noqa: E402
from trtllm_responses.inference.v1 import inference_pb2 as pb  # noqa: E402
from trtllm_service.agentic import OutputPlanner  # noqa: E402
from trtllm_service.custom_grammar import CustomGrammarError, arguments_grammar  # noqa: E402
from trtllm_service.errors import InvalidRequest  # noqa: E402
from trtllm_service.guided import tool_call_constraint, triggered_tool_constraint  # noqa: E402

#: Codex's apply_patch grammar (its freeform tool), as Codex 0.171.0 sends it.
APPLY_PATCH = r'''start: begin_patch hunk+ end_patch
begin_patch: "*** Begin Patch" LF
end_patch: "*** End Patch" LF?
hunk: add_hunk | delete_hunk | update_hunk
add_hunk: "*** Add File: " filename LF add_line+
delete_hunk: "*** Delete File: " filename LF
update_hunk: "*** Update File: " filename LF change_move? change?
filename: /(.+)/
add_line: "+" /(.*)/ LF -> line
change_move: "*** Move to: " filename LF
change: (change_context | change_line)+ eof_line?
change_context: ("@@" | "@@ " /(.+)/) LF
change_line: ("+" | "-" | " ") /(.*)/ LF
eof_line: "*** End of File" LF
%import common.LF
'''
PATCH = '*** Begin Patch\n*** Add File: a "b".txt\n+print("hi\\tthere")\n+\x01\n*** End Patch\n'


def args(text: str) -> str:
    return json.dumps({"input": text}, ensure_ascii=False)


@pytest.mark.parametrize("syntax,definition,good,bad", [
    ("regex", r'[a-z]+\n"\\', ['abc\n"\\'], ['abc\n"', "ABC\n\"\\"]),
    ("regex", r"x.*", ['x any "thing"\n\t\x01 é 😀', "x"], ["", "y"]),  # xgrammar's '.' takes newlines too
    ("regex", r"[^a]+", ['b"\n\\\x1f', "xyz"], ["a", "ba"]),
    ("regex", r"[ -~]+", ['hello "x" \\ ~'], ["tab\t"]),
    ("lark", APPLY_PATCH, [PATCH], [PATCH.replace("*** End", "** End"), PATCH.replace("+", "", 1)]),
])
def test_the_json_string_form_accepts_exactly_the_encodings_of_the_language(compiler, syntax, definition, good, bad):
    grammar = arguments_grammar(syntax, definition)
    for text in good:
        assert accepts(compiler, grammar, args(text)), text
    for text in bad:
        assert not accepts(compiler, grammar, args(text)), text
    assert not accepts(compiler, grammar, json.dumps({"input": good[0]}, ensure_ascii=True).replace(" ", "  "))


@pytest.mark.parametrize("syntax,definition,message", [
    ("lark", "start: foo", "unknown name 'foo'"),
    ("lark", "", "no start rule"),
    ("regex", "a(b", "parenthesis is not closed"),
    ("ebnf", "root ::= x", "unknown grammar syntax"),
])
def test_bad_definitions_are_clear_errors_without_cpp_locations(syntax, definition, message):
    with pytest.raises(CustomGrammarError) as info:
        arguments_grammar(syntax, definition)
    assert message in str(info.value) and ".cc:" not in str(info.value)


TOOLS = [{"name": "exec_command", "parameters": json.dumps({"type": "object", "properties": {
    "cmd": {"type": "string"}}, "required": ["cmd"]})},
         {"name": "apply_patch", "parameters": "", "arguments_grammar": arguments_grammar("lark", APPLY_PATCH)}]


def _call(name: str, arguments: str) -> str:
    return f'<tool_call>\n{{"name": "{name}", "arguments": {arguments}}}\n</tool_call>'


def test_a_forced_custom_call_must_match_its_grammar(compiler):
    grammar = tool_call_constraint(TOOLS, {"name": "apply_patch"}, parallel=False).grammar
    assert accepts(compiler, grammar, _call("apply_patch", args(PATCH)))
    assert not accepts(compiler, grammar, _call("apply_patch", args("rm -rf /")))
    assert not accepts(compiler, grammar, _call("exec_command", '{"cmd": "ls"}'))
    required = tool_call_constraint(TOOLS, "required", parallel=True, max_calls=2).grammar
    two_calls = _call("exec_command", '{"cmd": "ls"}') + "\n" + _call("apply_patch", args(PATCH))
    assert accepts(compiler, required, two_calls)


def test_in_auto_mode_text_is_free_and_calls_once_opened_are_constrained(compiler):
    grammar = triggered_tool_constraint(TOOLS, "hermes").grammar
    assert accepts(compiler, grammar, "Just an answer, no tools.")
    assert accepts(compiler, grammar, "Let me edit.\n" + _call("apply_patch", args(PATCH)))
    assert accepts(compiler, grammar, _call("exec_command", '{"cmd": "ls", "extra": 1}'))  # functions: any object
    assert not accepts(compiler, grammar, "Let me edit.\n" + _call("apply_patch", args("not a patch")))
    assert not accepts(compiler, grammar, _call("unknown_tool", "{}"))
    assert triggered_tool_constraint(TOOLS, "llama3_json") is None  # no fixed opening marker


class _Engine:
    model_id, name, supports_guided = "m", "test", True

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer


def _request(definition: str, choice: pb.ToolChoice | None = None, json_format: bool = False) -> pb.GenerateRequest:
    chat = pb.Chat(messages=[pb.ChatMessage(role="user", content=[pb.ContentPart(text="hi")])], tools=[
        pb.Tool(name="apply_patch", parameters_json='{"type": "object"}',
                custom=pb.CustomToolFormat(syntax="lark", definition=definition, param="tools[2].format.definition"))])
    if choice is not None:
        chat.tool_choice.CopyFrom(choice)
    request = pb.GenerateRequest(chat=chat)
    if json_format:
        request.response_format.json_object = True
    return request


def test_the_planner_constrains_custom_tools_and_refuses_bad_grammars(tokenizer):
    planner = OutputPlanner(_Engine(tokenizer), "hermes", None)
    assert "TagDispatch" in planner.plan(_request(APPLY_PATCH), None).guided.grammar  # auto: triggered
    forced = planner.plan(_request(APPLY_PATCH, pb.ToolChoice(function_name="apply_patch")), None).guided.grammar
    assert "TagDispatch" not in forced and "Begin Patch" in forced
    assert planner.plan(_request(APPLY_PATCH, json_format=True), None).guided is None  # the format wins
    with pytest.raises(InvalidRequest) as info:
        planner.plan(_request("start: nothing_here"), None)
    assert info.value.param == "tools[2].format.definition" and "unknown name" in str(info.value)
