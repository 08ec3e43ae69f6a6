"""Redaction by construction: walk a whole JSON document and redact every string in it.

Requests (``walk_request``): every string value and every object key anywhere in the body goes
through the redactor, except a small closed set of identifier fields whose values are checked
against strict patterns or enums so that they cannot carry text (``model``, message ``role``, part
and tool ``type``, ``tool_choice``/``function_call`` modes, ``response_format.type``,
``encoding_format``, ``logit_bias`` token ids). Known fields of the OpenAI chat / completions /
embeddings, Responses, tokenize/detokenize, score/rerank and pooling schemas (and vLLM's extras) are
type-checked where the sidecar or the engine relies on the type; unknown fields are walked
generically. Multipart forms (``walk_form``: ``/v1/audio/transcriptions``) get the same rule for
their text fields and the file's name; the file's bytes are not text and pass as they are. A body
that cannot be fully inspected (a wrong type on a known field, nesting deeper than ``max_depth``, more
than ``max_strings`` strings, more than ``max_chars`` characters of text) is refused with an
OpenAI-shaped error naming the field path: what is not inspected is not forwarded.

Answers (``walk_answer``): the same rule for every string and key of an answer document, with the
logprobs rule of the redact stage (token ``bytes`` dropped, logprobs of a redacted choice nulled).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from typing import Any

from custos.errors import ProxyError, bad_request

from ..multipart import OCTET_STREAM, Form, form_bool

Redact = Callable[[str], str]

_ROLES = frozenset({"system", "user", "assistant", "tool", "function", "developer"})
# Identifier values (part/tool types, modes): lower-case words, no digits, so no entity fits.
_IDENT = re.compile(r"[a-z][a-z_]{0,31}")
_TOKEN_ID = re.compile(r"[0-9]{1,9}")
# Responses ``include`` values ("message.output_text.logprobs"): identifiers joined by dots.
_DOTTED = re.compile(r"[a-z][a-z_]{0,31}(?:\.[a-z][a-z_]{0,31}){0,7}")
# A language code ("en", "zh-Hans", "pt_BR"): no room for an entity.
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8}){0,2}")
# Numbers sent as form text.
_FORM_NUMBER = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]{1,3})?")
_FORM_INT = re.compile(r"[-+]?[0-9]{1,19}")
# Field-path keys echoed in errors: no digit runs (a free-form key may be a phone or ID number),
# but one final digit, as in score's text_1.
_PATH_KEY = re.compile(r"[A-Za-z_][A-Za-z_]{0,62}[0-9]?")
# Short strings that redact to themselves are remembered for the rest of the walk (keys, enum
# values, repeated ids): a set lookup instead of a scan.
_CLEAN_MAX = 64

_CHAT = "/v1/chat/completions"
_COMPLETIONS = "/v1/completions"
_EMBEDDINGS = "/v1/embeddings"
_RESPONSES = "/v1/responses"
_TOKENIZE = "/tokenize"
_DETOKENIZE = "/detokenize"
_SCORE = "/v1/score"
_RERANK = "/v1/rerank"
_POOLING = "/pooling"
_TRANSCRIPTIONS = "/v1/audio/transcriptions"


class Walker:
    """One walk over one document. ``redact`` maps a string to its redacted form (same session, so
    the same value gets the same placeholder everywhere in the request)."""

    __slots__ = (
        "_clean",
        "changed",
        "chars",
        "known",
        "max_chars",
        "max_depth",
        "max_strings",
        "redact",
        "stack",
        "strings",
    )

    def __init__(
        self,
        redact: Redact,
        *,
        max_chars: int,
        max_strings: int,
        max_depth: int,
        known: set[str] | None = None,
    ) -> None:
        self.redact = redact
        # Shared by every request of a stage: model names seen to redact to themselves (``learn_clean``).
        self.known = known if known is not None else set()
        self.max_chars = max_chars
        self.max_strings = max_strings
        self.max_depth = max_depth
        self.chars = 0
        self.strings = 0
        self.changed = False
        self.stack: list[str | int] = []  # the field path of the node being walked
        self._clean: set[str] = set()

    # -- errors -----------------------------------------------------------------------------------
    def path(self) -> str:
        out = ""
        for key in self.stack:
            if isinstance(key, int):
                out += f"[{key}]"
            elif _PATH_KEY.fullmatch(key):
                out += f".{key}" if out else key
            else:
                # A free-form key may itself be personal data: never echo it.
                out += ".*" if out else "*"
        return out or "(body)"

    def invalid(self, why: str) -> ProxyError:
        path = self.path()
        return bad_request(f"Invalid request: '{path}' {why}.", param=path, code="invalid_request")

    def limit(self, why: str) -> ProxyError:
        path = self.path()
        return ProxyError(
            413,
            f"Request too large to inspect at '{path}': {why}.",
            code="redaction_limit",
            param=path,
        )

    # -- leaves -----------------------------------------------------------------------------------
    def text(self, value: str) -> str:
        self.strings += 1
        self.chars += len(value)
        if self.strings > self.max_strings:
            raise self.limit(f"more than {self.max_strings} strings")
        if self.chars > self.max_chars:
            raise self.limit(f"more than {self.max_chars} characters of text")
        if not value:
            return value
        short = len(value) <= _CLEAN_MAX
        if short and value in self._clean:
            return value
        new = self.redact(value)
        if new is value or new == value:
            if short:
                self._clean.add(value)
            return value
        self.changed = True
        return new

    def number(self, value: int) -> int:
        """A large integer where free-form data goes (metadata, unknown fields): a phone or an ID
        number sent as a JSON number cannot be rewritten in place, so it is refused."""
        if -1_000_000 < value < 1_000_000:
            return value
        s = str(value)
        if self.text(s) != s:
            raise self.invalid("holds a number that looks like personal data; send it as a string")
        return value

    # -- generic ----------------------------------------------------------------------------------
    def any(self, value: Any) -> Any:
        """Any JSON value: strings and keys redacted, large integers checked."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return self.obj(value, None)
        if isinstance(value, list):
            stack = self.stack
            if len(stack) >= self.max_depth:
                raise self.limit(f"nesting deeper than {self.max_depth} levels")
            for i, item in enumerate(value):
                if isinstance(item, (str, dict, list)):
                    stack.append(i)
                    value[i] = self.any(item)
                    stack.pop()
                elif type(item) is int:
                    stack.append(i)
                    self.number(item)
                    stack.pop()
            return value
        if type(value) is int:
            return self.number(value)
        return value

    def obj(self, value: dict[str, Any], fields: dict[str, Field] | None) -> dict[str, Any]:
        """An object: known ``fields`` get their handlers, every other key and value is walked
        generically (keys redacted too). Returns a new dict only when a key changed."""
        if len(self.stack) >= self.max_depth:
            raise self.limit(f"nesting deeper than {self.max_depth} levels")
        stack = self.stack
        renamed: list[tuple[str, str]] | None = None
        for key, item in value.items():
            stack.append(key)
            handler = fields.get(key) if fields is not None else None
            if handler is not None:
                new = handler(self, item)
            else:
                new_key = self.text(key)
                if new_key != key:
                    if renamed is None:
                        renamed = []
                    renamed.append((key, new_key))
                new = self.any(item) if isinstance(item, (str, dict, list, int)) else item
            if new is not item:
                value[key] = new
            stack.pop()
        if renamed is None:
            return value
        names = dict(renamed)
        out: dict[str, Any] = {}
        for key, item in value.items():
            new_key = names.get(key, key)
            if new_key in out:
                stack.append(key)
                raise self.invalid("collides with another key once personal data is redacted")
            out[new_key] = item
        return out


