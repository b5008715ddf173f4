"""Silence third-party messages that tell a user of lladapt nothing they can act on.

Each filter names the message, where it comes from and why it is dropped. Installed when
``lladapt`` is imported (logging filters only: cheap, and in place before the libraries log).
"""

from __future__ import annotations

import logging

__all__ = ["install"]


class _DropMessages(logging.Filter):
    def __init__(self, *fragments: str):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


#: logger name -> message fragments dropped from it.
FILTERS: dict[str, tuple[str, ...]] = {
    # bitsandbytes >= 0.48 on a CPU with AVX-512 bf16 tries to fetch a faster 4-bit matmul kernel
    # from the Hugging Face hub through the optional `kernels` package, and logs a warning when
    # it cannot (no `kernels`, or no network). It then uses its own CPU kernel, which is correct;
    # installing `kernels` would only move the failure to a download at import time on an
    # offline machine. Nothing for the user to do, so the line is dropped.
    "bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward from kernels-community",),
}


def install() -> None:
    """Attach the filters (idempotent)."""
    for name, fragments in FILTERS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(*fragments))
