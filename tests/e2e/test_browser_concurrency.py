"""Two people chat in two browsers while a training job runs on the same server: both get a
reply, each reply is stored in that person's own conversation (nothing crosses over), the job
keeps making progress and finishes, and the server stays up throughout.

Two browser contexts are two users (separate cookies, storage and gradio sessions). The dataset
is imported into the workspace before the server starts; the job is started the way a script
would, through the Tune tab's `tune_start` API, on the tiny random model."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from ..conftest import read_db

pytestmark = [pytest.mark.server, pytest.mark.browser]

REPO_ROOT = Path(__file__).resolve().parents[2]
PAIRS = REPO_ROOT / "demo" / "lantern_bay" / "pairs.jsonl"
MESSAGES = {"ana": "Ana asks: which saddle suits a long tour?", "ben": "Ben asks: how often should I oil the chain?"}


def _import_pairs(ws: Path, n: int) -> None:
    from assistant.workspace import Workspace
    from tuning import open_curation
    from tuning.dataset_import import import_file

    small = ws.parent / "pairs.jsonl"
    small.write_text("".join(PAIRS.read_text(encoding="utf-8").splitlines(keepends=True)[:n]), encoding="utf-8")
    result = import_file(open_curation(Workspace(ws)).store, small)
    assert result.imported == n and result.bad_total == 0


def _job(ws: Path) -> tuple[str, int, int | None]:
    [(status, step, total)] = read_db(ws, "SELECT status, step, total_steps FROM tune_jobs")
    return status, step, total


def _open_chat(browser, url: str):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.set_default_timeout(120_000)
    page.goto(url)
    page.get_by_placeholder("Ask something and press Enter").wait_for()
    return context, page


def test_two_browsers_chat_while_a_job_trains(browser, tailor_server, tiny_model_dir, tmp_path, wait_until):
    from gradio_client import Client

    ws = tmp_path / "ws"
    _import_pairs(ws, 60)
    server = tailor_server(ws, tiny_model_dir)

    # Two people open the app, each in their own browser context.
    contexts = {who: _open_chat(browser, server.url) for who in MESSAGES}
    try:
        # Start the job: 10 epochs of 12 steps, early stopping off, one thread. Measured on 2 cores
        # shared with other work: ~4 steps/s while both chats ran (about 50 steps for the two
        # replies), ~8 steps/s alone; so it is still training when the replies arrive.
        client = Client(server.url, verbose=False)
        client.predict("concurrency", True, 10, 2e-4, 4, 4, 128, 0, 1, api_name="/tune_start")
        wait_until(lambda: _job(ws)[1] >= 1, timeout=240, interval=0.5)
        status, step, total = _job(ws)
        assert status == "running" and step < total

        for who, (_, page) in contexts.items():  # both send before either reply is in
            page.get_by_placeholder("Ask something and press Enter").fill(MESSAGES[who])
            page.get_by_role("button", name="Send", exact=True).click()
        conv_ids = {}
        for who, (_, page) in contexts.items():
            page.get_by_text("tokens ·").first.wait_for()  # the reply's label: the reply is stored
            # The page never shows the id: the database says which conversation got the message.
            [(conv_ids[who],)] = read_db(ws, "SELECT conversation_id FROM messages WHERE content=?", MESSAGES[who])
        # The job is still training (or has just finished): its step moves on past where it was
        # when the messages were sent. (The server writes the step to the database every 2 s.)
        assert _job(ws)[0] in ("running", "succeeded")
        wait_until(lambda: _job(ws)[1] > step, timeout=120, interval=0.5)

        # Each reply landed in its own person's conversation, nothing from the other one.
        assert conv_ids["ana"] and conv_ids["ben"] and conv_ids["ana"] != conv_ids["ben"]
        for who, conv_id in conv_ids.items():
            rows = read_db(ws, "SELECT role, content FROM messages WHERE conversation_id=? ORDER BY id", conv_id)
            assert [r[0] for r in rows] == ["user", "assistant"], rows
            assert rows[0][1] == MESSAGES[who] and rows[1][1].strip()
            other = MESSAGES["ben" if who == "ana" else "ana"]
            assert all(other not in content for _, content in rows)
            # and the page shows that person's own question
            page = contexts[who][1]
            assert page.locator(".message.user, [data-testid='user']").filter(has_text=MESSAGES[who]).count() >= 1
            assert page.locator(".message.user, [data-testid='user']").filter(has_text=other).count() == 0
        assert read_db(ws, "SELECT COUNT(*) FROM conversations") == [(2,)]
    finally:
        for context, _ in contexts.values():
            context.close()

    # The job finishes its course and publishes its adapter.
    done = wait_until(
        lambda: (j := _job(ws))[0] not in ("queued", "starting", "running") and j, timeout=300, interval=1
    )
    assert done[0] == "succeeded" and done[1] == done[2] == total, (done, server.log()[-3000:])
    assert read_db(ws, "SELECT name FROM adapters WHERE status='ready'") == [("concurrency-v1",)]
    # The server is still up and answers.
    assert server.proc.poll() is None
    with urllib.request.urlopen(server.url, timeout=10) as r:
        assert r.status == 200
