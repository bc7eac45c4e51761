"""Small pure helpers that turn service data into what widgets show (kept gradio-free so
they are easy to test)."""

from __future__ import annotations

from assistant.conversations import Conversation, StoredMessage


def conversation_choices(conversations: list[Conversation]) -> list[tuple[str, str]]:
    """(label, id) pairs for the chat's sidebar list: the title alone (the id is the value,
    never shown), newest first as the log lists them."""
    return [(c.title or "(untitled)", c.id) for c in conversations]


def reply_stats(m: StoredMessage | None) -> str:
    if m is None:
        return ""
    parts = [f"{m.completion_tokens or 0} tokens"]
    if m.latency_ms:
        parts.append(f"{m.latency_ms / 1000:.1f} s")
        if m.completion_tokens and m.completion_tokens > 1 and m.ttft_ms is not None:
            decode = (m.latency_ms - m.ttft_ms) / 1000
            if decode > 0:
                parts.append(f"{(m.completion_tokens - 1) / decode:.1f} tokens/s")
    if m.ttft_ms is not None:
        parts.append(f"first token {m.ttft_ms / 1000:.2f} s")
    if m.finish_reason and m.finish_reason != "stop":
        parts.append(f"ended: {m.finish_reason}")
    label = m.adapter or "base"
    return f"{label} · " + " · ".join(parts)


def plot_value(frame):
    """What to give a gr.LinePlot/BarPlot/ScatterPlot: None instead of an empty frame. In
    Gradio 6.31 a native plot with a colour column that was first given an empty DataFrame (no
    job yet, no ratings yet) drew axes but no marks once rows arrived (seen in Chromium; the
    Tune tab's loss curve stayed blank); one given None first draws them."""
    return None if frame is None or len(frame) == 0 else frame