Field = Callable[[Walker, Any], Any]


# -- field handlers --------------------------------------------------------------------------------
def _keep_model(w: Walker, value: Any) -> Any:
    # The authorize stage checks the name against the policy; here: it must not carry personal data.
    if value is None:
        return value
    if not isinstance(value, str):
        raise w.invalid("must be a string")
    if value and value not in w.known:
        if w.redact(value) != value:
            raise w.invalid("must be a model name")
        learn_clean(w.known, value, MODEL_NAME)
    return value


def _bool(w: Walker, value: Any) -> Any:
    if value is not None and not isinstance(value, bool):
        raise w.invalid("must be a boolean")
    return value


def _int(w: Walker, value: Any) -> Any:
    if value is not None and type(value) is not int:
        raise w.invalid("must be an integer")
    return value


def _num(w: Walker, value: Any) -> Any:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise w.invalid("must be a number")
    return value


def _int_or_bool(w: Walker, value: Any) -> Any:
    if value is not None and not isinstance(value, (int, bool)):
        raise w.invalid("must be an integer or a boolean")
    return value


def _text(w: Walker, value: Any) -> Any:
    if value is None:
        return value
    if not isinstance(value, str):
        raise w.invalid("must be a string")
    return w.text(value)


def _obj(fields: dict[str, Field] | None = None) -> Field:
    def handle(w: Walker, value: Any) -> Any:
        if value is None:
            return value
        if not isinstance(value, dict):
            raise w.invalid("must be an object")
        return w.obj(value, fields)

    return handle


