"""OpenAI-compatible API: ``POST /v1/chat/completions`` and ``GET /v1/models``.

The same push path as ``/chat/direct`` behind the wire format of OpenAI's API, so
the official ``openai`` client works unchanged (``base_url=".../v1"``). Sampling
parameters pass through (temperature, top_p, max_tokens / max_completion_tokens,
stop, seed); ``guided_choice`` (vLLM's name) constrains the answer to one of a
list of labels; ``n`` (1 to ``MAX_N``) asks for that many choices, each a job of its
own (``web.fleet.choices``). Parameters this service cannot honour are refused with 400
naming them rather than silently ignored. Errors use OpenAI's shape:
``{"error": {"message", "type", "param", "code"}}``; a model nobody serves or knows is
404 ``model_not_found``, as OpenAI and vLLM answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from tasks.errors import MiaError, ModelNotFound, ModelNotServed, ValidationError
from tasks.jobs import Job
from web.common import validation as v
from web.common.parsing import MAX_CHOICES, MAX_TOKENS_LIMIT, parse_sampling
from web.common.sse import relay, sse, sse_response
from web.fleet.choices import merged, run_all, start_all, variants
from web.fleet.client import JobStream
from web.services import services

T = TypeVar("T")

bp = Blueprint("openai", __name__, url_prefix="/v1")

ROLES = ("system", "user", "assistant")
MAX_MESSAGES = 256
MAX_N = 8  # choices per request (docs/api.md); OpenAI's own limit is 128
ACCEPTED = {
    "model",
    "messages",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "stream",
    "stream_options",
    "n",
    "user",
    "guided_choice",
    "presence_penalty",
    "frequency_penalty",
}
# Known OpenAI parameters this service does not implement: refused by name.
UNSUPPORTED = {
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "parallel_tool_calls",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "response_format",
    "audio",
    "modalities",
    "prediction",
    "reasoning_effort",
    "service_tier",
    "store",
    "metadata",
    "web_search_options",
}


@bp.get("/models")
def models() -> ResponseReturnValue:
    served = sorted({m for miner in services().registry.live() for m in miner.models})
    data = [{"id": m, "object": "model", "created": 0, "owned_by": "mia"} for m in served]
    return jsonify(object="list", data=data)


@bp.post("/chat/completions")
def chat_completions() -> ResponseReturnValue:
    svc = services()
    body = v.json_object(ACCEPTED | UNSUPPORTED)
    job, include_usage = parse_completion(body, svc.settings.max_message_chars)
    batch = variants(job, v.integer(body, "n", 1, 1, MAX_N))
    timeout_s = svc.settings.request_timeout_s
    if job.stream:
        streams = found(lambda: start_all(svc.jobs, batch, timeout_s))
        return sse_response(chunks(streams, include_usage))
    return jsonify(completion(batch, found(lambda: run_all(svc.jobs, batch, timeout_s))))


def found(call: Callable[[], T]) -> T:
    """``call()``, with a model nobody serves or knows answered as OpenAI does (404)."""
    try:
        return call()
    except ModelNotServed as exc:
        raise ModelNotFound(str(exc.details["model"])) from exc


def parse_completion(body: dict[str, Any], max_chars: int) -> tuple[Job, bool]:
    """The job for a chat completion request (its first choice), and whether to send
    usage when streaming."""
    refused = sorted(set(body) & UNSUPPORTED)
    if refused:
        raise ValidationError(f"{refused[0]} is not supported by this server", refused[0])
    for name in ("presence_penalty", "frequency_penalty"):
        if v.number(body, name, 0.0, -2.0, 2.0) != 0:
            raise ValidationError(f"{name} is not supported (only 0)", name)
    model = v.identifier(body, "model", 128, required=True)
    v.text(body, "user", 256)
    if body.get("max_completion_tokens") is not None:
        v.integer(body, "max_completion_tokens", 1, 1, MAX_TOKENS_LIMIT)
        body = {**body, "max_tokens": body["max_completion_tokens"]}
    include_usage = parse_stream_options(body.get("stream_options"))
    sampling = parse_sampling(
        {k: body[k] for k in ("max_tokens", "temperature", "top_p", "seed", "stop") if k in body}
        | {"choices": v.text_list(body, "guided_choice", MAX_CHOICES, 128) or None},
        services().settings,
    )
    job = Job(
        messages=parse_messages(body.get("messages"), max_chars),
        model=model,
        stream=v.boolean(body, "stream"),
        **sampling,
    )
    return job, include_usage


def parse_stream_options(options: object) -> bool:
    """``stream_options``: absent, null or ``{"include_usage": bool}``; the flag."""
    if options is None:
        return False
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise ValidationError(
            "stream_options must be an object with include_usage only", "stream_options"
        )
    usage = options.get("include_usage", False)
    if not isinstance(usage, bool):
        name = "stream_options.include_usage"
        raise ValidationError(f"{name} must be true or false", name)
    return usage


def parse_messages(messages: object, max_chars: int) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise ValidationError("messages must be a non-empty list", "messages")
    if len(messages) > MAX_MESSAGES:
        raise ValidationError(f"at most {MAX_MESSAGES} messages", "messages")
    out = []
    total = 0
    for i, message in enumerate(messages):
        field = f"messages[{i}]"
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise ValidationError(f"{field} needs a role: {', '.join(ROLES)}", field)
        if set(message) - {"role", "content", "name"}:
            raise ValidationError(f"{field} may have role, content and name only", field)
        content = message.get("content")
        if not isinstance(content, str):
            raise ValidationError(f"{field}.content must be a string", f"{field}.content")
        v.check_text(content, f"{field}.content")
        if not isinstance(message.get("name", ""), str):
            raise ValidationError(f"{field}.name must be a string", f"{field}.name")
        total += len(content)
        out.append({"role": message["role"], "content": content})
    if total > max_chars:
        raise ValidationError(f"messages are longer than {max_chars} characters", "messages")
    return out


def completion(batch: list[Job], results: list[dict[str, Any]]) -> dict[str, Any]:
    """OpenAI's chat completion: one choice per job of ``batch``."""
    job, first = batch[0], results[0]
    body: dict[str, Any] = {
        "id": f"chatcmpl-{job.job_id}",
        "object": "chat.completion",
        "created": int(job.accepted_at),
        "model": first.get("model") or job.model,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": result["response"]},
                "finish_reason": finish_reason(result),
                "logprobs": None,
            }
            for i, result in enumerate(results)
        ],
        "usage": usage(results),
        "mia": mia(job, first),
    }
    if len(batch) > 1:
        body["mia"]["choices"] = [mia(j, r) for j, r in zip(batch, results, strict=True)]
    return body


