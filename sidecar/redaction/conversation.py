"""Redaction of training conversations (``custos inference lora train``): the default policy over each
message's content, one pseudonym session per conversation, so a value keeps one placeholder
throughout a conversation. Given to ``inference.lora.train`` by the CLI, so training does not import
the proxy."""

from __future__ import annotations

import os
from collections.abc import Callable

from .engine import Redactor
from .operators import Session
from .policy import Policy


def conversation_redactor() -> Callable[[list[dict[str, str]]], dict[str, int]]:
    # The default policy replaces values with placeholders (<EMAIL_1>); a hash key is needed only by
    # the hash operator, so a throwaway one does.
    redactor = Redactor(Policy(), os.urandom(32))

    def redact(messages: list[dict[str, str]]) -> dict[str, int]:
        session = Session()
        for message in messages:
            message["content"] = redactor.redact(message["content"], session)
        return dict(session.counts)

    return redact
