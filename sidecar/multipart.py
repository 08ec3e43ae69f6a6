"""multipart/form-data request bodies (``/v1/audio/transcriptions``): read whole, rebuilt fresh.

Parsed with python-multipart, the parser Starlette (and so vLLM's FastAPI server) uses, with the
same reading of parts: a part with a ``filename`` is a file, any other part a text field. What is
forwarded is never the client's bytes but a rebuild of what was read (a fresh boundary, only the
``Content-Disposition`` and a file's ``Content-Type``): no preamble, epilogue, stray header or
second reading of an ambiguous body can carry text past the redaction walk.

A body that cannot be read completely and unambiguously is refused (400 ``invalid_multipart``): a
missing or malformed boundary, a body that does not end with the closing boundary, a part without a
form-data name, names or text fields that are not UTF-8, a field given twice (only ``name[]`` fields
repeat: the sidecar authorizes the ``model`` it reads, so the upstream must not read another), and
not exactly one file, in the field the endpoint expects.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

from custos.errors import ProxyError, bad_request

# RFC 2046 section 5.1.1: 1 to 70 of these characters, not ending with a space.
_BOUNDARY = re.compile(rb"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
# A file's media type is kept only in this plain form (parameters dropped); else octet-stream.
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+\-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+\-]{0,63}")
# Names and file names are rebuilt inside a quoted header value: these cannot be written there
# the way every parser reads them back.
_UNQUOTABLE = re.compile(r'["\\\x00-\x1f\x7f]')
OCTET_STREAM = "application/octet-stream"
# Field names echoed in errors: letters and '_' only, as the JSON walker's field paths.
_PLAIN_NAME = re.compile(r"[A-Za-z_]{1,64}(\[\])?")
# How Starlette/pydantic read a form boolean (case-insensitive): the sidecar reads ``stream`` alike.
_FORM_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FORM_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})


@dataclass(slots=True)
class Part:
    """One part: a text field (``value`` is str) or the file (``value`` is bytes, ``filename`` set)."""

    name: str
    value: str | bytes
    filename: str | None = None
    content_type: str = OCTET_STREAM

    @property
    def is_file(self) -> bool:
        return self.filename is not None


@dataclass(slots=True)
class Form:
    parts: list[Part]

    def text(self, name: str) -> str | None:
        """The value of text field ``name`` (fields are unique, see ``parse_form``), or None."""
        for part in self.parts:
            if part.name == name and not part.is_file:
                return part.value  # type: ignore[return-value]
        return None

    def encode(self) -> tuple[bytes, bytes]:
        """The form as a new body: (body, content type), with a boundary no part contains."""
        values = [p.value if isinstance(p.value, bytes) else p.value.encode() for p in self.parts]
        while True:
            boundary = b"custos-" + os.urandom(16).hex().encode()
            if not any(boundary in v for v in values):
                break
        out: list[bytes] = []
        for part, value in zip(self.parts, values, strict=True):
            head = f'Content-Disposition: form-data; name="{_quotable(part.name)}"'
            if part.filename is not None:
                head += f'; filename="{_quotable(part.filename)}"\r\nContent-Type: {part.content_type}'
            out += (b"--", boundary, b"\r\n", head.encode(), b"\r\n\r\n", value, b"\r\n")
        out += (b"--", boundary, b"--\r\n")
        return b"".join(out), b"multipart/form-data; boundary=" + boundary


def form_bool(value: str) -> bool | None:
    """A form field read as a boolean the way the upstream reads it; None when it is not one."""
    low = value.lower()
    return True if low in _FORM_TRUE else False if low in _FORM_FALSE else None


def invalid(message: str, param: str | None = None) -> ProxyError:
    return bad_request(f"Invalid multipart/form-data body: {message}.", param=param, code="invalid_multipart")


class _Reader:
    """python-multipart callbacks: collects each part's headers and data."""

    def __init__(self) -> None:
        self.parts: list[Part] = []
        self.headers: list[tuple[bytes, bytes]] = []
        self.field = b""
        self.value = b""
        self.data: list[bytes] = []

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.part_begin,
            "on_header_field": self.header_field,
            "on_header_value": self.header_value,
            "on_header_end": self.header_end,
            "on_part_data": self.part_data,
            "on_part_end": self.part_end,
        }

    def part_begin(self) -> None:
        self.headers, self.data = [], []

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self.field += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self.value += data[start:end]

    def header_end(self) -> None:
        self.headers.append((self.field.lower(), self.value))
        self.field, self.value = b"", b""

    def part_data(self, data: bytes, start: int, end: int) -> None:
        self.data.append(data[start:end])

    def part_end(self) -> None:
        disposition = next((v for k, v in self.headers if k == b"content-disposition"), None)
        kind, options = parse_options_header(disposition)
        if kind != b"form-data" or b"name" not in options:
            raise invalid("every part needs a 'Content-Disposition: form-data' header with a name")
        name = _utf8(options[b"name"], "a field name")
        filename = options.get(b"filename")
        body = b"".join(self.data)
        if filename is None:
            self.parts.append(Part(name, _utf8(body, f"the text field '{_shown(name)}'", _shown(name))))
            return
        media = next((v for k, v in self.headers if k == b"content-type"), b"").split(b";")[0].strip()
        media_type = media.decode("latin-1")
        if not _MEDIA_TYPE.fullmatch(media_type):
            media_type = OCTET_STREAM
        self.parts.append(Part(name, body, _utf8(filename, "a file name"), media_type))


def parse_form(content_type: bytes | None, body: bytes, *, file_field: str) -> Form:
    """The whole form, or 400: see the module docstring. ``file_field``: the one file part's name."""
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        raise invalid("the Content-Type must be multipart/form-data")
    boundary = params.get(b"boundary")
    if boundary is None or not _BOUNDARY.fullmatch(boundary):
        raise invalid("the Content-Type needs a valid boundary (RFC 2046: 1 to 70 characters)")
    charset = params.get(b"charset", b"utf-8").lower()
    if charset not in (b"utf-8", b"utf8"):
        raise invalid("text fields must be UTF-8")
    reader = _Reader()
    parser = MultipartParser(boundary, reader.callbacks())
    try:
        parser.write(body)
    except MultipartParseError:
        raise invalid("the body does not follow its boundary") from None
    if parser.state != MultipartState.END:
        raise invalid("the body ends before its closing boundary")
    _check_fields(reader.parts, file_field)
    return Form(reader.parts)


def _check_fields(parts: list[Part], file_field: str) -> None:
    seen: set[str] = set()
    for part in parts:
        if _UNQUOTABLE.search(part.name) or (part.filename and _UNQUOTABLE.search(part.filename)):
            raise invalid("field and file names must not contain quotes, backslashes or control characters")
        if part.name in seen and not part.name.endswith("[]"):
            raise invalid(f"the field '{_shown(part.name)}' is given more than once", _shown(part.name))
        seen.add(part.name)
    files = [p for p in parts if p.is_file]
    if len(files) != 1 or files[0].name != file_field:
        raise invalid(f"exactly one file is expected, in the field '{file_field}'", file_field)


def _quotable(name: str) -> str:
    # Parsed names have none of these (``_check_fields``); a redaction operator's output might.
    return _UNQUOTABLE.sub("_", name)


def _utf8(raw: bytes, what: str, param: str | None = None) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid(f"{what} is not UTF-8", param) from None


def _shown(name: str) -> str:
    # A field name is client-controlled and may itself be personal data: only plain names are echoed.
    return name if _PLAIN_NAME.fullmatch(name) else "*"
