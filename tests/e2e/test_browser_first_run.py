"""A first visit to an empty workspace (issue #18 items 7 and 8), in one browser page against
one real server on the tiny model:

- every tab says what to do first: the Knowledge, Dataset, Tune, Evaluate and Activity tabs
  each show their first-run message, no table shows Gradio's placeholder headers ("1 2 3"),
  and no chart is on show with nothing to draw (a full-page screenshot of each tab goes to
  tests/e2e/screenshots/first-run-*.png for review);
- an idle page is quiet: with no job running, the open page sends no request to the server
  for 10 s (the Tune tab's timer used to poll every 2 s, forever);
- the timer runs only while a job does: a page that opens while a job runs polls, the loss
  chart appears once the job has logged a loss, and after the job is cancelled the page is
  quiet again.

No training runs here: the running job is planted as a worker would leave it (its row,
`running`, with the pid of a process whose command line names the job's folder, as
tests/tuning/test_jobs_restored_copy.py does), and the page's Cancel button stops it for real.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import open_tab

pytestmark = [pytest.mark.server, pytest.mark.browser]

# tab -> the first-run message it shows on an empty workspace
FIRST_RUN = {
    "Knowledge": "No documents yet:",
    "Dataset": "No examples yet.",
    "Tune": "No training job yet.",
    "Evaluate": "No evaluation runs yet.",
    "Activity": "Charts appear here once there are chats in this period",
}
# the accordions to open, so that the tables inside them are on show too
ACCORDIONS = {
    "Dataset": ["Import and export", "Cleaning report", "Splits and versions"],
    "Evaluate": ["Paired tests and side by side", "Blind votes", "Metrics over time"],
    "Activity": ["Numbers"],
}
CHARTS = ["#tune-loss-chart", "#activity-per-day-chart", "#activity-rating-chart", "#eval-history-chart"]
PLACEHOLDER_HEADERS = {"1", "2", "3"}
TICK_S = 2.0  # ui/tune_tab.py's TICK_S


def _expect():
    from playwright.sync_api import expect

    return expect


class Requests:
    """The page's requests to Gradio's API (/gradio_api/...), with the time each was sent."""

    def __init__(self, page):
        self.seen: list[tuple[float, str, dict]] = []
        page.on("request", self._on_request)

    def _on_request(self, request) -> None:
        if "/gradio_api/" not in request.url:
            return
        body = {}
        if request.method == "POST":
            try:
                body = json.loads(request.post_data or "{}")
            except ValueError:
                pass
        self.seen.append((time.monotonic(), request.url, body))

    def since(self, t0: float) -> list[tuple[float, str, dict]]:
        return [r for r in self.seen if r[0] >= t0]

    def calls_since(self, t0: float, fn_index: int) -> int:
        """Event calls (queue joins) of one event since `t0`."""
        return sum(1 for _, url, body in self.since(t0) if "/queue/join" in url and body.get("fn_index") == fn_index)


def _fn_index(page, api_name: str) -> int:
    """The id of the event called `api_name` in the page's Gradio config."""
    deps = page.evaluate("() => window.gradio_config.dependencies.map(d => [d.id, d.api_name])")
    [fn] = [i for i, name in deps if name == api_name]
    return fn


def _quiet_for(page, requests: Requests, seconds: float) -> list:
    """Wait `seconds` on the page; return the API requests it sent meanwhile."""
    t0 = time.monotonic()
    page.wait_for_timeout(seconds * 1000)
    return [url for _, url, _ in requests.since(t0)]


def _plant_running_job(ws: Path) -> subprocess.Popen:
    """A job as a worker leaves it while it trains: its row `running` with the worker's pid,
    the worker a process whose command line names the job's folder (so the app takes it for
    this workspace's worker, and Cancel signals it)."""
    job_dir = ws / "jobs" / "job-0001"
    job_dir.mkdir(parents=True)
    worker = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)", "-m", "tuning.worker", str(job_dir)],
        start_new_session=True,  # Cancel signals the worker's process group: never this one's
    )
    now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    conn = sqlite3.connect(ws / "tailor.db", timeout=30)
    try:
        with conn:
            conn.execute(
                "INSERT INTO tune_jobs(status, family, base_model, base_model_path, dataset_version, dataset_path,"
                " config_json, job_dir, pid, step, total_steps, created_at, started_at, updated_at, message)"
                " VALUES ('running', 'tailor', 'tiny', 'models/tiny', '1', 'datasets/v1', '{}', 'jobs/job-0001',"
                " ?, 0, 40, ?, ?, ?, 'training')",
                (worker.pid, now, now, now),
            )
    finally:
        conn.close()
    return worker


