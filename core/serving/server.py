"""Running the server: uvicorn on 127.0.0.1 by default; SIGTERM stops taking connections, lets
every request in flight finish (uvicorn's graceful shutdown waits for them), lets the lanes
finish, and exits 0."""

from __future__ import annotations

import ipaddress
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from lladapt.serving.spec import ServeSpec

__all__ = ["BackgroundServer", "exposure_warning", "is_loopback", "run_server"]

API_KEY_ENV = "LLADAPT_API_KEY"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, api_key: str | None) -> str | None:
    """The warning for a server that anyone on the network can use."""
    if api_key or is_loopback(host):
        return None
    return (f"Warning: serving on {host} without an API key: anyone who can reach this address can "
            f"use the models. Give --api-key KEY (or set {API_KEY_ENV}), or bind to 127.0.0.1.")


def run_server(spec: ServeSpec, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
               max_rows: int = 32, default_max_tokens: int = 256, threads: int | None = None,
               log_level: str = "info", echo: Callable[[str], None] = print) -> None:
    """Load ``spec`` and serve it until SIGINT or SIGTERM (``threads``: torch's CPU threads)."""
    import torch
    import uvicorn

    from lladapt.serving.app import create_app
    from lladapt.serving.models import load_served

    warning = exposure_warning(host, api_key)
    if warning:
        echo(warning)
    if threads:
        torch.set_num_threads(threads)
    served = load_served(spec, max_rows=max_rows)
    echo("serving " + ", ".join(
        f"{m.name} ({m.kind or 'no adapter'}{'' if m.shares_base else ', own batches'})"
        for m in served.models.values()))
    app = create_app(served, api_key=api_key, default_max_tokens=default_max_tokens)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                           timeout_graceful_shutdown=None))
    # uvicorn drains, then raises the signal it caught again once its own handler is gone: this
    # handler takes that SIGTERM so that a drained server exits 0.
    previous: Any = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the system's pick)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class BackgroundServer:
    """uvicorn serving ``app`` on 127.0.0.1 in a daemon thread of this process (tests,
    benchmarks, notebooks); :meth:`stop` shuts it down as SIGTERM would."""

    def __init__(self, app: Any, port: int | None = None, *, log_level: str = "warning", timeout: float = 60):
        import uvicorn

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level=log_level))
        self.thread = threading.Thread(target=self.server.run, name="lladapt-serve-http", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"the server on port {self.port} did not start")
            time.sleep(0.02)

    def stop(self, timeout: float | None = 60) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
