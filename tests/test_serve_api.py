"""``lladapt serve`` as programs use it: the official ``openai`` client against a real uvicorn
server on 127.0.0.1 (model list, completions, chat, streaming), answers under concurrent,
mixed-adapter batching equal to each request served alone, the bad-request corpus (status,
OpenAI error shape, the field named; the server keeps serving), a client that leaves
mid-stream, and the API key."""

from __future__ import annotations

import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from eval_support import stories
from serve_support import (
    INSTRUCTIONS,
    RUNS,
    BackgroundServer,
    one_thread,
    running_server,
    served,
    trained_runs,
)

from lladapt.adapters.model import load_adapter
from lladapt.components.interfaces import Example
from lladapt.data.loading import get_template
from lladapt.evaluation.generation import Decoding, generate_batch

openai = pytest.importorskip("openai")

MODELS = ["base", *RUNS]
TOKENS = 20


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "serve-runs"


@pytest.fixture(scope="module")
def server(root):
    return running_server(root)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def alone(root):
    """Each model's greedy answers computed outside the server, one prompt at a time by the
    evaluator's code on a freshly loaded model (the adapter unmerged, as the server runs it):
    ``(model, "text" | "chat", instruction) -> text``."""
    runs = trained_runs(root)
    with one_thread():
        return {key: text for name in MODELS for key, text in _answers_alone(runs, name).items()}


def _answers_alone(runs, name):
    template = get_template("alpaca")
    loaded = stories(json.loads((runs["lora"] / "config.json").read_text())["model"]["source"])
    model = loaded.model if name == "base" else load_adapter(loaded.model, loaded.layout, runs[name] / "adapter")
    model.eval()
    answers = {}
    for instruction in INSTRUCTIONS:
        [raw] = generate_batch(model, loaded.tokenizer, [instruction], Decoding(max_new_tokens=TOKENS))
        answers[name, "text", instruction] = raw.text
        prompt = template.eval_prompt(Example(instruction=instruction))
        [chat] = generate_batch(model, loaded.tokenizer, [prompt], Decoding(max_new_tokens=TOKENS))
        answers[name, "chat", instruction] = template.extract_response(prompt + chat.text)
    return answers


def _ask(client, model, kind, instruction, **extra):
    extra = {"temperature": 0, **extra}
    if kind == "text":
        response = client.completions.create(model=model, prompt=instruction, max_tokens=TOKENS, **extra)
        return response.choices[0].text
    response = client.chat.completions.create(model=model, messages=[{"role": "user", "content": instruction}],
                                              max_tokens=TOKENS, **extra)
    return response.choices[0].message.content


def test_the_model_list_names_the_base_and_every_adapter(client, server):
    assert [m.id for m in client.models.list()] == MODELS
    listed = {m["id"]: m for m in _request(server, "GET", "/v1/models")[1]["data"]}
    assert {name: (m["adapter"], m["shares_base"]) for name, m in listed.items()} == {
        "base": (None, True), "lora": ("lora", True), "series": ("series", True), "prefix": ("prefix", False)}


def test_completions_and_chat_answer_as_each_model_alone(client, alone):
    for name in MODELS:
        for kind in ("text", "chat"):
            assert _ask(client, name, kind, INSTRUCTIONS[0]) == alone[name, kind, INSTRUCTIONS[0]], (name, kind)
    assert len({alone[name, "chat", INSTRUCTIONS[0]] for name in MODELS}) == 4  # the adapters matter


def test_concurrent_requests_for_different_adapters_answer_as_alone(client, alone):
    jobs = [(name, kind, text) for text in INSTRUCTIONS for name in MODELS for kind in ("text", "chat")]
    with ThreadPoolExecutor(len(jobs)) as pool:
        got = list(pool.map(lambda job: _ask(client, *job), jobs))
    assert got == [alone[job] for job in jobs]


