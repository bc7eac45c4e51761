"""Activity numbers from the conversation log: per-day counts, thumbs-up rate per adapter,
latency percentiles, hints."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from assistant.conversations import ConversationLog
from assistant.errors import ValidationError
from evals.activity import Activity, percentile

TODAY = date(2026, 3, 10)


def _at(ws, table, row_id, day, col="created_at", key="id"):
    with ws.db.transaction() as conn:
        conn.execute(f"UPDATE {table} SET {col}=? WHERE {key}=?", (f"{day}T12:00:00.000+00:00", row_id))


@pytest.fixture
def log_with_history(workspace):
    """Day 1 (Mar 8): 2 conversations, base; day 3 (Mar 10): 1 conversation through the API
    with the adapter "tone". Ratings: base 1 up 1 down on Mar 8; tone 2 up on Mar 10."""
    log = ConversationLog(workspace.db)
    latencies = iter([100, 200, 300, 400, 1000])
    plan = [
        ("2026-03-08", None, "chat", [1]),
        ("2026-03-08", None, "chat", [-1]),
        ("2026-03-10", "tone", "api", [1, 1, None]),
    ]
    for day, adapter, source, ratings in plan:
        conv = log.create(adapter=adapter)
        _at(workspace, "conversations", conv.id, day)
        for rating in ratings:
            u = log.add_message(conv.id, "user", "q", source=source)
            a = log.add_message(
                conv.id,
                "assistant",
                "a",
                adapter=adapter,
                source=source,
                latency_ms=float(next(latencies)),
                ttft_ms=50.0,
            )
            for m in (u, a):
                _at(workspace, "messages", m.id, day)
            if rating is not None:
                log.set_feedback(a.id, rating)
                _at(workspace, "feedback", a.id, day, key="message_id")
    old = log.create()  # outside a 7-day window
    _at(workspace, "conversations", old.id, "2026-01-01")
    return workspace


def test_report_counts_rates_and_latency(log_with_history):
    report = Activity(log_with_history.db).report(days=7, today=TODAY)
    assert report.since == "2026-03-04" and report.until == "2026-03-10" and len(report.days) == 7
    by_day = {d.day: d for d in report.days}
    assert (
        by_day["2026-03-08"].conversations,
        by_day["2026-03-08"].user_messages,
        by_day["2026-03-08"].assistant_messages,
        by_day["2026-03-08"].api_messages,
    ) == (2, 2, 2, 0)
    assert (by_day["2026-03-10"].conversations, by_day["2026-03-10"].api_messages) == (1, 6)
    assert by_day["2026-03-09"].conversations == 0
    assert report.totals["conversations"] == 3  # the January one is outside the window
    rates = {(r.period, r.adapter): (r.up, r.down, r.up_rate) for r in report.ratings}
    assert rates == {("2026-03-08", "base"): (1, 1, 0.5), ("2026-03-10", "tone"): (2, 0, 1.0)}
    lat = [100, 200, 300, 400, 1000]
    assert report.latency.replies == 5
    assert report.latency.p50_ms == pytest.approx(np.percentile(lat, 50))
    assert report.latency.p95_ms == pytest.approx(np.percentile(lat, 95))
    assert report.latency.ttft_p95_ms == pytest.approx(50.0)
    assert [s.label for s in report.latency_by_day] == ["2026-03-08", "2026-03-10"]
    assert any("thumbs down" in h for h in report.hints)


def test_weekly_buckets(log_with_history):
    report = Activity(log_with_history.db).report(days=30, bucket="week", today=TODAY)
    # Mar 8 2026 is a Sunday (week of Mon Mar 2); Mar 10 a Tuesday (week of Mon Mar 9)
    assert [(r.period, r.adapter) for r in report.ratings] == [("2026-03-02", "base"), ("2026-03-09", "tone")]


def test_empty_log_and_bad_arguments(workspace):
    ConversationLog(workspace.db)
    report = Activity(workspace.db).report(days=3, today=TODAY)
    assert report.totals["messages"] == 0 and report.latency.p50_ms is None and report.ratings == []
    assert "No chats" in report.hints[0]
    with pytest.raises(ValidationError):
        Activity(workspace.db).report(days=0)
    with pytest.raises(ValidationError):
        Activity(workspace.db).report(bucket="month")


def test_falling_rate_is_flagged(workspace):
    log = ConversationLog(workspace.db)
    conv = log.create(adapter="tone")
    for day, ratings in (("2026-03-01", [1] * 6), ("2026-03-08", [-1] * 5 + [1])):
        for r in ratings:
            a = log.add_message(conv.id, "assistant", "a", adapter="tone")
            log.set_feedback(a.id, r)
            _at(workspace, "feedback", a.id, day, key="message_id")
    report = Activity(workspace.db).report(days=14, today=TODAY)
    assert any("tone: the thumbs-up rate fell from 100% to 17%" in h for h in report.hints), report.hints


def test_percentile_matches_numpy():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 101):
        xs = list(rng.exponential(size=n))
        for q in (50, 95):
            assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))
    assert percentile([], 50) is None


def test_activity_tab_formats_the_report(log_with_history):
    from ui.activity_tab import frames, summary_markdown

    report = Activity(log_with_history.db).report(days=7, today=TODAY)
    per_day, ratings, latency = frames(report)
    assert len(per_day) == 14 and set(per_day["kind"]) == {"conversations", "messages"}
    assert list(ratings["adapter"]) == ["base", "tone"]
    assert latency.iloc[0]["day"] == "all" and latency.iloc[0]["replies"] == 5
    text = summary_markdown(report)
    assert "3 conversations" in text and "👍 3" in text and "👎 1" in text
