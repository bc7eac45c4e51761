"""Activity: how the assistant is used and how well it does, from the conversation log.

- conversations and messages per day (by source: the web app / CLI, or the API);
- thumbs-up rate per adapter ("base" for the base model) per day or week, from `feedback`;
- reply latency and time to first token, p50/p95, overall and per day.

Numbers come straight from SQL over `conversations`, `messages` and `feedback`, so they
include everything the chat tab, the CLI and /v1 logged. `hints()` turns them into the
few sentences a user needs to decide when to curate and re-tune."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

from assistant.db import Database
from assistant.errors import ValidationError


@dataclass
class DayCount:
    day: str  # YYYY-MM-DD (UTC)
    conversations: int = 0
    user_messages: int = 0
    assistant_messages: int = 0
    api_messages: int = 0  # of those, sent through /v1


@dataclass
class RatingPoint:
    period: str  # YYYY-MM-DD: the day, or the Monday of the week
    adapter: str  # "base" for the base model
    up: int
    down: int

    @property
    def rated(self) -> int:
        return self.up + self.down

    @property
    def up_rate(self) -> float:
        return self.up / self.rated if self.rated else 0.0


@dataclass
class LatencyStats:
    label: str  # a day, or "all"
    replies: int
    p50_ms: float | None
    p95_ms: float | None
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None


@dataclass
class ActivityReport:
    since: str
    until: str
    days: list[DayCount]
    ratings: list[RatingPoint]
    latency: LatencyStats
    latency_by_day: list[LatencyStats]
    totals: dict = field(default_factory=dict)
    hints: list[str] = field(default_factory=list)


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolation percentile (numpy's default) of `values`; None when empty."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _latency(label: str, rows: list[tuple[float | None, float | None]]) -> LatencyStats:
    lat = [r[0] for r in rows if r[0] is not None]
    ttft = [r[1] for r in rows if r[1] is not None]
    return LatencyStats(
        label, len(lat), percentile(lat, 50), percentile(lat, 95), percentile(ttft, 50), percentile(ttft, 95)
    )


def _week(day: str) -> str:
    d = date.fromisoformat(day)
    return (d - timedelta(days=d.weekday())).isoformat()


class Activity:
    def __init__(self, db: Database):
        self.db = db

    def report(self, days: int = 30, bucket: str = "day", today: date | None = None) -> ActivityReport:
        """The last `days` days up to and including `today` (UTC). `bucket` groups thumbs-up
        rates by "day" or "week"."""
        if not 1 <= days <= 3660:
            raise ValidationError("days must be between 1 and 3660")
        if bucket not in ("day", "week"):
            raise ValidationError("bucket must be 'day' or 'week'")
        today = today or datetime.now(timezone.utc).date()
        first = today - timedelta(days=days - 1)
        since, until = first.isoformat(), (today + timedelta(days=1)).isoformat()
        span = (since, until)
        with self.db.read() as conn:
            per_day = {
                (first + timedelta(days=i)).isoformat(): DayCount((first + timedelta(days=i)).isoformat())
                for i in range(days)
            }
            for day, n in conn.execute(
                "SELECT substr(created_at, 1, 10) AS d, COUNT(*) FROM conversations"
                " WHERE created_at >= ? AND created_at < ? GROUP BY d",
                span,
            ):
                if day in per_day:
                    per_day[day].conversations = n
            for day, role, source, n in conn.execute(
                "SELECT substr(created_at, 1, 10) AS d, role, source, COUNT(*) FROM messages"
                " WHERE created_at >= ? AND created_at < ? GROUP BY d, role, source",
                span,
            ):
                if day not in per_day:
                    continue
                if role == "user":
                    per_day[day].user_messages += n
                elif role == "assistant":
                    per_day[day].assistant_messages += n
                if source == "api":
                    per_day[day].api_messages += n
            # A rating counts on the day it was given; the adapter is the one that wrote the reply.
            grouped: dict[tuple[str, str], list[int]] = {}
            for day, adapter, up, down in conn.execute(
                "SELECT substr(f.created_at, 1, 10) AS d, COALESCE(m.adapter, 'base') AS a,"
                " SUM(f.rating = 1), SUM(f.rating = -1) FROM feedback f JOIN messages m ON m.id = f.message_id"
                " WHERE f.created_at >= ? AND f.created_at < ? GROUP BY d, a",
                span,
            ):
                key = (_week(day) if bucket == "week" else day, adapter)
                acc = grouped.setdefault(key, [0, 0])
                acc[0] += up or 0
                acc[1] += down or 0
            rows = conn.execute(
                "SELECT substr(created_at, 1, 10), latency_ms, ttft_ms FROM messages WHERE role='assistant'"
                " AND latency_ms IS NOT NULL AND latency_ms > 0 AND created_at >= ? AND created_at < ?",
                span,
            ).fetchall()
        ratings = sorted(
            (RatingPoint(p, a, up, down) for (p, a), (up, down) in grouped.items()), key=lambda r: (r.period, r.adapter)
        )
        by_day: dict[str, list] = {}
        for day, lat, ttft in rows:
            by_day.setdefault(day, []).append((lat, ttft))
        latency_by_day = [_latency(d, by_day[d]) for d in sorted(by_day)]
        overall = _latency("all", [(lat, ttft) for _, lat, ttft in rows])
        days_list = list(per_day.values())
        totals = {
            "conversations": sum(d.conversations for d in days_list),
            "messages": sum(d.user_messages + d.assistant_messages for d in days_list),
            "api_messages": sum(d.api_messages for d in days_list),
            "thumbs_up": sum(r.up for r in ratings),
            "thumbs_down": sum(r.down for r in ratings),
        }
        report = ActivityReport(since, today.isoformat(), days_list, ratings, overall, latency_by_day, totals)
        report.hints = hints(report)
        return report


def hints(report: ActivityReport) -> list[str]:
    """Plain sentences on when to curate and re-tune, from the numbers in `report`."""
    out = []
    t = report.totals
    rated = t["thumbs_up"] + t["thumbs_down"]
    if not t.get("messages") and not rated:
        return ["No chats in this period yet: chat in the Chat tab or through /v1, then rate replies."]
    replies = sum(d.assistant_messages for d in report.days)
    if replies and rated / replies < 0.1:
        out.append(
            f"Only {rated} of {replies} replies are rated: thumbs up/down in the chat tell you (and the "
            "dataset) what works."
        )
    if t["thumbs_down"]:
        out.append(
            f"{t['thumbs_down']} replies got a thumbs down: correct them into training pairs in the "
            "Curate view, then re-tune."
        )
    by_adapter: dict[str, list[RatingPoint]] = {}
    for r in report.ratings:
        by_adapter.setdefault(r.adapter, []).append(r)
    for adapter, points in sorted(by_adapter.items()):
        if len(points) < 2:
            continue
        half = len(points) // 2
        early, late = points[:half], points[half:]
        e_up, e_n = sum(p.up for p in early), sum(p.rated for p in early)
        l_up, l_n = sum(p.up for p in late), sum(p.rated for p in late)
        if e_n >= 5 and l_n >= 5 and l_up / l_n < e_up / e_n - 0.15:
            out.append(
                f"{adapter}: the thumbs-up rate fell from {e_up / e_n:.0%} to {l_up / l_n:.0%}; look at the "
                "recent thumbs-down replies and re-tune."
            )
    lat = report.latency
    if lat.p95_ms and lat.p50_ms and lat.p95_ms > 3 * lat.p50_ms and lat.replies >= 20:
        out.append(
            f"Slow tail: p95 reply time {lat.p95_ms / 1000:.1f} s vs median {lat.p50_ms / 1000:.1f} s "
            "(long replies, or requests queued behind each other / a training job)."
        )
    return out or ["Nothing needs attention: ratings are steady."]