def _list_of(item: Field, what: str) -> Field:
    def handle(w: Walker, value: Any) -> Any:
        if value is None:
            return value
        if not isinstance(value, list):
            raise w.invalid(f"must be a list of {what}")
        if len(w.stack) >= w.max_depth:
            raise w.limit(f"nesting deeper than {w.max_depth} levels")
        stack = w.stack
        for i, entry in enumerate(value):
            stack.append(i)
            new = item(w, entry)
            if new is not entry:
                value[i] = new
            stack.pop()
        return value

    return handle


def _object_item(fields: dict[str, Field] | None, what: str) -> Field:
    def handle(w: Walker, value: Any) -> Any:
        if not isinstance(value, dict):
            raise w.invalid(f"must be {what}")
        return w.obj(value, fields)

    return handle


def _ident(w: Walker, value: Any) -> Any:
    if value is None:
        return value
    if not isinstance(value, str) or not _IDENT.fullmatch(value):
        raise w.invalid("must be a type name (lower-case letters and '_')")
    return value


def _enum(*allowed: str) -> Field:
    choices = frozenset(allowed)
    listed = ", ".join(sorted(allowed))

    def handle(w: Walker, value: Any) -> Any:
        if value is not None and (not isinstance(value, str) or value not in choices):
            raise w.invalid(f"must be one of: {listed}")
        return value

    return handle


def _mode_or_obj(modes: tuple[str, ...], fields: dict[str, Field]) -> Field:
    enum = _enum(*modes)
    obj = _obj(fields)

    def handle(w: Walker, value: Any) -> Any:
        if isinstance(value, str):
            return enum(w, value)
        if value is None or isinstance(value, dict):
            return obj(w, value)
        raise w.invalid(f"must be one of: {', '.join(modes)}, or an object")

    return handle


def _role(w: Walker, value: Any) -> Any:
    if not isinstance(value, str) or value not in _ROLES:
        raise w.invalid(f"must be one of: {', '.join(sorted(_ROLES))}")
    return value


def _text_or_texts(w: Walker, value: Any) -> Any:
    if value is None:
        return value
    if isinstance(value, str):
        return w.text(value)
    if isinstance(value, list):
        return _list_of(_text_item, "strings")(w, value)
    raise w.invalid("must be a string or a list of strings")


def _text_item(w: Walker, value: Any) -> Any:
    if not isinstance(value, str):
        raise w.invalid("must be a string")
    return w.text(value)


def _logit_bias(w: Walker, value: Any) -> Any:
    if value is None:
        return value
    if not isinstance(value, dict):
        raise w.invalid("must be an object mapping token ids to numbers")
    for key, bias in value.items():
        if not isinstance(key, str) or not _TOKEN_ID.fullmatch(key):
            raise w.invalid("keys must be token ids (decimal integers)")
        if isinstance(bias, bool) or not isinstance(bias, (int, float)):
            w.stack.append(key)
            raise w.invalid("must be a number")
    return value


