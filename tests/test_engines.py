"""Engines in-process: streams, cancellation, constraints, and the fallback order."""

from __future__ import annotations

import threading

import pytest

from miners.engines import EngineUnavailable, GenerationRequest, complete, load_engine
from miners.engines.echo import EchoEngine
from tasks.settings import Settings


def ask(text: str, **fields) -> GenerationRequest:
    return GenerationRequest([{"role": "user", "content": text}], **fields)


def test_echo_streams_pieces_that_make_up_its_result():
    stream = EchoEngine().stream(ask("one two three"))
    pieces = list(stream)
    assert pieces == ["echo:", " one", " two", " three"]
    assert stream.result is not None
    assert stream.result.text == "".join(pieces) == "echo: one two three"
    assert (stream.result.completion_tokens, stream.result.finish_reason) == (4, "stop")


def test_echo_honours_max_tokens_stop_and_choices():
    assert complete(EchoEngine(), ask("a b c d e", max_tokens=3)).finish_reason == "length"
    assert complete(EchoEngine(), ask("a b c d e", max_tokens=3)).text == "echo: a b"
    assert complete(EchoEngine(), ask("a b STOP c", stop=("STOP",))).text == "echo: a b "
    labels = ("menu", "order", "other")
    assert complete(EchoEngine(), ask("I want to ORDER pizza", choices=labels)).text == "order"
    assert complete(EchoEngine(), ask("hello", choices=labels)).text == "menu"


def test_a_cancelled_stream_ends_early_with_abort():
    engine = EchoEngine(delay_ms=60_000)  # a minute per answer, spread over its pieces
    stream = engine.stream(ask("many words that would take a long time"))
    got: list[str] = []
    done = threading.Event()

    def consume() -> None:
        got.extend(stream)
        done.set()

    threading.Thread(target=consume, daemon=True).start()
    stream.cancel()
    assert done.wait(5)
    assert stream.result is not None
    assert stream.result.finish_reason == "abort"
    assert len(got) < 8


def test_fallback_takes_the_next_engine_and_says_why():
    loaded = load_engine(Settings(engines="vllm,echo", vllm_model="/nonexistent/model"))
    assert loaded.engine.name == "echo"
    ((name, reason),) = loaded.skipped
    assert name == "vllm"
    assert "not installed" in reason or "no model" in reason


def test_no_engine_that_can_start_is_a_clear_error():
    with pytest.raises(EngineUnavailable, match="no engine could start"):
        load_engine(Settings(engines="vllm", vllm_model="/nonexistent/model"))
    with pytest.raises(EngineUnavailable, match="unknown engine"):
        load_engine(Settings(engines="tensorrt,echo"))


@pytest.mark.llamacpp
def test_llamacpp_streams_in_order_and_honours_choices_and_seed():
    from miners.engines.llamacpp import LlamaCppEngine

    engine = LlamaCppEngine()
    try:
        stream = engine.stream(ask("Count to five.", max_tokens=16))
        pieces = list(stream)
        assert stream.result is not None
        assert len(pieces) >= 2
        assert "".join(pieces) == stream.result.text
        assert stream.result.completion_tokens == len(pieces)
        assert stream.result.prompt_tokens > 5
        labels = ("menu", "order", "reservation")
        for text in ("Can I book a table?", "What do you serve?"):
            assert complete(engine, ask(text, choices=labels)).text in labels
        sampled = ask("Say something.", max_tokens=12, temperature=0.9, seed=7)
        assert complete(engine, sampled).text == complete(engine, sampled).text
    finally:
        engine.close()
