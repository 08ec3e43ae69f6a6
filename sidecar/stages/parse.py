"""Parse stage: inference calls must carry a JSON object (a multipart form for uploads); read the
model and the stream flag."""

from __future__ import annotations

from custos.errors import bad_request

from ..context import FORM_ROUTES, INFERENCE_ROUTES, RequestContext
from ..multipart import form_bool
from ..stage import Stage, StageEnv


class ParseStage(Stage):
    name = "parse"

    async def on_request(self, ctx: RequestContext) -> None:
        if ctx.method != "POST" or ctx.path not in INFERENCE_ROUTES:
            return
        if ctx.path in FORM_ROUTES:
            _parse_form(ctx)
            return
        body = ctx.json  # raises 400 with the parser's reason when malformed
        if not isinstance(body, dict):
            raise bad_request("Request body must be a JSON object.", code="invalid_json")
        model = body.get("model")
        if model is not None and not isinstance(model, str):
            raise bad_request("'model' must be a string.", param="model")
        ctx.model = model
        stream = body.get("stream", False)
        if not isinstance(stream, bool) and stream is not None:
            raise bad_request("'stream' must be a boolean.", param="stream")
        ctx.stream = bool(stream)


def _parse_form(ctx: RequestContext) -> None:
    form = ctx.form  # 400 when the body cannot be read whole (sidecar.multipart)
    ctx.model = form.text("model")
    stream = form.text("stream")
    flag = False if stream is None else form_bool(stream)
    if flag is None:
        raise bad_request("'stream' must be a boolean.", param="stream")
    ctx.stream = flag


def build(section: None, env: StageEnv) -> Stage:
    return ParseStage()