def finish_reason(result: dict[str, Any]) -> str:
    return str(result.get("finish_reason") or "stop")


def usage(results: list[dict[str, Any]]) -> dict[str, int]:
    """The prompt counted once (every choice has the same), the completions added up."""
    counts = [r.get("usage") or {} for r in results]
    prompt = counts[0].get("prompt_tokens") or 0
    done = sum(c.get("completion_tokens") or 0 for c in counts)
    return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}


def mia(job: Job, result: dict[str, Any]) -> dict[str, Any]:
    """This service's own figures for one choice."""
    return {"job_id": job.job_id, "miner_id": result.get("miner_id"), "timings": result["timings"]}


def chunks(streams: list[JobStream], include_usage: bool) -> Iterator[str]:
    """``chat.completion.chunk`` events of every choice as they come, then ``[DONE]``."""
    job = streams[0].job
    done: dict[int, dict[str, Any]] = {}

    def chunk(
        index: int | None, delta: dict[str, Any], finish: str | None = None, **extra: Any
    ) -> str:
        body: dict[str, Any] = {
            "id": f"chatcmpl-{job.job_id}",
            "object": "chat.completion.chunk",
            "created": int(job.accepted_at),
            "model": job.model,
            "choices": []
            if index is None
            else [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}],
            **extra,
        }
        return sse(None, body)

    def draw(kind: str, event: tuple[int, dict[str, Any]]) -> Iterator[str]:
        index, data = event
        if kind == "piece":
            yield chunk(index, {"content": data["delta"]})
            return
        done[index] = data
        yield chunk(index, {}, finish_reason(data), mia=mia(streams[index].job, data))
        if include_usage and len(done) == len(streams):
            yield chunk(None, {}, usage=usage([done[i] for i in sorted(done)]))

    def failed(exc: MiaError) -> str:
        return sse(
            None, {"error": {"message": exc.message, "type": "server_error", "code": exc.code}}
        )

    for index in range(len(streams)):
        yield chunk(index, {"role": "assistant", "content": ""})
    events = ((kind, (index, data)) for index, kind, data in merged(streams))
    yield from relay(events, draw, failed)
    yield sse(None, "[DONE]")
