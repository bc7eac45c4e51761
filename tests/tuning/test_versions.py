"""Dataset versions: immutable, content-addressed snapshots; list, get, diff, export."""

import json

import pytest

from assistant.errors import NotFoundError, ValidationError
from tuning.dataset_export import export_examples
from tuning.dataset_import import import_file
from tuning.example import chat_example, render_messages
from tuning.versions import DatasetVersions


def test_snapshot_files_hash_and_reuse(cur_curation, workspace):
    store, versions = cur_curation.store, cur_curation.versions
    with pytest.raises(ValidationError, match="no active examples"):
        versions.snapshot()
    assert versions.latest() is None
    ids = store.add_many([chat_example(f"q{i}", f"a{i}", label="x" if i % 2 else None, tags=["t"]) for i in range(30)])
    store.set_status([ids[0]], "excluded")
    v1 = versions.snapshot("first")
    assert v1.id == 1 and v1.note == "first" and v1.path == workspace.root / "datasets" / "v1"
    assert sum(v1.counts.values()) == 29 and set(v1.counts) == {"train", "validation", "test"}
    assert sorted(p.name for p in v1.path.iterdir()) == [
        "manifest.json",
        "test.jsonl",
        "train.jsonl",
        "validation.jsonl",
    ]
    line = v1.records("train")[0]
    ex = store.get(line["example_id"])
    assert line == {"example_id": ex.id, "messages": render_messages(ex), "label": ex.label, "tags": ["t"]}
    assert {r["example_id"] for s in v1.counts for r in v1.records(s)} == set(ids[1:])
    test_ids = {r["example_id"] for r in v1.records("test")}
    assert test_ids == {e.id for e in store.list() if e.split == "test" and e.status == "active"}

    assert versions.snapshot("again") == v1  # nothing changed: same version
    assert [v.id for v in versions.list()] == [1]
    # a fresh object over the same workspace sees the same history (the contract's constructor)
    assert DatasetVersions(workspace).latest() == v1


def test_new_version_on_change_and_diff(cur_curation):
    store, versions = cur_curation.store, cur_curation.versions
    ids = store.add_many([chat_example(f"q{i}", f"a{i}") for i in range(10)])
    v1 = versions.snapshot()
    before = (v1.path / "train.jsonl").read_bytes()
    store.delete([ids[0]])
    store.update(ids[1], label="relabelled")
    [new] = store.add_many([chat_example("new q", "new a")])
    v2 = versions.snapshot("after edits")
    assert v2.id == 2 and v2.content_hash != v1.content_hash
    assert versions.diff(1, 2) == {"from": 1, "to": 2, "added": [new], "removed": [ids[0]], "changed": [ids[1]]}
    assert (v1.path / "train.jsonl").read_bytes() == before  # v1 is untouched
    assert versions.get(1).counts == v1.counts
    with pytest.raises(NotFoundError):
        versions.get(9)


def test_export_a_version(cur_curation, tmp_path):
    from assistant.workspace import Workspace
    from tuning import open_curation

    store, versions = cur_curation.store, cur_curation.versions
    store.add_many([chat_example(f"q{i}", f"a{i}", passages=[{"source": "d", "text": f"p{i}"}]) for i in range(5)])
    v = versions.snapshot()
    out = export_examples(versions.examples(v.id), tmp_path / "v1.jsonl", "messages")
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(recs) == 5 and all("p" in r["messages"][0]["content"] for r in recs)  # passages rendered
    other = open_curation(Workspace(tmp_path / "ws2")).store
    assert import_file(other, out).imported == 5
