"""Tests of backend.metrics: the one definition of decode speed, per request and per model."""

from __future__ import annotations

import pytest

from backend.metrics import RequestLog, RequestMetrics, decode_span, tokens_per_s


def metrics(completion_tokens, duration_s, ttft_s, status=200, model="m") -> RequestMetrics:
    return RequestMetrics(model=model, deployment_id="d", endpoint="chat/completions", stream=True,
                          status=status, started_at=0.0, duration_s=duration_s, ttft_s=ttft_s,
                          completion_tokens=completion_tokens)


@pytest.mark.parametrize(("tokens", "duration", "ttft", "span"), [
    (11, 1.5, 0.5, (10, 1.0)),      # the first token's wait is not decoding
    (5, 2.0, None, (4, 2.0)),       # no TTFT measured: the whole request
    (1, 1.0, 0.2, None),            # one token: nothing decoded after it
    (0, 1.0, 0.2, None), (None, 1.0, 0.2, None),
    (10, 0.5, 0.5, None),           # no time after the first token
])
def test_decode_span(tokens, duration, ttft, span):
    assert decode_span(tokens, duration, ttft) == span


def test_tokens_per_s():
    assert tokens_per_s(10, 0.5) == 20.0
    assert tokens_per_s(10, 0.0) is None


def test_a_request_reports_its_decode_speed():
    assert metrics(11, 1.5, 0.5).tokens_per_s == pytest.approx(10.0)
    # A single token has no decode span: the rate over the whole request stands in.
    assert metrics(1, 0.25, 0.2).tokens_per_s == pytest.approx(4.0)
    assert metrics(None, 1.0, 0.2).tokens_per_s is None
    assert metrics(0, 1.0, 0.2).tokens_per_s is None
    assert metrics(3, 0.0, None).tokens_per_s is None
    assert metrics(11, 1.5, 0.5).as_dict()["tokens_per_s"] == pytest.approx(10.0)


def test_a_model_reports_decode_speed_over_its_successful_requests():
    log = RequestLog()
    for m in (metrics(11, 1.5, 0.5), metrics(31, 2.0, 0.0), metrics(500, 1.0, 0.1, status=502),
              metrics(1, 1.0, 0.5), metrics(9, 3.0, 0.5, model="other")):
        log.started()
        log.record(m)
    totals = log.totals()
    # (10 + 30) tokens over (1.0 + 2.0) s; the failed and the one-token request add nothing.
    assert totals["m"].decode_tokens == 40 and totals["m"].decode_s_sum == pytest.approx(3.0)
    assert totals["m"].decode_tokens_per_s == pytest.approx(40 / 3)
    assert totals["other"].decode_tokens_per_s == pytest.approx(8 / 2.5)
    assert log.in_flight == 0
    log.record(metrics(None, 1.0, None, model="empty"))
    assert log.totals()["empty"].decode_tokens_per_s is None
