"""Shared input handling for benchmark files: one error type and typed field access with clear messages."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class BenchmarkFormatError(ValueError):
    """A benchmark file does not have the expected shape; names the file, the record and the field."""

    def __init__(
        self,
        path: str | Path | None,
        message: str,
        *,
        index: int | str | None = None,
        field: str | None = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.index = index
        self.field = field
        where = [self.path or "<data>"]
        if index is not None:
            where.append(f"record {index}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(f"{': '.join(where)}: {message}")


def read_json(path: str | Path) -> Any:
    """The JSON document in ``path`` (FileNotFoundError when absent, BenchmarkFormatError when not JSON)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    text = p.read_text(encoding="utf-8")
    if not text.strip():
        raise BenchmarkFormatError(p, "the file is empty; expected a JSON document")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BenchmarkFormatError(p, f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from exc


def read_jsonl(path: str | Path) -> list[Any]:
    """The parsed objects of a JSON-lines file, one a line (blank lines skipped)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    text = p.read_text(encoding="utf-8")
    if not text.strip():
        raise BenchmarkFormatError(p, "the file is empty; expected one JSON object per line")
    out = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise BenchmarkFormatError(p, f"line {lineno} is not valid JSON ({exc.msg})") from exc
    return out


def type_name(value: Any) -> str:
    """A JSON-ish name of a Python value's type, for messages."""
    names = {dict: "object", list: "list", str: "string", bool: "boolean", int: "integer", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


class Fields:
    """Typed access to a JSON object's fields; each problem raises BenchmarkFormatError naming the field."""

    __slots__ = ("index", "path", "record")

    def __init__(self, record: Any, path: str | Path | None, index: int | str | None) -> None:
        self.path = path
        self.index = index
        if not isinstance(record, Mapping):
            raise BenchmarkFormatError(path, f"expected a JSON object, got {type_name(record)}", index=index)
        self.record = record

    def error(self, field: str, message: str) -> BenchmarkFormatError:
        return BenchmarkFormatError(self.path, message, index=self.index, field=field)

    def has(self, name: str) -> bool:
        return name in self.record

    def _get(self, name: str) -> Any:
        if name not in self.record:
            raise self.error(name, "missing")
        return self.record[name]

    def text(self, name: str) -> str:
        value = self._get(name)
        if not isinstance(value, str):
            raise self.error(name, f"expected a string, got {type_name(value)}")
        return value

    def opt_text(self, name: str) -> str | None:
        value = self.record.get(name)
        if value is not None and not isinstance(value, str):
            raise self.error(name, f"expected a string or null, got {type_name(value)}")
        return value

    def integer(self, name: str, *, minimum: int | None = None) -> int:
        value = self._get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(name, f"expected an integer, got {type_name(value)}")
        if minimum is not None and value < minimum:
            raise self.error(name, f"must be >= {minimum}, got {value}")
        return value

    def choice(self, name: str, allowed: tuple[int, ...]) -> int:
        value = self.integer(name)
        if value not in allowed:
            raise self.error(name, f"must be one of {list(allowed)}, got {value}")
        return value

    def number(self, name: str, *, minimum: float | None = None) -> float:
        value = self._get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(name, f"expected a number, got {type_name(value)}")
        if minimum is not None and value < minimum:
            raise self.error(name, f"must be >= {minimum}, got {value}")
        return float(value)

    def opt_number(self, name: str) -> float | None:
        if self.record.get(name) is None:
            return None
        return self.number(name)

    def array(self, name: str) -> list[Any]:
        value = self._get(name)
        if not isinstance(value, list):
            raise self.error(name, f"expected a list, got {type_name(value)}")
        return value

    def texts(self, name: str, *, non_empty: bool = False) -> tuple[str, ...]:
        values = self.array(name)
        for i, v in enumerate(values):
            if not isinstance(v, str):
                raise self.error(f"{name}[{i}]", f"expected a string, got {type_name(v)}")
        if non_empty and not values:
            raise self.error(name, "must not be empty")
        return tuple(values)

    def opt_number_list(self, name: str) -> tuple[float, ...]:
        if name not in self.record:
            return ()
        values = self.array(name)
        for i, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise self.error(f"{name}[{i}]", f"expected a number, got {type_name(v)}")
        return tuple(float(v) for v in values)

    def opt_texts(self, name: str) -> tuple[str, ...]:
        return self.texts(name) if name in self.record else ()

    def response(self, name: str = "response") -> str | None:
        """A model response: a string or null; a list of strings is joined with spaces and logged."""
        value = self._get(name)
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            log.warning(
                "%s: record %s: '%s' is a list of %d strings; joined with spaces",
                self.path,
                self.index,
                name,
                len(value),
            )
            return " ".join(value)
        raise self.error(name, f"expected a string, null or a list of strings, got {type_name(value)}")
