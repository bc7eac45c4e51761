"""Every long tuning job reports through the one `assistant.progress.Progress` protocol,
`progress(done, total=None, message="")`: monotonic, and ending with done == total."""

from __future__ import annotations

import json

from tuning.cleaning import build_report
from tuning.dataset_export import export_examples
from tuning.dataset_import import import_file
from tuning.example import chat_example


class Recorder:
    def __init__(self):
        self.calls: list[tuple[float, float | None, str]] = []

    def __call__(self, done: float, total: float | None = None, message: str = "") -> None:
        self.calls.append((done, total, message))

    def check(self) -> None:
        assert self.calls, "no progress was reported"
        done = [d for d, _, _ in self.calls]
        assert done == sorted(done)
        last_done, last_total, _ = self.calls[-1]
        assert last_total is not None and last_done == last_total


def test_import_export_cleaning_and_snapshot_report_progress(cur_curation, tmp_path):
    store = cur_curation.store
    f = tmp_path / "pairs.jsonl"
    f.write_text("".join(json.dumps({"prompt": f"Q{i}?", "completion": f"A{i}."}) + "\n" for i in range(30)))
    imported = Recorder()
    import_file(store, f, batch_size=10, progress=imported)
    imported.check()
    assert imported.calls[-1][0] == f.stat().st_size

    store.add_many([chat_example("Q0?", "A0 again.")])  # a conflict for the report
    cleaned = Recorder()
    report = build_report(store, checks=["duplicate", "conflict", "pii"], progress=cleaned)
    cleaned.check()
    assert report.counts["conflict"] == 1
    assert all(total == 1.0 and message for _, total, message in cleaned.calls)  # fractions, with what runs

    exported = Recorder()
    export_examples(store.list(), tmp_path / "out.jsonl", progress=exported)
    exported.check()
    assert exported.calls[-1][:2] == (31, 31)

    snap = Recorder()
    version = cur_curation.versions.snapshot("progress", progress=snap)
    snap.check()
    assert snap.calls[-1][0] == sum(version.counts.values()) == 31
