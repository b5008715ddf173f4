"""Predictions on disk, resumable: ``eval/<label>.jsonl`` holds one prediction per line, appended
and flushed as each batch finishes; ``eval/<label>.settings.json`` holds what the answers depend
on (model, adapter and its weights' hash, template, decoding, dataset). A rerun reads the file,
checks each line against the current item (index and prompt hash) and the settings, and computes
only the items not there yet. Settings that differ refuse to mix with the old predictions."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from lladapt.common.errors import LladaptError
from lladapt.common.fileio import append_text, make_dirs, write_json_atomic
from lladapt.common.nested import differences


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


def settings_hash(settings: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_lines(path: Path) -> Iterator[tuple[int, bytes, Any]]:
    """``(line number, raw line, parsed JSON)`` for each complete line of a predictions file; a
    last line cut short by a kill (no newline) ends the file. A line that is not JSON is an error
    naming the file and line."""
    with Path(path).open("rb") as fh:
        for number, raw in enumerate(fh, 1):
            if not raw.endswith(b"\n"):
                return  # the last write was interrupted
            try:
                yield number, raw, json.loads(raw)
            except json.JSONDecodeError as exc:
                raise LladaptError(f"{path}, line {number}: not JSON ({exc.msg})") from None
            except UnicodeDecodeError as exc:
                raise LladaptError(f"{path}, line {number}: not UTF-8 text (byte {exc.start})") from None


class PredictionStore:
    """The predictions file of one evaluation entry."""

    def __init__(self, path: Path, settings: Mapping[str, Any]):
        self.path = Path(path)
        self.settings_path = self.path.with_name(self.path.stem + ".settings.json")
        self.settings = json.loads(json.dumps(dict(settings), default=str))
        self.fingerprint = settings_hash(self.settings)
        self._started = False

    def discard(self) -> None:
        """Forget earlier predictions (a run that replaces an earlier one)."""
        self.path.unlink(missing_ok=True)
        self.settings_path.unlink(missing_ok=True)

    def load(self, prompts: Sequence[str]) -> dict[int, dict[str, Any]]:
        """Finished items by index, checked against the current prompts and settings. A line cut
        short by a kill is dropped (and its item recomputed)."""
        if not self.path.exists():
            return {}
        self._check_settings()
        done: dict[int, dict[str, Any]] = {}
        good_bytes = 0
        for number, raw, record in read_lines(self.path):
            self._check_record(record, prompts, number)
            done[record["index"]] = record
            good_bytes += len(raw)
        if good_bytes != self.path.stat().st_size:
            with self.path.open("r+b") as fh:
                fh.truncate(good_bytes)
        return done

    def _check_settings(self) -> None:
        try:
            old = json.loads(self.settings_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            old = None
        except ValueError:  # not JSON, not UTF-8: the settings cannot be checked
            old = "unreadable"
        if old != self.settings:
            changes = [f"{key}: {json.dumps(a, default=str)} -> {json.dumps(b, default=str)}"
                       for key, a, b in differences(old, self.settings)] if isinstance(old, dict) else [
                           f"(the settings file {'is unreadable' if old == 'unreadable' else 'is missing'})"]
            raise LladaptError(
                f"{self.path} holds predictions made with other settings, which would give other "
                "answers; they will not be mixed with new ones:\n  " + "\n  ".join(changes)
                + f"\nDelete {self.path.name} (and {self.settings_path.name}), or write to another "
                "output_dir (--set output_dir=...)."
            )

    def _check_record(self, record: Any, prompts: Sequence[str], number: int) -> None:
        where = f"{self.path}, line {number}"
        if not isinstance(record, dict) or not isinstance(record.get("index"), int):
            raise LladaptError(f"{where}: not a prediction record (no integer 'index')")
        index = record["index"]
        if record.get("settings") != self.fingerprint:
            raise LladaptError(f"{where}: made with other settings (hash {record.get('settings')}, "
                               f"now {self.fingerprint}); delete the file to start over")
        if not 0 <= index < len(prompts) or record.get("prompt_sha") != prompt_hash(prompts[index]):
            raise LladaptError(
                f"{where}: item {index} does not match the dataset's item {index} now (another "
                "dataset file, limit or template?); delete the file to start over"
            )

    def append(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Append one batch's predictions and flush them to the OS (a killed process keeps them;
        a failed write, a full disk, leaves no partial line)."""
        if not self._started:
            make_dirs(self.path.parent)
            if not self.settings_path.exists():
                write_json_atomic(self.settings_path, self.settings, sort_keys=True)
            self._started = True
        append_text(self.path, "".join(json.dumps({**record, "settings": self.fingerprint}, default=str) + "\n"
                                       for record in records))

    def close(self) -> None:
        """Nothing is kept open between batches; kept for callers that close a store."""