def test_streamed_pieces_add_up_to_the_whole_answer(client, alone):
    text = INSTRUCTIONS[1]
    chunks = list(client.completions.create(model="lora", prompt=text, max_tokens=TOKENS, temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == alone["lora", "text", text]
    assert len(chunks) > 4 and chunks[-1].choices[0].finish_reason in ("stop", "length")
    chat = list(client.chat.completions.create(model="prefix", messages=[{"role": "user", "content": text}],
                                               max_tokens=TOKENS, temperature=0, stream=True))
    assert chat[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chat) == alone["prefix", "chat", text]
    assert chat[-1].choices[0].finish_reason in ("stop", "length")


def test_usage_and_a_stop_string(client):
    response = client.completions.create(model="series", prompt="Once upon a time", max_tokens=30, temperature=0)
    full = response.choices[0].text
    assert response.usage.completion_tokens == 30 and response.choices[0].finish_reason == "length"
    word = full.split()[3]
    cut = client.completions.create(model="series", prompt="Once upon a time", max_tokens=30, temperature=0,
                                    stop=[word])
    assert cut.choices[0].text == full[: full.index(word)] and cut.choices[0].finish_reason == "stop"
    assert cut.usage.completion_tokens < 30


def _request(server, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    return response.status, json.loads(payload) if payload else None


CHAT = {"model": "lora", "messages": [{"role": "user", "content": "hi"}]}
COMPLETION = {"model": "lora", "prompt": "hi"}
#: (route, body, status, param, code, message): every bad request and what the client is told.
BAD_REQUESTS = [
    ("/v1/completions", {**COMPLETION, "model": "nope"}, 404, "model", "model_not_found",
     "model: 'nope' is not served here; served: base, lora, prefix, series"),
    ("/v1/chat/completions", b'{"model": "lora", "messages": [', 400, None, "invalid_json",
     "the request body is not valid JSON (JSON decode error)"),
    ("/v1/completions", {**COMPLETION, "prompt": "the dog ran " * 300}, 400, "prompt", "context_length_exceeded",
     "prompt: the prompt is 1502 tokens long; the model's context is 512 tokens"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": "the dog ran " * 300}]}, 400,
     "messages", "context_length_exceeded", "messages: the prompt is 1598 tokens long; the model's context is 512 tokens"),
    ("/v1/completions", {**COMPLETION, "max_tokens": 0}, 400, "max_tokens", "greater_than_equal",
     "max_tokens: Input should be greater than or equal to 1"),
    ("/v1/completions", {**COMPLETION, "max_tokens": -5}, 400, "max_tokens", "greater_than_equal",
     "max_tokens: Input should be greater than or equal to 1"),
    ("/v1/completions", {**COMPLETION, "max_tokens": 10**9}, 400, "max_tokens", "context_length_exceeded",
     "max_tokens: 1000000000 new tokens after a prompt of 3 exceed the model's context of 512 tokens (at most 509)"),
    ("/v1/completions", {**COMPLETION, "max_tokens": "16"}, 400, "max_tokens", "int_type",
     "max_tokens: Input should be a valid integer"),
    ("/v1/chat/completions", {**CHAT, "temperature": "hot"}, 400, "temperature", "float_type",
     "temperature: Input should be a valid number"),
    ("/v1/chat/completions", {**CHAT, "stream": "yes"}, 400, "stream", "bool_type",
     "stream: Input should be a valid boolean"),
    ("/v1/chat/completions", {"messages": CHAT["messages"]}, 400, "model", "missing", "model: Field required"),
    ("/v1/chat/completions", {**CHAT, "messages": "hi"}, 400, "messages", "list_type",
     "messages: Input should be a valid list"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages.0.role",
     "literal_error", "messages.0.role: Input should be 'system', 'developer', 'user', 'assistant' or 'tool'"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "system", "content": "be brief"}]}, 400, "messages",
     None, "messages: no message with role 'user'"),
    ("/v1/chat/completions", {**CHAT, "n": 2}, 400, "n", "less_than_equal", "n: Input should be less than or equal to 1"),
    ("/v1/completions", {**COMPLETION, "logprobs": 3}, 400, "logprobs", None, "logprobs: not supported by this server"),
    ("/v1/completions", {**COMPLETION, "prompt": ["a", "b"]}, 400, "prompt", None, "prompt: one prompt per request"),
]


