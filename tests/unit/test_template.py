"""Chat templating with the default model's own (ChatML) template, and request validation."""
import pytest

from trtllm_responses.inference.v1 import inference_pb2 as pb
from trtllm_service.errors import InvalidRequest
from trtllm_service.template import Templater


def chat(*msgs, **kw):
    c = pb.Chat(**kw)
    for role, text in msgs:
        m = c.messages.add(role=role)
        m.content.add(text=text)
    return c


@pytest.fixture(scope="module")
def templater(tokenizer):
    return Templater(tokenizer)


def test_chatml_rendering_with_generation_prompt(templater):
    text = templater.render(chat(("system", "Be brief."), ("user", "Hi")))
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_developer_becomes_system_for_templates_without_it(templater):
    assert templater.render(chat(("developer", "Rules"), ("user", "x"))) == \
        templater.render(chat(("system", "Rules"), ("user", "x")))


def test_prompt_ids_for_chat_match_encode_of_render(templater):
    req = pb.GenerateRequest(chat=chat(("user", "Hello there")))
    assert templater.prompt_ids(req) == templater.encode(templater.render(req.chat))


def test_content_parts_join(templater):
    c = pb.Chat()
    m = c.messages.add(role="user")
    m.content.add(text="Hello ")
    m.content.add(text="world")
    assert "Hello world" in templater.render(c)


def test_assistant_tool_calls_and_tool_results_render(templater):
    c = chat(("user", "weather?"))
    a = c.messages.add(role="assistant")
    a.tool_calls.add(id="call_1", name="get_weather", arguments='{"city": "Paris"}')
    t = c.messages.add(role="tool", tool_call_id="call_1")
    t.content.add(text="sunny")
    text = templater.render(c)
    assert "sunny" in text and text.endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("build,param", [
    (lambda: pb.GenerateRequest(chat=pb.Chat()), "messages"),
    (lambda: pb.GenerateRequest(chat=chat(("wizard", "x"))), "messages"),
    (lambda: pb.GenerateRequest(prompt=""), "input"),
    (lambda: pb.GenerateRequest(), "input"),
    (lambda: pb.GenerateRequest(prompt_token_ids=pb.TokenIds(ids=[10**7])), "prompt_token_ids"),
])
def test_invalid_inputs(templater, build, param):
    with pytest.raises(InvalidRequest) as err:
        templater.prompt_ids(build())
    assert err.value.param == param or param == "input"


def test_images_rejected_without_support(templater):
    c = pb.Chat()
    m = c.messages.add(role="user")
    m.content.add(image=pb.ImagePart(url="data:image/png;base64,AAAA"))
    with pytest.raises(InvalidRequest, match="images"):
        templater.render(c)
