"""YAML with positions: every value remembers its file, line and column so errors can say
`file:line:col: message`, and pydantic errors map back to where the user wrote the value."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    file: str
    line: int  # 1-based
    col: int  # 1-based
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        prefix = "" if self.severity == "error" else f"{self.severity}: "
        return f"{self.file}:{self.line}:{self.col}: {prefix}{self.message}"


class ConfigError(Exception):
    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass
class Document:
    file: str
    data: Any
    value_marks: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    key_marks: dict[Path_, tuple[int, int]] = field(default_factory=dict)

    def where(self, path: Path_, *, key: bool = False) -> tuple[int, int]:
        """Position of the value at `path` (or its key), else of the nearest enclosing value."""
        p = tuple(path)
        while True:
            if key and p in self.key_marks:
                return self.key_marks[p]
            if p in self.value_marks:
                return self.value_marks[p]
            if not p:
                return (1, 1)
            p = p[:-1]

    def problem(self, path: Path_, message: str, *, key: bool = False, severity: str = "error") -> Problem:
        line, col = self.where(path, key=key)
        return Problem(self.file, line, col, message, severity)


class _Loader(yaml.SafeLoader):
    pass


def _no_duplicates(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def load(path: str | Path, text: str | None = None) -> Document:
    name = str(path)
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([Problem(name, 1, 1, f"cannot read file: {exc.strerror or exc}")]) from None
        except UnicodeDecodeError:
            raise ConfigError([Problem(name, 1, 1, "file is not UTF-8 text")]) from None
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
        if node is None:
            return Document(name, None)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        msg = " ".join(x for x in (exc.context, exc.problem) if x) or "invalid YAML"
        raise ConfigError([Problem(name, line, col, f"invalid YAML: {msg}")]) from None
    except yaml.reader.ReaderError as exc:  # characters YAML forbids (NUL, ESC, ...), found before any node
        pos = min(exc.position, len(text))
        line, col = text.count("\n", 0, pos) + 1, pos - (text.rfind("\n", 0, pos) + 1) + 1
        char = f"U+{exc.character:04X}" if isinstance(exc.character, int) else repr(exc.character)
        raise ConfigError([Problem(name, line, col, f"invalid YAML: character {char} is not allowed")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(name, 1, 1, f"invalid YAML: {exc}")]) from None
    doc = Document(name, data)
    _index(node, (), doc)
    return doc


def _index(node: yaml.Node, path: Path_, doc: Document) -> None:
    doc.value_marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else str(k.start_mark)
            doc.key_marks[(*path, key)] = (k.start_mark.line + 1, k.start_mark.column + 1)
            _index(v, (*path, key), doc)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _index(v, (*path, i), doc)


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SECRET_FILE_KEYS = {"password", "api_key", "auth_string", "api_token", "url", "token"}


def expand(doc: Document, environ: dict[str, str] | None = None, base_dir: Path | None = None) -> list[Problem]:
    """Expand `${VAR}` / `${VAR:-default}` in strings and `<key>_file` secrets, in place."""
    env = os.environ if environ is None else environ
    problems: list[Problem] = []

    def sub(value: str, path: Path_) -> str:
        def repl(m: re.Match[str]) -> str:
            var, default = m.group(1), m.group(2)
            if var in env:
                return env[var]
            if default is not None:
                return default
            problems.append(doc.problem(path, f"environment variable {var} is not set"))
            return ""

        return _ENV.sub(repl, value)

    def walk(obj: Any, path: Path_) -> Any:
        if isinstance(obj, str):
            return sub(obj, path)
        if isinstance(obj, list):
            return [walk(v, (*path, i)) for i, v in enumerate(obj)]
        if isinstance(obj, dict):
            out: dict[Any, Any] = {}
            for k, v in obj.items():
                if isinstance(k, str) and k.endswith("_file") and k[:-5] in _SECRET_FILE_KEYS:
                    secret_key = k[:-5]
                    if secret_key in obj:
                        problems.append(doc.problem((*path, k), f"give either {secret_key} or {k}, not both", key=True))
                        continue
                    fpath = Path(sub(str(v), (*path, k)))
                    if base_dir is not None and not fpath.is_absolute():
                        fpath = base_dir / fpath
                    try:
                        out[secret_key] = fpath.read_text(encoding="utf-8").rstrip("\r\n")
                    except OSError as exc:
                        problems.append(doc.problem((*path, k), f"cannot read {k} {fpath}: {exc.strerror or exc}"))
                    doc.value_marks.setdefault((*path, secret_key), doc.where((*path, k)))
                    continue
                out[k] = walk(v, (*path, k))
            return out
        return obj

    doc.data = walk(doc.data, ())
    return problems


M = TypeVar("M", bound=BaseModel)


def validate(doc: Document, model: type[M], context: dict[str, Any] | None = None) -> M:
    try:
        return model.model_validate(doc.data, context=context)
    except ValidationError as exc:
        raise ConfigError(pydantic_problems(doc, exc)) from None


def pydantic_problems(doc: Document, exc: ValidationError, prefix: Path_ = ()) -> list[Problem]:
    problems = []
    for err in exc.errors(include_url=False):
        path = _data_path(doc.data, (*prefix, *err["loc"]))
        field_name = dotted(path)
        kind = err["type"]
        if kind == "extra_forbidden":
            msg = f"unknown key {path[-1]!r}" if path else "unknown key"
            problems.append(doc.problem(path, msg, key=True))
            continue
        if kind == "missing":
            msg = f"missing required key {err['loc'][-1]!r}"
            problems.append(doc.problem(path[:-1] if path and path[-1] == err["loc"][-1] else path, msg))
            continue
        if kind == "union_tag_invalid":
            ctx = err.get("ctx", {})
            tag_key = str(ctx.get("discriminator", "")).strip("'")
            at = (*path, tag_key) if tag_key else path
            msg = f"{dotted(at)}: unknown value {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
            problems.append(doc.problem(at, msg))
            continue
        text = err["msg"]
        if text.startswith("Value error, "):
            text = text[len("Value error, ") :]
        problems.append(doc.problem(path, f"{field_name}: {text}"))
    problems.sort(key=lambda p: (p.line, p.col))
    # a union reports one error per alternative at the same place; one is enough for a human
    seen, unique = set(), []
    for p in problems:
        if (p.line, p.col) not in seen:
            seen.add((p.line, p.col))
            unique.append(p)
    return unique


def _data_path(data: Any, loc: Sequence[str | int]) -> Path_:
    """Drop the parts of a pydantic location that are not in the data (union tags, function names)."""
    out: list[str | int] = []
    cur = data
    for i, part in enumerate(loc):
        nxt = loc[i + 1] if i + 1 < len(loc) else None
        if isinstance(cur, dict) and part in cur and _is_tag(cur, part, nxt):
            continue  # a union tag that is also a key (`when: deadline` beside `deadline: 16:45`)
        if isinstance(cur, dict) and part in cur:
            out.append(part)
            cur = cur[part]
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            out.append(part)
            cur = cur[part]
        elif isinstance(cur, dict) and isinstance(part, str) and part not in cur and _is_key_like(part, loc):
            # an unknown or missing key: keep it as the last element so its key mark is found
            out.append(part)
            cur = None
    return tuple(out)


def _is_tag(cur: dict[Any, Any], part: str | int, nxt: str | int | None) -> bool:
    if nxt is None or nxt not in cur:
        return False
    inner = cur[part]
    return not (isinstance(inner, dict) and nxt in inner) and not isinstance(inner, list)


def _is_key_like(part: str, loc: Sequence[str | int]) -> bool:
    return part == loc[-1]


def dotted(path: Path_) -> str:
    """`sources[0].poll_interval`: how a user would name the place."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "document"
