"""``lladapt serve`` as a process: a YAML file naming the adapters, the API key from the
environment, SIGTERM finishing the request in flight then exiting 0; what it serves read from
run folders (and refused when it cannot be one server); the warning for a server open to the
network."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from serve_support import free_port, trained_runs

from lladapt.common.errors import LladaptError
from lladapt.serving.server import exposure_warning
from lladapt.serving.spec import serve_spec


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return trained_runs(tmp_path_factory.getbasetemp() / "serve-runs")


def _wait_healthy(port: int, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the server did not start")


def test_sigterm_lets_the_request_in_flight_finish_then_exits_0(runs, tmp_path):
    names = tmp_path / "adapters.yaml"
    names.write_text(f"story-lora: {runs['lora']}\nstory-prefix: {runs['prefix'] / 'adapter'}\n")
    port = free_port()
    env = {**os.environ, "LLADAPT_API_KEY": "k3y"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lladapt", "serve", str(names), "--port", str(port), "--threads", "1",
         "--log-level", "warning"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_healthy(port, proc)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.request("GET", "/v1/models", headers={"Authorization": "Bearer k3y"})
        assert [m["id"] for m in json.loads(conn.getresponse().read())["data"]] == ["base", "story-lora", "story-prefix"]
        conn.request("POST", "/v1/completions", headers={"Content-Type": "application/json", "Authorization": "Bearer k3y"},
                     body=json.dumps({"model": "story-lora", "prompt": "Once upon a time", "max_tokens": 500,
                                      "temperature": 0, "stream": True}))
        response = conn.getresponse()
        first = response.readline()
        assert first.startswith(b"data: {")
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 60
        while True:  # new connections are refused while the stream is still being answered
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=5).request("GET", "/health")
            except ConnectionRefusedError:
                break
            assert time.monotonic() < deadline
            time.sleep(0.05)
        events = [line for line in (first + response.read()).split(b"\n\n") if line.strip()]
        assert events[-1] == b"data: [DONE]"
        last = json.loads(events[-2][len(b"data: "):])
        assert last["choices"][0]["finish_reason"] in ("length", "stop")
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    assert "serving base (no adapter), story-lora (lora), story-prefix (prefix, own batches)" in err
    assert "Warning: serving on" not in err


def test_the_base_model_and_templates_come_from_the_runs(runs):
    spec = serve_spec([runs["lora"], runs["series"]])
    assert list(spec.adapters) == ["lora", "series"]
    assert spec.adapters["series"].folder == runs["series"] / "adapter"
    assert spec.model.source == json.loads((runs["lora"] / "config.json").read_text())["model"]["source"]
    assert spec.template == "alpaca"


def test_what_cannot_be_one_server_is_refused_by_name(runs, tmp_path):
    with pytest.raises(LladaptError, match="two adapters would be served as 'lora'"):
        serve_spec([runs["lora"], runs["lora"] / "adapter"])
    with pytest.raises(LladaptError, match="no base model: give --model SOURCE"):
        serve_spec([runs["lora"] / "adapter"])
    other = tmp_path / "other"
    other.mkdir()
    config = json.loads((runs["series"] / "config.json").read_text())
    config["model"]["source"] = "llama-7b"
    (other / "config.json").write_text(json.dumps(config))
    (other / "adapter").symlink_to(runs["series"] / "adapter")
    with pytest.raises(LladaptError, match="were trained on different base models"):
        serve_spec([runs["lora"], other])
    with pytest.raises(LladaptError, match="is neither a run folder"):
        serve_spec([tmp_path])
    names = tmp_path / "names.yaml"
    names.write_text(f"base: {runs['lora']}\n")
    with pytest.raises(LladaptError, match="'base' names the base model"):
        serve_spec([names])
    names.write_text("- a\n- b\n")
    with pytest.raises(LladaptError, match="expected a mapping of adapter name -> folder"):
        serve_spec([names])


def test_a_server_open_to_the_network_without_a_key_is_warned_about():
    assert exposure_warning("127.0.0.1", None) is None
    assert exposure_warning("localhost", None) is None
    assert exposure_warning("::1", None) is None
    assert exposure_warning("0.0.0.0", "key") is None
    assert exposure_warning("0.0.0.0", None) == (
        "Warning: serving on 0.0.0.0 without an API key: anyone who can reach this address can use the "
        "models. Give --api-key KEY (or set LLADAPT_API_KEY), or bind to 127.0.0.1.")


def test_the_commands_help_imports_neither_torch_nor_the_server():
    code = (
        "import sys\nfrom lladapt.cli import main\n"
        "for argv in (['serve', '--help'], ['generate', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit as exc:\n        assert exc.code == 0\n"
        "print('HEAVY:', sorted(m for m in ('torch', 'transformers', 'fastapi', 'uvicorn') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--api-key" in done.stdout and "--max-new-tokens" in done.stdout
    assert done.stdout.strip().endswith("HEAVY: []")
