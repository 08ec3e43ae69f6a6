"""One way to load a YAML file into a pydantic model, and one way to say what is wrong with it.

Every problem is one line, ``file:line:col: field: problem``, with ``field`` the dotted path of the
offending key as it reads in the file (``routes[2].permission``, ``rules[0].expr``). Positions come
from the YAML node tree, so they point at the key or value itself, not at a guess. A problem with no
place in a file (the file cannot be read, a value from the environment) reads ``file: field: problem``.

    policy = load_yaml_model(path, PolicyFile, what="policy file")   # FileError lists every problem

Callers with checks of their own (references between entries, a parser run on a field) read the file
with ``read_yaml`` and report through ``YamlDocument.problem`` so that their lines look the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

M = TypeVar("M", bound=BaseModel)
Loc = tuple[str | int, ...]
Describe = Callable[[ErrorDetails], str | None]

FILE_FIELD = "(file)"  # the file as a whole: missing, unreadable
YAML_FIELD = "(yaml)"  # the text is not YAML
TOP_FIELD = "(top level)"  # the document itself, e.g. a list where a mapping belongs

# Locations pydantic adds for union members and dict keys; they are not keys of the file.
_TYPE_TAGS = frozenset({"bool", "int", "float", "str", "bytes", "list", "dict", "tuple", "set", "none"})


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int | None  # 1-based; None when the problem has no place in the file
    col: int | None
    field: str
    message: str
    loc: Loc = field(default=(), compare=False)  # the model path, for callers that re-attribute

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}:{self.col}"
        return f"{where}: {self.field}: {self.message}"


class FileError(ValueError):
    """Every problem found in one or more files, one line each. A ``ValueError``, so a pydantic
    validator that loads a file raises it through pydantic, and ``problems_of`` takes its lines over."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(dict.fromkeys(problems))  # unions can report the same thing twice
        super().__init__("\n".join(map(str, self.problems)))

    def __reduce__(self) -> tuple[type[FileError], tuple[list[Problem]]]:
        return type(self), (self.problems,)  # pickles as problems, not as the joined text


def field_error(loc: Loc, message: str, value: Any = None) -> ValidationError:
    """An error at ``loc`` below the model being validated, for a model validator to raise: the
    problem then points at the entry itself, not at the model that found it."""
    kind = PydanticCustomError("value_error", "{message}", {"message": message})
    return ValidationError.from_exception_data("check", [InitErrorDetails(type=kind, loc=loc, input=value)])


@dataclass(frozen=True)
class YamlDocument:
    source: str  # the name problems give: the file's path
    data: Any  # plain Python values, as yaml.safe_load returns them
    root: yaml.Node | None = None  # the node tree, for positions; None for data from elsewhere
    from_text: bool = False  # positions exist: an unplaceable problem points at 1:1
    error: type[FileError] = FileError  # what validate() and fail() raise

    @classmethod
    def from_data(cls, data: Any, source: str, error: type[FileError] = FileError) -> YamlDocument:
        """A document that did not come from a file (tests, benchmarks): problems have no line."""
        return cls(source, data, error=error)

    def validate(self, model: type[M], at: Loc = (), describe: Describe | None = None) -> M:
        """``model`` from the document, or from the part at ``at`` (which must exist); raises
        ``self.error``. ``describe``: the caller's own words for some errors (None: the standard ones)."""
        data = self.data
        for part in at:
            data = data[part]
        if data is None and not at:
            data = {}  # an empty file: all defaults
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise self.error(self.problems_of(exc, at, describe)) from None

    def problems_of(
        self, exc: ValidationError, at: Loc = (), describe: Describe | None = None
    ) -> list[Problem]:
        problems: list[Problem] = []
        for err in exc.errors(include_url=False):
            nested = (err.get("ctx") or {}).get("error")
            if isinstance(nested, FileError):  # a validator loaded another file: its own lines
                problems.extend(nested.problems)
                continue
            loc = (*at, *err["loc"])
            message = (describe and describe(err)) or _message(err)
            problems.append(self.problem(loc, message, key=err["type"] == "extra_forbidden"))
        return problems

    def problem(self, loc: Loc, message: str, *, key: bool = False) -> Problem:
        """A problem at the model path ``loc``; ``key``: point at the key rather than its value."""
        path, node = _locate(self.root, loc, key)
        mark = node.start_mark if node is not None else None
        if mark is not None:
            line, col = mark.line + 1, mark.column + 1
        else:
            line, col = (1, 1) if self.from_text else (None, None)
        return Problem(self.source, line, col, path or TOP_FIELD, message, tuple(loc))

    def fail(self, problems: Iterable[Problem]) -> None:
        """Raise ``self.error`` when there are problems."""
        found = list(problems)
        if found:
            raise self.error(found)