@pytest.mark.parametrize(("route", "body", "status", "param", "code", "message"), BAD_REQUESTS,
                         ids=[f"{i}-{case[3]}-{case[4]}" for i, case in enumerate(BAD_REQUESTS)])
def test_a_bad_request_gets_an_openai_error_naming_the_field(server, route, body, status, param, code, message):
    got_status, got = _request(server, "POST", route, body)
    assert (got_status, got) == (status, {"error": {"message": message, "type": "invalid_request_error",
                                                    "param": param, "code": code}})


def test_unknown_routes_and_methods_get_the_error_shape_and_the_server_keeps_serving(server, client, alone):
    assert _request(server, "GET", "/v1/nothing") == (404, {"error": {
        "message": "Not Found", "type": "invalid_request_error", "param": None, "code": None}})
    assert _request(server, "GET", "/v1/completions")[0] == 405
    status, health = _request(server, "GET", "/health")
    assert status == 200 and health["models"] == sorted(MODELS)
    assert _ask(client, "series", "chat", INSTRUCTIONS[2]) == alone["series", "chat", INSTRUCTIONS[2]]


def test_a_client_that_leaves_mid_stream_stops_its_request(server, client, alone):
    def cancelled():
        return _request(server, "GET", "/health")[1]["finished"].get("cancelled", 0)

    before = cancelled()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request("POST", "/v1/completions", body=json.dumps(
        {**COMPLETION, "prompt": "Once upon a time", "max_tokens": 500, "temperature": 0, "stream": True}),
        headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200 and response.readline().startswith(b"data: {")
    conn.sock.close()  # the client goes away after the first piece
    conn.close()
    deadline = time.monotonic() + 60
    while cancelled() == before:
        assert time.monotonic() < deadline, "the server did not stop the abandoned request"
        time.sleep(0.05)
    assert _ask(client, "lora", "text", INSTRUCTIONS[3]) == alone["lora", "text", INSTRUCTIONS[3]]


def test_an_api_key_guards_every_route_but_health_and_the_page(root):
    from lladapt.serving.app import create_app

    keyed = BackgroundServer(create_app(served(root), api_key="s3cret", close_models=False))
    try:
        assert _request(keyed, "GET", "/health")[0] == 200
        conn = http.client.HTTPConnection("127.0.0.1", keyed.port, timeout=60)
        conn.request("GET", "/")
        assert conn.getresponse().status == 200
        refused = {"error": {"message": "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                             "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}
        assert _request(keyed, "GET", "/v1/models") == (401, refused)
        assert _request(keyed, "POST", "/v1/completions", COMPLETION, {"Authorization": "Bearer wrong"}) == (401, refused)
        good = openai.OpenAI(base_url=keyed.url + "/v1", api_key="s3cret", max_retries=0)
        assert [m.id for m in good.models.list()] == MODELS
        bad = openai.OpenAI(base_url=keyed.url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
    finally:
        keyed.stop()


def test_beam_search_and_top_k_go_through_as_extra_fields(client, root):
    """``num_beams`` (static batches through ``generate``, for a shared and an own-lane adapter)
    answers as ``generate`` with the same beams; ``top_k`` with a seed repeats."""
    runs = trained_runs(root)
    with one_thread():
        for name in ("lora", "prefix"):
            loaded = stories(json.loads((runs[name] / "config.json").read_text())["model"]["source"])
            model = load_adapter(loaded.model, loaded.layout, runs[name] / "adapter").eval()
            [expected] = generate_batch(model, loaded.tokenizer, [INSTRUCTIONS[2]],
                                        Decoding(max_new_tokens=TOKENS, num_beams=3, compact=False))
            got = client.completions.create(model=name, prompt=INSTRUCTIONS[2], max_tokens=TOKENS, temperature=0,
                                            extra_body={"num_beams": 3})
            assert got.choices[0].text == expected.text, name
    sampled = [_ask(client, "series", "text", INSTRUCTIONS[0], temperature=0.9, seed=seed,
                    extra_body={"top_k": 20}) for seed in (5, 5, 6)]
    assert sampled[0] == sampled[1] != sampled[2]
