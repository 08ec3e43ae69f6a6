"""OpenAI-shaped errors. Every failure a client sees is one of these; never a traceback."""

from __future__ import annotations

import orjson


class ProxyError(Exception):
    """An error that ends a request with an OpenAI-shaped JSON body.

    `kind` is a short, bounded label (for metrics and audit), e.g. "upstream_unreachable".
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        kind: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.kind = kind or code or type
        self.headers = headers or []

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.code, self.param)


def error_body(message: str, type: str, code: str | None = None, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type, "param": param, "code": code}})


def bad_request(message: str, *, param: str | None = None, code: str = "invalid_request") -> ProxyError:
    return ProxyError(400, message, type="invalid_request_error", code=code, param=param)


def unauthorized(message: str, *, reason: str = "invalid_token") -> ProxyError:
    # RFC 6750: the challenge names the error; the token itself is never echoed.
    return ProxyError(
        401,
        message,
        type="authentication_error",
        code=reason,
        kind=f"auth_{reason}",
        headers=[(b"www-authenticate", b'Bearer error="invalid_token"')],
    )


def forbidden(message: str, *, code: str = "permission_denied") -> ProxyError:
    return ProxyError(403, message, type="permission_error", code=code)


class UsageError(Exception):
    """Bad input from the user on the command line: printed without a traceback, exit code 2."""


class ConfigError(Exception):
    """A configuration problem, already phrased for a human: from a file, one
    ``file:line:col: field: problem`` line per problem (custos.yamlfile)."""
