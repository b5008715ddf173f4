"""A bounded load test on loopback: 32 concurrent clients over 4 models (the base, LoRA and series
sharing forward passes, prefix tuning batched apart) for a fixed number of requests. No request
may fail, and every greedy answer must equal the answer to the same request sent alone.
Throughput and p50 / p99 latency go to the test output and to ``serve-load.json`` in the
session's temporary folder (not asserted: speed is for ``benchmarks/serve_speed.py``)."""

from __future__ import annotations

import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from serve_support import INSTRUCTIONS, RUNS, running_server

openai = pytest.importorskip("openai")

CLIENTS = 32
PER_CLIENT = 4
MODELS = ["base", *RUNS]
TOKENS = 24


def _ask(client, model: str, instruction: str) -> tuple[str, int, float]:
    started = time.perf_counter()
    response = client.chat.completions.create(model=model, messages=[{"role": "user", "content": instruction}],
                                              max_tokens=TOKENS, temperature=0)
    return response.choices[0].message.content, response.usage.completion_tokens, time.perf_counter() - started


@pytest.mark.slow
def test_32_clients_over_4_models_all_succeed_with_their_single_request_answers(tmp_path_factory, capsys):
    root = tmp_path_factory.getbasetemp()
    server = running_server(root / "serve-runs")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=300)
    pairs = [(model, text) for model in MODELS for text in INSTRUCTIONS]
    single = {pair: _ask(client, *pair)[0] for pair in pairs}  # one at a time

    jobs = [pairs[(c * PER_CLIENT + k) % len(pairs)] for c in range(CLIENTS) for k in range(PER_CLIENT)]

    def one_client(c: int) -> list[tuple[str, int, float]]:
        return [_ask(client, *jobs[c * PER_CLIENT + k]) for k in range(PER_CLIENT)]

    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        results = [r for rs in pool.map(one_client, range(CLIENTS)) for r in rs]
    wall = time.perf_counter() - started

    assert len(results) == CLIENTS * PER_CLIENT
    assert [text for text, _, _ in results] == [single[job] for job in jobs]
    latencies = sorted(seconds for _, _, seconds in results)
    figures = {
        "clients": CLIENTS, "requests": len(results), "models": MODELS, "max_tokens": TOKENS, "failed": 0,
        "wall_s": round(wall, 3), "requests_per_s": round(len(results) / wall, 2),
        "tokens_per_s": round(sum(n for _, n, _ in results) / wall, 1),
        "p50_s": round(statistics.median(latencies), 3),
        "p99_s": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 3),
    }
    (root / "serve-load.json").write_text(json.dumps(figures, indent=2))
    with capsys.disabled():
        print(f"\nserve load test: {json.dumps(figures)}")
