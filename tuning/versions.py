"""Dataset versions: immutable snapshots of the active examples, split into train /
validation / test JSONL files, each named by a content hash.

    workspace/datasets/v{id}/
        train.jsonl  validation.jsonl  test.jsonl    one line per example:
            {"example_id": int, "messages": render_messages(example), "label": str|None, "tags": [...]}
            and for a preference pair also "rejected": str (messages end with the chosen reply);
            SFT reads the lines without "rejected", DPO the lines with it
        manifest.json   id, content hash, time, counts (examples), pairs (preference pairs), note,
                        and per example its split and hash (what `diff` compares)

A snapshot is taken whenever training starts (the training job calls `snapshot()`) or the
user asks. If nothing changed since the latest version, that version is returned as is, so
repeated training runs on the same data share one version.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from assistant.db import execute_script, utcnow
from assistant.errors import NotFoundError, ValidationError
from assistant.progress import Progress, no_progress
from assistant.workspace import publish_dir

from .example import SPLITS, Example, render_messages
from .example_store import ExampleStore
from .example_table import ExampleFilter


def _m001_versions(conn: sqlite3.Connection) -> None:
    execute_script(
        conn,
        """
        CREATE TABLE dataset_versions (
            id INTEGER PRIMARY KEY,
            content_hash TEXT NOT NULL,
            created_at TEXT NOT NULL,
            counts_json TEXT NOT NULL,
            note TEXT NOT NULL DEFAULT '',
            path TEXT NOT NULL
        );
    """,
    )


VERSION_MIGRATIONS = [_m001_versions]


@dataclass
class DatasetVersion:
    id: int
    content_hash: str
    created_at: str
    counts: dict  # {"train": n, "validation": n, "test": n}
    path: Path  # folder holding train.jsonl, validation.jsonl, test.jsonl, manifest.json
    note: str = ""

    def file(self, split: str) -> Path:
        if split not in SPLITS:
            raise ValidationError(f"split must be one of {', '.join(SPLITS)}")
        return self.path / f"{split}.jsonl"

    def records(self, split: str) -> list[dict]:
        with open(self.file(split), encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    @property
    def pairs(self) -> dict:
        """Preference pairs per split (0 in versions made before pairs existed)."""
        return {**dict.fromkeys(SPLITS, 0), **self.manifest().get("pairs", {})}

    def manifest(self) -> dict:
        return json.loads((self.path / "manifest.json").read_text(encoding="utf-8"))

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "content_hash": self.content_hash,
            "created_at": self.created_at,
            "counts": self.counts,
            "path": str(self.path),
            "note": self.note,
            "pairs": self.pairs,
        }


def version_line(ex: Example) -> dict:
    line = {"example_id": ex.id, "messages": render_messages(ex), "label": ex.label, "tags": list(ex.tags)}
    if ex.rejected is not None:
        line["rejected"] = ex.rejected
    return line


class DatasetVersions:
    def __init__(self, workspace, store: ExampleStore | None = None):
        self.workspace = workspace
        self.store = store or ExampleStore(workspace.db)
        self.root = Path(workspace.root) / "datasets"
        workspace.db.migrate("tuning_versions", VERSION_MIGRATIONS)

    def snapshot(self, note: str = "", progress: Progress = no_progress) -> DatasetVersion:
        """Freeze the active examples into a new version (or return the latest one unchanged
        when its content hash equals the current content's). `progress(done, total)` counts
        the examples read."""
        self.store.assign_splits()
        lines: dict[str, list[str]] = {s: [] for s in SPLITS}
        pairs = dict.fromkeys(SPLITS, 0)
        per_example: dict[str, dict] = {}
        active = ExampleFilter(status="active")
        total = self.store.count(active)
        for n, ex in enumerate(self.store.iter_all(active), start=1):
            if n % 2000 == 0:
                progress(n, total, "reading examples")
            split = ex.split or "train"
            text = json.dumps(version_line(ex), ensure_ascii=False, sort_keys=True)
            lines[split].append(text)
            pairs[split] += ex.rejected is not None
            per_example[str(ex.id)] = {"split": split, "hash": hashlib.sha256(text.encode()).hexdigest()[:16]}
        if not per_example:
            raise ValidationError("the dataset has no active examples: add or import some first")
        progress(len(per_example), len(per_example), "writing the version")
        digest = hashlib.sha256()
        for s in SPLITS:
            digest.update(f"#{s}\n".encode())
            for text in lines[s]:
                digest.update(text.encode("utf-8") + b"\n")
        content = digest.hexdigest()
        latest = self.latest()
        if latest is not None and latest.content_hash == content:
            return latest
        counts = {s: len(lines[s]) - pairs[s] for s in SPLITS}  # what SFT trains on
        now = utcnow()
        # The write lock is held while the folder is published, so two snapshots never get
        # the same id; publish_dir makes the folder complete or absent.
        with self.workspace.db.transaction() as conn:
            vid = conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM dataset_versions").fetchone()[0]
            final = self.root / f"v{vid}"
            with publish_dir(final) as tmp:
                for s in SPLITS:
                    (tmp / f"{s}.jsonl").write_text("".join(t + "\n" for t in lines[s]), encoding="utf-8")
                manifest = {
                    "id": vid,
                    "content_hash": content,
                    "created_at": now,
                    "counts": counts,
                    "pairs": pairs,
                    "note": note,
                    "examples": per_example,
                }
                (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
            conn.execute(
                "INSERT INTO dataset_versions(id, content_hash, created_at, counts_json, note, path)"
                " VALUES (?,?,?,?,?,?)",
                (vid, content, now, json.dumps(counts), note, f"v{vid}"),
            )
        return self.get(vid)

    def _from_row(self, row) -> DatasetVersion:
        return DatasetVersion(
            id=row["id"],
            content_hash=row["content_hash"],
            created_at=row["created_at"],
            counts=json.loads(row["counts_json"]),
            path=self.root / row["path"],
            note=row["note"],
        )

    def get(self, version_id: int) -> DatasetVersion:
        with self.workspace.db.read() as conn:
            row = conn.execute("SELECT * FROM dataset_versions WHERE id=?", (int(version_id),)).fetchone()
        if row is None:
            raise NotFoundError(f"dataset version {version_id} does not exist")
        return self._from_row(row)

    def latest(self) -> DatasetVersion | None:
        with self.workspace.db.read() as conn:
            row = conn.execute("SELECT * FROM dataset_versions ORDER BY id DESC LIMIT 1").fetchone()
        return self._from_row(row) if row else None

    def list(self) -> list[DatasetVersion]:
        with self.workspace.db.read() as conn:
            return [self._from_row(r) for r in conn.execute("SELECT * FROM dataset_versions ORDER BY id")]

    def diff(self, a: int, b: int) -> dict:
        """Examples added, removed and changed (content, label, tags or split) from a to b."""
        ea, eb = self.get(a).manifest()["examples"], self.get(b).manifest()["examples"]
        return {
            "from": int(a),
            "to": int(b),
            "added": sorted(int(i) for i in eb.keys() - ea.keys()),
            "removed": sorted(int(i) for i in ea.keys() - eb.keys()),
            "changed": sorted(int(i) for i in ea.keys() & eb.keys() if ea[i] != eb[i]),
        }

    def examples(self, version_id: int) -> builtins.list[Example]:
        """A version's lines as examples (messages already rendered), e.g. to export them."""
        v = self.get(version_id)
        out = []
        for s in SPLITS:
            for rec in v.records(s):
                out.append(
                    Example(
                        messages=rec["messages"],
                        label=rec.get("label"),
                        tags=rec.get("tags") or [],
                        split=s,
                        id=rec["example_id"],
                        rejected=rec.get("rejected"),
                    )
                )
        return out