def parse_yaml(
    text: str, source: str, *, unique_keys: bool = False, error: type[FileError] = FileError
) -> YamlDocument:
    """Parse YAML text, keeping node positions. ``unique_keys``: a key given twice in one mapping is
    a problem (plain YAML loading keeps the last one silently)."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        doubles = _duplicate_keys(root, source) if unique_keys and root is not None else []
        if doubles:
            raise error(doubles)
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        reason = getattr(exc, "problem", None) or exc
        raise error([Problem(source, line, col, YAML_FIELD, f"not valid YAML: {reason}")]) from None
    finally:
        loader.dispose()
    return YamlDocument(source, data, root, from_text=True, error=error)


def read_yaml(
    path: str | Path,
    *,
    what: str = "file",
    missing_hint: str = "",
    unique_keys: bool = False,
    error: type[FileError] = FileError,
) -> YamlDocument:
    """Read and parse ``path``; a missing or unreadable file is one problem, not a traceback.
    ``what`` names the file in those problems (``config file not found``)."""
    p = Path(path).expanduser()
    source = str(p)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        reason = f"{what} not found" + (f" ({missing_hint})" if missing_hint else "")
        raise error([Problem(source, None, None, FILE_FIELD, reason)]) from None
    except OSError as exc:
        raise error(
            [Problem(source, None, None, FILE_FIELD, f"cannot read {what}: {exc.strerror}")]
        ) from None
    except UnicodeDecodeError:
        raise error([Problem(source, None, None, FILE_FIELD, f"{what} is not UTF-8 text")]) from None
    return parse_yaml(text, source, unique_keys=unique_keys, error=error)


def load_yaml_model(path: str | Path, model: type[M], *, what: str = "config file") -> M:
    """Read, parse and validate ``path`` into ``model``; ``FileError`` lists every problem."""
    return read_yaml(path, what=what).validate(model)


# -- where a problem is ----------------------------------------------------------------------------
def _message(err: ErrorDetails) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown option (check the spelling)"
    value = err.get("input")
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        got = "nothing" if value is None else f"a {_yaml_kind(value)}"
        return f"must be a mapping, got {got}"
    msg = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind in ("value_error", "assertion_error", "missing") or isinstance(value, dict | list):
        return msg  # the validator's own words, or a value too big to repeat
    return f"value {value!r} is invalid: {msg}"


def _yaml_kind(value: Any) -> str:
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    return "number" if isinstance(value, int | float) and not isinstance(value, bool) else "scalar"


def _is_tag(part: str | int) -> bool:
    return isinstance(part, str) and ("[" in part or part in _TYPE_TAGS)


def _entry(node: yaml.MappingNode, key: str | int) -> tuple[yaml.Node, yaml.Node] | None:
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(key):
            return key_node, value_node
    return None


def _locate(root: yaml.Node | None, loc: Sequence[str | int], key: bool) -> tuple[str, yaml.Node | None]:
    """The dotted path of ``loc`` as it reads in the file, and the node to point at: the deepest
    one that exists (a missing field points at the mapping that lacks it)."""
    path = ""
    node = anchor = root  # node: where the walk is; anchor: what a problem points at
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, yaml.MappingNode) and (found := _entry(node, part)) is not None:
            key_node, node = found
            path += f".{part}" if path else str(part)
            # A scalar: its value; a block (or the unknown key itself): the key line.
            anchor = key_node if (key and last) or not isinstance(node, yaml.ScalarNode) else node
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = anchor = node.value[part]
            path += f"[{part}]"
        elif _is_tag(part):
            continue
        else:  # not in the file (a missing field, a value from elsewhere): keep naming it
            node = None
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path, anchor


def _duplicate_keys(node: yaml.Node, source: str, path: str = "") -> list[Problem]:
    """Keys given twice in one mapping (merge keys ``<<`` excepted), before the loader drops one."""
    problems: list[Problem] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[tuple[str, str]] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            where = f"{path}.{key_node.value}" if path else key_node.value
            if (key_node.tag, key_node.value) in seen:
                mark = key_node.start_mark
                problems.append(Problem(source, mark.line + 1, mark.column + 1, where, "duplicate key"))
            seen.add((key_node.tag, key_node.value))
            problems += _duplicate_keys(value_node, source, where)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            problems += _duplicate_keys(item, source, f"{path}[{i}]")
    return problems