def _prompt(w: Walker, value: Any) -> Any:
    """A string, a list of strings, a list of token ids or a list of lists of token ids."""
    if value is None:
        return value
    if isinstance(value, str):
        return w.text(value)
    why = "must be a string, a list of strings, a list of token ids or a list of lists of token ids"
    if not isinstance(value, list):
        raise w.invalid(why)
    if not value:
        return value
    first = value[0]
    stack = w.stack
    if isinstance(first, str):
        for i, item in enumerate(value):
            stack.append(i)
            if not isinstance(item, str):
                raise w.invalid("must be a string, like the other items")
            value[i] = w.text(item)
            stack.pop()
    elif type(first) is int:
        if not all(type(t) is int for t in value):
            raise w.invalid(why)
    elif isinstance(first, list):
        for i, item in enumerate(value):
            if not isinstance(item, list) or not all(type(t) is int for t in item):
                stack.append(i)
                raise w.invalid("must be a list of token ids")
    else:
        raise w.invalid(why)
    return value


_TOOL_CALL_FN: dict[str, Field] = {"name": _text, "arguments": lambda w, v: _text_or_obj(w, v)}


def _text_or_obj(w: Walker, value: Any) -> Any:
    if value is None or isinstance(value, str):
        return _text(w, value)
    if isinstance(value, dict):
        return w.obj(value, None)
    raise w.invalid("must be a string or an object")


_TOOL_CALL: dict[str, Field] = {"type": _ident, "function": _obj(_TOOL_CALL_FN)}
_PART: dict[str, Field] = {"type": _ident}


def _content_of(part_fields: dict[str, Field]) -> Field:
    """Message content: a string, null or a list of parts (objects with ``part_fields``)."""

    def part(w: Walker, value: Any) -> Any:
        if isinstance(value, str):
            return w.text(value)
        if not isinstance(value, dict):
            raise w.invalid("must be an object (a content part)")
        return w.obj(value, part_fields)

    parts = _list_of(part, "content parts")

    def handle(w: Walker, value: Any) -> Any:
        if value is None:
            return value
        if isinstance(value, str):
            return w.text(value)
        if isinstance(value, list):
            return parts(w, value)
        raise w.invalid("must be a string, null or a list of content parts")

    return handle


_content = _content_of(_PART)


_MESSAGE: dict[str, Field] = {
    "role": _role,
    "content": _content,
    "name": _text,
    "tool_calls": _list_of(_object_item(_TOOL_CALL, "an object (a tool call)"), "objects (tool calls)"),
    "tool_call_id": _text,
    "function_call": _obj(_TOOL_CALL_FN),
    "reasoning_content": _text,
    "reasoning": _text,
    "refusal": _text,
}

_messages = _list_of(_object_item(_MESSAGE, "an object (a message)"), "objects (messages)")

_FUNCTION: dict[str, Field] = {"name": _text, "description": _text, "strict": _bool}
_TOOL: dict[str, Field] = {"type": _ident, "function": _obj(_FUNCTION)}
_tools = _list_of(_object_item(_TOOL, "an object (a tool)"), "objects (tools)")
_functions = _list_of(_object_item(_FUNCTION, "an object (a function)"), "objects (functions)")

_COMMON: dict[str, Field] = {
    "model": _keep_model,
    "stream": _bool,
    "stream_options": _obj(),
    "user": _text,
    "metadata": _obj(),
    "n": _int,
    "best_of": _int,
    "max_tokens": _int,
    "max_completion_tokens": _int,
    "min_tokens": _int,
    "seed": _int,
    "top_k": _int,
    "top_logprobs": _int,
    "prompt_logprobs": _int,
    "truncate_prompt_tokens": _int,
    "temperature": _num,
    "top_p": _num,
    "min_p": _num,
    "presence_penalty": _num,
    "frequency_penalty": _num,
    "repetition_penalty": _num,
    "length_penalty": _num,
    "echo": _bool,
    "ignore_eos": _bool,
    "skip_special_tokens": _bool,
    "spaces_between_special_tokens": _bool,
    "include_stop_str_in_output": _bool,
    "add_special_tokens": _bool,
    "use_beam_search": _bool,
    "stop": _text_or_texts,
    "stop_token_ids": _list_of(_int, "token ids"),
    "logit_bias": _logit_bias,
    "response_format": _obj({"type": _ident}),
    "guided_json": _text_or_obj,
    "guided_regex": _text,
    "guided_grammar": _text,
    "guided_choice": _list_of(_text_item, "strings"),
    "chat_template_kwargs": _obj(),
}