def _log_losses(ws: Path) -> None:
    """What the worker writes after its first steps: loss points in progress.jsonl, the step
    and loss in the job's row."""
    with open(ws / "jobs" / "job-0001" / "progress.jsonl", "a", encoding="utf-8") as fh:
        for step, loss in ((1, 2.5), (2, 2.25), (3, 2.0)):
            fh.write(json.dumps({"time": "t", "kind": "train", "step": step, "epoch": step / 40, "loss": loss}) + "\n")
    conn = sqlite3.connect(ws / "tailor.db", timeout=30)
    try:
        with conn:
            conn.execute("UPDATE tune_jobs SET step=3, loss=2.0 WHERE id=1")
    finally:
        conn.close()


def test_first_run_states_and_a_quiet_idle_page(
    page, tailor_server, tiny_model_dir, tmp_path, review_screenshots, wait_until
):
    expect = _expect()
    ws = tmp_path / "ws"
    server = tailor_server(ws, tiny_model_dir)
    requests = Requests(page)
    page.goto(server.url)
    expect(page.get_by_role("tab", name="Knowledge", exact=True)).to_be_visible()

    # 1. Every tab says what to do first; no placeholder headers, no empty charts.
    for tab, message in FIRST_RUN.items():
        panel = open_tab(page, tab)
        expect(panel.get_by_text(message).first).to_be_visible()
        for name in ACCORDIONS.get(tab, []):
            panel.get_by_role("button", name=re.compile(rf"^{re.escape(name)}")).first.click()
        page.wait_for_timeout(500)  # the opened accordions' tables render
        headers = [h.strip() for h in panel.get_by_role("columnheader").all_inner_texts()]
        assert headers, f"{tab}: no table on show"
        assert not PLACEHOLDER_HEADERS & set(headers), f"{tab}: placeholder headers in {headers}"
        for chart in CHARTS:
            expect(page.locator(chart)).to_be_hidden()
        if tab == "Evaluate":  # the empty metrics table is hidden behind the message
            expect(panel.get_by_text("Metrics per arm: mean [95% bootstrap interval]")).to_be_hidden()
        page.screenshot(path=str(review_screenshots / f"first-run-{tab.lower()}.png"), full_page=True)

    # 2. An idle page is quiet: no request at all for 10 s once it has settled.
    page.wait_for_timeout(1000)
    sent = _quiet_for(page, requests, 10)
    assert not sent, f"the idle page sent {len(sent)} requests: {sent}"

    # 3. A page that opens while a job runs polls it every TICK_S seconds.
    worker = _plant_running_job(ws)
    try:
        page.reload()
        tune = open_tab(page, "Tune")
        refresh = _fn_index(page, "tune_refresh")
        heading = tune.get_by_role("heading", name=re.compile(r"Job 1: running"))
        expect(heading).to_be_visible()
        expect(
            tune.get_by_text("The loss chart appears here once the first training steps are logged.")
        ).to_be_visible()
        expect(page.locator("#tune-loss-chart")).to_be_hidden()
        t0 = time.monotonic()
        wait_until(
            lambda: requests.calls_since(t0, refresh) >= 2,
            timeout=30,
            interval=0.25,
            sleep=lambda s: page.wait_for_timeout(s * 1000),
            message="the Tune tab's timer did not poll while a job ran",
        )
        # The worker logs its first losses: the next tick draws the chart.
        _log_losses(ws)
        expect(page.locator("#tune-loss-chart")).to_be_visible()
        expect(tune.get_by_text(re.compile(r"^step 3/40"))).to_be_visible()
        page.screenshot(path=str(review_screenshots / "first-run-tune-job-running.png"), full_page=True)

        # 4. The job ends (Cancel stops its worker): the timer stops, the page is quiet again.
        tune.get_by_role("button", name="Cancel", exact=True).click()
        expect(tune.get_by_role("heading", name=re.compile(r"Job 1: cancelled"))).to_be_visible()
        worker.wait(30)  # reaped (it was stopped by the server's SIGTERM)
        page.wait_for_timeout(TICK_S * 1000 + 500)  # a tick that was already on its way lands
        sent = _quiet_for(page, requests, 3 * TICK_S)
        assert not sent, f"the page kept polling after the job ended: {sent}"
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert server.proc.poll() is None