CHAT_FIELDS: dict[str, Field] = {
    **_COMMON,
    "messages": _messages,
    "logprobs": _bool,
    "tools": _tools,
    "tool_choice": _mode_or_obj(("none", "auto", "required"), {"type": _ident}),
    "functions": _functions,
    "function_call": _mode_or_obj(("none", "auto"), {}),
    "parallel_tool_calls": _bool,
    "add_generation_prompt": _bool,
    "continue_final_message": _bool,
    "documents": _list_of(_object_item(None, "an object (a document)"), "objects (documents)"),
    "chat_template": _text,
}

COMPLETIONS_FIELDS: dict[str, Field] = {
    **_COMMON,
    "prompt": _prompt,
    "suffix": _text,
    "logprobs": _int_or_bool,
}

EMBEDDINGS_FIELDS: dict[str, Field] = {
    **_COMMON,
    "input": _prompt,
    "messages": _messages,
    "encoding_format": _enum("float", "base64"),
    "dimensions": _int,
}

# -- the Responses API (/v1/responses) ---------------------------------------------------------------
_RESPONSE_PART: dict[str, Field] = {"type": _ident, "text": _text}
_RESPONSE_MESSAGE: dict[str, Field] = {
    "type": _ident,
    "role": _enum("user", "assistant", "system", "developer"),
    "content": _content_of(_RESPONSE_PART),
}
# Input items by type; call ids go through the redactor like chat's tool_call_id (same session, so a
# call and its output still match). Items of other types are walked generically.
_RESPONSE_ITEMS: dict[str, dict[str, Field]] = {
    "message": _RESPONSE_MESSAGE,
    "function_call": {"type": _ident, "call_id": _text, "name": _text, "arguments": _text},
    "function_call_output": {"type": _ident, "call_id": _text, "output": _content_of(_RESPONSE_PART)},
    "item_reference": {"type": _ident, "id": _text},
}


def _response_item(w: Walker, value: Any) -> Any:
    if not isinstance(value, dict):
        raise w.invalid("must be an object (an input item)")
    kind = value.get("type")
    fields = _RESPONSE_ITEMS.get(kind) if isinstance(kind, str) else None
    if fields is None and kind is None and "role" in value:
        fields = _RESPONSE_MESSAGE  # the short form: {"role": ..., "content": ...}
    return w.obj(value, fields)


_response_items = _list_of(_response_item, "input items")


def _response_input(w: Walker, value: Any) -> Any:
    if value is None or isinstance(value, str):
        return _text(w, value)
    if isinstance(value, list):
        return _response_items(w, value)
    raise w.invalid("must be a string or a list of input items")


# Built-in tool types with a date in their name; every other type is a plain identifier.
_DATED_TOOL_TYPES = frozenset({"web_search_preview_2025_03_11", "web_search_2025_08_26"})


def _tool_type(w: Walker, value: Any) -> Any:
    return value if isinstance(value, str) and value in _DATED_TOOL_TYPES else _ident(w, value)


def _dotted(w: Walker, value: Any) -> Any:
    if not isinstance(value, str) or not _DOTTED.fullmatch(value):
        raise w.invalid("must be a dotted name (lower-case letters, '_' and '.')")
    return value


# Responses tools are flat ({"type": "function", "name", "description", "parameters"}); parameters
# (a JSON schema) are walked generically, as in chat.
_RESPONSE_TOOL: dict[str, Field] = {
    "type": _tool_type,
    "name": _text,
    "description": _text,
    "strict": _bool,
    "function": _obj(_FUNCTION),
}
_REASONING_EFFORT = _enum("none", "minimal", "low", "medium", "high", "xhigh")
_REASONING_SUMMARY = _enum("auto", "concise", "detailed")

RESPONSES_FIELDS: dict[str, Field] = {
    "model": _keep_model,
    "input": _response_input,
    "instructions": _text,
    "max_output_tokens": _int,
    "max_tool_calls": _int,
    "top_logprobs": _int,
    "temperature": _num,
    "top_p": _num,
    "stream": _bool,
    "store": _bool,
    "background": _bool,
    "parallel_tool_calls": _bool,
    "previous_response_id": _text,
    "metadata": _obj(),
    "user": _text,
    "tools": _list_of(_object_item(_RESPONSE_TOOL, "an object (a tool)"), "objects (tools)"),
    "tool_choice": _mode_or_obj(("none", "auto", "required"), {"type": _ident, "name": _text}),
    "text": _obj(
        {
            "format": _obj({"type": _ident, "name": _text, "description": _text, "strict": _bool}),
            "verbosity": _enum("low", "medium", "high"),
        }
    ),
    "reasoning": _obj(
        {"effort": _REASONING_EFFORT, "summary": _REASONING_SUMMARY, "generate_summary": _REASONING_SUMMARY}
    ),
    "include": _list_of(_dotted, "dotted names"),
    "truncation": _enum("auto", "disabled"),
    "prompt": _obj(),
    "stream_options": _obj(),
}


# -- vLLM's tokenizer, scoring and pooling endpoints ------------------------------------------------
def _token_ids(w: Walker, value: Any) -> Any:
    if not isinstance(value, list) or not all(type(t) is int and 0 <= t < 10**9 for t in value):
        raise w.invalid("must be a list of token ids (integers from 0 to 999999999)")
    return value


def _document(w: Walker, value: Any) -> Any:
    if isinstance(value, str):
        return w.text(value)
    if isinstance(value, dict):
        return w.obj(value, {"text": _text})
    raise w.invalid("must be a string or an object with 'text'")


TOKENIZE_FIELDS: dict[str, Field] = {
    "model": _keep_model,
    "prompt": _text,
    "messages": _messages,
    "add_special_tokens": _bool,
    "add_generation_prompt": _bool,
    "continue_final_message": _bool,
    "return_token_strs": _bool,
    "chat_template": _text,
    "chat_template_kwargs": _obj(),
    "tools": _tools,
}

DETOKENIZE_FIELDS: dict[str, Field] = {"model": _keep_model, "tokens": _token_ids}

SCORE_FIELDS: dict[str, Field] = {
    "model": _keep_model,
    "text_1": _text_or_texts,
    "text_2": _text_or_texts,
    "truncate_prompt_tokens": _int,
    "user": _text,
}

RERANK_FIELDS: dict[str, Field] = {
    "model": _keep_model,
    "query": _text,
    "documents": _list_of(_document, "strings or objects with 'text'"),
    "top_n": _int,
    "return_documents": _bool,
    "truncate_prompt_tokens": _int,
    "user": _text,
}

POOLING_FIELDS: dict[str, Field] = {
    **EMBEDDINGS_FIELDS,
    "encoding_format": _enum("float", "base64", "bytes"),
}

_ROUTES: dict[str, dict[str, Field]] = {
    _CHAT: CHAT_FIELDS,
    _COMPLETIONS: COMPLETIONS_FIELDS,
    _EMBEDDINGS: EMBEDDINGS_FIELDS,
    _RESPONSES: RESPONSES_FIELDS,
    _TOKENIZE: TOKENIZE_FIELDS,
    _DETOKENIZE: DETOKENIZE_FIELDS,
    _SCORE: SCORE_FIELDS,
    _RERANK: RERANK_FIELDS,
    _POOLING: POOLING_FIELDS,
}


# -- multipart forms: every value is text ------------------------------------------------------------
def _form_bool(w: Walker, value: str) -> str:
    if form_bool(value) is None:
        raise w.invalid("must be a boolean (true or false)")
    return value


def _form_number(w: Walker, value: str) -> str:
    if not _FORM_NUMBER.fullmatch(value):
        raise w.invalid("must be a number")
    return value


def _form_int(w: Walker, value: str) -> str:
    if not _FORM_INT.fullmatch(value):
        raise w.invalid("must be an integer")
    w.number(int(value))  # a seed that looks like a phone number is refused, as in JSON
    return value


def _language(w: Walker, value: str) -> str:
    if not _LANGUAGE.fullmatch(value):
        raise w.invalid("must be a language code such as 'en' or 'zh-Hans'")
    return value


_GRANULARITY = _enum("word", "segment")

TRANSCRIPTION_FIELDS: dict[str, Field] = {
    "model": _keep_model,
    "prompt": _text,
    "language": _language,
    "to_language": _language,
    "response_format": _enum("json", "text", "srt", "verbose_json", "vtt"),
    "timestamp_granularities[]": _GRANULARITY,
    "timestamp_granularities": _GRANULARITY,
    "stream": _form_bool,
    "stream_include_usage": _form_bool,
    "stream_continuous_usage_stats": _form_bool,
    "temperature": _form_number,
    "top_p": _form_number,
    "min_p": _form_number,
    "frequency_penalty": _form_number,
    "presence_penalty": _form_number,
    "repetition_penalty": _form_number,
    "top_k": _form_int,
    "seed": _form_int,
    "max_completion_tokens": _form_int,
}

_FORM_ROUTES: dict[str, dict[str, Field]] = {_TRANSCRIPTIONS: TRANSCRIPTION_FIELDS}


def walk_request(path: str, body: Any, walker: Walker) -> Any:
    """Redact a request body in place (a new top-level object only when a top-level key changed).
    Known routes get their schema; any other body is walked generically. Raises ``ProxyError``."""
    fields = _ROUTES.get(path)
    if isinstance(body, dict):
        return walker.obj(body, fields)
    if fields is not None:
        raise walker.invalid("must be a JSON object")
    return walker.any(body)


def walk_form(path: str, form: Form, walker: Walker) -> Form:
    """Redact a multipart form in place: known text fields get their handlers, other fields have
    their name and value redacted, the file its name (its bytes are not text). Raises ``ProxyError``."""
    fields = _FORM_ROUTES.get(path, {})
    stack = walker.stack
    names: set[str] = set()
    for part in form.parts:
        stack.append(part.name.removesuffix("[]"))
        if part.filename is not None:
            part.filename = walker.text(part.filename)
            if walker.text(part.content_type) != part.content_type:
                part.content_type = OCTET_STREAM  # a media type is no place for personal data
        else:
            handler = fields.get(part.name)
            if handler is None:
                part.name = walker.text(part.name)
                handler = _text
            part.value = handler(walker, part.value)
            if part.name in names and not part.name.endswith("[]"):
                raise walker.invalid("collides with another field once personal data is redacted")
            names.add(part.name)
        stack.pop()
    return form


# -- answers ---------------------------------------------------------------------------------------
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
# Vectors of embeddings (``embedding``) and pooling outputs (``data``), sent as base64 when asked for.
_VECTOR_KEYS = frozenset({"embedding", "data"})
_VECTOR_OBJECTS = frozenset({"embedding", "pooling"})


def _base64_vector(holder: dict[str, Any], value: str) -> bool:
    """An encoded vector of an embedding or pooling item: left alone (it is numbers, and rewriting a
    digit run in it would corrupt the vector). Only in such an item, so a ``data`` string elsewhere is
    still text."""
    return (
        holder.get("object") in _VECTOR_OBJECTS
        and len(value) % 4 == 0
        and _BASE64.fullmatch(value) is not None
    )


# Keys whose string values are identifiers of the answer's schema (``"object": "chat.completion"``,
# ``"role": "assistant"``, ``"finish_reason": "stop"``, ``"type": "response.output_text.delta"``).
_IDENT_KEYS = frozenset({"object", "role", "finish_reason", "type", "status", "model"})
_SCHEMA_WORD = re.compile(r"[a-z][a-z_.]{1,47}")
_SCHEMA_MAX = 2048
# Model names (``deepseek-ai/deepseek-llm-7b-chat``, ``qwen2.5:7b``) and request paths
# (``/v1/chat/completions``): identifiers, not prose, and the same in every request.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,95}")
URL_PATH = re.compile(r"/[A-Za-z0-9._:/-]{0,127}")


def learn_clean(known: set[str], word: str, shape: re.Pattern[str]) -> None:
    """Remember ``word``, which redacted to itself, in a stage's ``known`` set, so that later requests
    skip the scan: only words of ``shape`` (identifiers, never a prompt's or an answer's prose), and at
    most ``_SCHEMA_MAX`` of them (a stranger sending new names only stops them being remembered).
    Sound because a stage's redactor and policy never change while it runs."""
    if len(known) < _SCHEMA_MAX and shape.fullmatch(word):
        known.add(word)


class AnswerWalker:
    """Every string and key of an answer through ``redact`` (no limits: answers come from our
    upstream). Short results are cached, so ids, model names and roles that repeat in every stream
    event cost one dict lookup after the first."""

    __slots__ = ("_cache", "changed", "redact", "schema")

    def __init__(self, redact: Redact, schema: set[str] | None = None) -> None:
        self.redact = redact
        self.changed = False  # set when anything was rewritten; the caller resets it as it likes
        self._cache: set[str] = set()
        # Shared by every answer of a stage (``SchemaWords``): keys and identifier values that
        # redacted to themselves once, so each answer does not scan ``finish_reason`` again.
        self.schema = schema if schema is not None else set()

    def text(self, value: str) -> str:
        short = len(value) <= _CLEAN_MAX
        if short and value in self._cache:
            return value
        out = self.redact(value)
        if out == value:
            if short and len(self._cache) < 4096:
                # Only unchanged values are cached: a redaction is counted each time it happens.
                self._cache.add(value)
            return value
        self.changed = True
        return out

    def any(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value) if value else value
        if isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, (str, dict, list)):
                    new = self.any(item)
                    if new is not item:
                        value[i] = new
            return value
        if isinstance(value, dict):
            return self.obj(value)
        return value

    def obj(self, value: dict[str, Any], skip: AbstractSet[str] = frozenset()) -> dict[str, Any]:
        cache = self._cache
        renamed = None
        for key, item in value.items():
            if key in skip:
                continue
            if isinstance(item, str):
                if key in _VECTOR_KEYS and _base64_vector(value, item):
                    continue  # numbers as base64: not text
                if item and item not in cache and not (key in _IDENT_KEYS and item in self.schema):
                    new = self.text(item)
                    if new is not item:
                        value[key] = new
                    elif key in _IDENT_KEYS:
                        learn_clean(self.schema, item, MODEL_NAME if key == "model" else _SCHEMA_WORD)
            elif isinstance(item, (dict, list)):
                if key == "embedding" and isinstance(item, list):
                    continue  # numbers: not text
                new = self.any(item)
                if new is not item:
                    value[key] = new
            if key in cache or key in self.schema:
                continue
            new_key = self.text(key)
            if new_key != key:
                if renamed is None:
                    renamed = {}
                renamed[key] = new_key
            else:
                # Keys: only words that cannot carry personal data (lower-case letters, '_' and '.':
                # no digits, no '@'). Answers are never remembered, only their schema.
                learn_clean(self.schema, key, _SCHEMA_WORD)
        if renamed is None:
            return value
        # Two keys that redact alike: the later value wins (an answer cannot be refused).
        return {renamed.get(k, k): v for k, v in value.items()}

    def logprobs(self, value: Any) -> Any:
        """Token strings (and the keys of completions-style ``top_logprobs`` maps) redacted one by
        one; ``bytes`` arrays dropped, as they spell the raw token."""
        if _drop_bytes(value):
            self.changed = True
        return self.any(value)


def _drop_bytes(value: Any) -> bool:
    dropped = False
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "bytes":
                if item is not None:
                    value[key] = None
                    dropped = True
            elif isinstance(item, (dict, list)):
                dropped = _drop_bytes(item) or dropped
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)):
                dropped = _drop_bytes(item) or dropped
    return dropped
