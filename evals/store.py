"""Evaluation tables: runs, their items, per-arm results, per-arm aggregates, blind pairs
and votes (with the open votes cast in the Compare tab). Owned by the "evals" migration
namespace.

A run keeps its items (the exact prompts and references it used), the arms (model name,
adapter version, retrieval on/off) and the dataset version, so it can be re-opened and
re-scored later even after the dataset or the adapters changed."""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from dataclasses import dataclass, field

from assistant.db import Database, execute_script, utcnow
from assistant.errors import NotFoundError, ValidationError

from .sets import EvalItem


def _m001_evals(conn: sqlite3.Connection) -> None:
    execute_script(
        conn,
        """
        CREATE TABLE eval_runs (
            id TEXT PRIMARY KEY,
            created_at TEXT NOT NULL,
            finished_at TEXT,
            status TEXT NOT NULL CHECK (status IN ('queued','running','done','failed','cancelled')),
            set_kind TEXT NOT NULL,
            set_name TEXT NOT NULL,
            set_fingerprint TEXT NOT NULL,
            dataset_version TEXT,
            base_model TEXT NOT NULL,
            arms_json TEXT NOT NULL,
            options_json TEXT NOT NULL,
            n_items INTEGER NOT NULL,
            done INTEGER NOT NULL DEFAULT 0,
            total INTEGER NOT NULL,
            error TEXT,
            pid INTEGER  -- the process running it, so a restart can tell a dead run from a live one
        );
        CREATE INDEX eval_runs_created ON eval_runs(created_at);
        CREATE TABLE eval_items (
            run_id TEXT NOT NULL REFERENCES eval_runs(id) ON DELETE CASCADE,
            item_id TEXT NOT NULL,
            position INTEGER NOT NULL,
            item_json TEXT NOT NULL,
            PRIMARY KEY (run_id, item_id)
        );
        CREATE TABLE eval_results (
            run_id TEXT NOT NULL REFERENCES eval_runs(id) ON DELETE CASCADE,
            arm TEXT NOT NULL,
            item_id TEXT NOT NULL,
            reply TEXT NOT NULL,
            abstained INTEGER NOT NULL DEFAULT 0,
            latency_s REAL,
            completion_tokens INTEGER,
            tokens_per_s REAL,
            finish_reason TEXT,
            metrics_json TEXT NOT NULL,
            passages_json TEXT,
            created_at TEXT NOT NULL,
            PRIMARY KEY (run_id, arm, item_id)
        );
        CREATE TABLE eval_arm_metrics (
            run_id TEXT NOT NULL REFERENCES eval_runs(id) ON DELETE CASCADE,
            arm TEXT NOT NULL,
            metric TEXT NOT NULL,
            mean REAL, lo REAL, hi REAL,
            n INTEGER NOT NULL,
            PRIMARY KEY (run_id, arm, metric)
        );
        CREATE TABLE eval_pairs (
            id TEXT PRIMARY KEY,
            run_id TEXT NOT NULL REFERENCES eval_runs(id) ON DELETE CASCADE,
            item_id TEXT NOT NULL,
            arm_a TEXT NOT NULL,
            arm_b TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE TABLE eval_votes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            pair_id TEXT NOT NULL UNIQUE,
            run_id TEXT REFERENCES eval_runs(id) ON DELETE SET NULL,
            item_id TEXT NOT NULL,
            -- who was on each side, as "model" and "model+rag" player names, so ratings
            -- across runs survive a run being deleted
            player_a TEXT NOT NULL,
            player_b TEXT NOT NULL,
            choice TEXT NOT NULL CHECK (choice IN ('a','b','tie','both_bad')),
            created_at TEXT NOT NULL
        );
        CREATE INDEX eval_votes_players ON eval_votes(player_a, player_b);
    """,
    )


def _m002_open_votes(conn: sqlite3.Connection) -> None:
    # Open votes from the Compare tab: the voter saw which model wrote which reply. They sit
    # beside the blind ones (blind=0) so win rates and ratings pool both, and the Evaluate tab
    # says how many of a player's votes were open. Such a vote has no run or pair: pair_id is
    # "chat:<message_a>:<message_b>" (unique, so a second vote on the same two replies replaces
    # the first), run_id is NULL and item_id is OPEN_VOTE_ITEM; message_a/b are the two
    # assistant messages compared (left = side A). Existing votes are blind (the default).
    execute_script(
        conn,
        """
        ALTER TABLE eval_votes ADD COLUMN blind INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE eval_votes ADD COLUMN message_a INTEGER;
        ALTER TABLE eval_votes ADD COLUMN message_b INTEGER;
    """,
    )


MIGRATIONS = [_m001_evals, _m002_open_votes]

OPEN_VOTE_ITEM = "chat-compare"  # the item_id of an open vote: where it was cast


@dataclass
class Arm:
    """One side of a comparison: a model (the base or an adapter) with retrieval on or off."""

    model: str  # "base" or an adapter name
    rag: bool = False
    adapter_version: str | None = None  # the adapter folder's version when the run started
    adapter_meta: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.model}+rag" if self.rag else self.model

    def as_dict(self) -> dict:
        return {
            "key": self.key,
            "model": self.model,
            "rag": self.rag,
            "adapter_version": self.adapter_version,
            "adapter_meta": self.adapter_meta,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Arm:
        return cls(d["model"], bool(d["rag"]), d.get("adapter_version"), d.get("adapter_meta") or {})


@dataclass
class RunInfo:
    id: str
    created_at: str
    finished_at: str | None
    status: str
    set_kind: str
    set_name: str
    set_fingerprint: str
    dataset_version: str | None
    base_model: str
    arms: list[Arm]
    options: dict
    n_items: int
    done: int
    total: int
    error: str | None = None

    @property
    def arm_keys(self) -> list[str]:
        return [a.key for a in self.arms]

    @property
    def progress(self) -> float:
        return self.done / self.total if self.total else 0.0


@dataclass
class ItemResult:
    arm: str
    item_id: str
    reply: str
    abstained: bool
    latency_s: float | None
    completion_tokens: int | None
    tokens_per_s: float | None
    finish_reason: str | None
    metrics: dict  # metric name -> value (None where it does not apply)
    passages: list[dict] | None = None


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    if pid == os.getpid():
        return True  # this process: the service starting now has no run of its own yet
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def new_run_id() -> str:
    return f"{int(time.time() * 1000):012x}{secrets.token_hex(3)}"


def _run(row) -> RunInfo:
    return RunInfo(
        row["id"],
        row["created_at"],
        row["finished_at"],
        row["status"],
        row["set_kind"],
        row["set_name"],
        row["set_fingerprint"],
        row["dataset_version"],
        row["base_model"],
        [Arm.from_dict(a) for a in json.loads(row["arms_json"])],
        json.loads(row["options_json"]),
        row["n_items"],
        row["done"],
        row["total"],
        row["error"],
    )


def _result(row) -> ItemResult:
    return ItemResult(
        row["arm"],
        row["item_id"],
        row["reply"],
        bool(row["abstained"]),
        row["latency_s"],
        row["completion_tokens"],
        row["tokens_per_s"],
        row["finish_reason"],
        json.loads(row["metrics_json"]),
        json.loads(row["passages_json"]) if row["passages_json"] else None,
    )


class EvalStore:
    def __init__(self, db: Database):
        self.db = db
        db.migrate("evals", MIGRATIONS)

    # ---- runs ---------------------------------------------------------------------------
    def create_run(
        self,
        *,
        set_kind: str,
        set_name: str,
        set_fingerprint: str,
        dataset_version: str | None,
        base_model: str,
        arms: list[Arm],
        options: dict,
        items: list[EvalItem],
    ) -> RunInfo:
        run_id = new_run_id()
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO eval_runs(id, created_at, status, set_kind, set_name, set_fingerprint, dataset_version,"
                " base_model, arms_json, options_json, n_items, total, pid) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    run_id,
                    utcnow(),
                    "queued",
                    set_kind,
                    set_name,
                    set_fingerprint,
                    dataset_version,
                    base_model,
                    json.dumps([a.as_dict() for a in arms]),
                    json.dumps(options),
                    len(items),
                    len(items) * len(arms),
                    os.getpid(),
                ),
            )
            conn.executemany(
                "INSERT INTO eval_items(run_id, item_id, position, item_json) VALUES (?,?,?,?)",
                [(run_id, item.id, i, json.dumps(item.as_dict(), ensure_ascii=False)) for i, item in enumerate(items)],
            )
        return self.get_run(run_id)

    def get_run(self, run_id: str) -> RunInfo:
        with self.db.read() as conn:
            row = conn.execute("SELECT * FROM eval_runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"evaluation run {run_id!r} does not exist")
        return _run(row)

    def list_runs(self, limit: int = 100) -> list[RunInfo]:
        with self.db.read() as conn:
            rows = conn.execute("SELECT * FROM eval_runs ORDER BY created_at DESC, id DESC LIMIT ?", (limit,))
            return [_run(r) for r in rows]

    def set_status(self, run_id: str, status: str, error: str | None = None) -> None:
        finished = utcnow() if status in ("done", "failed", "cancelled") else None
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE eval_runs SET status=?, error=?, finished_at=? WHERE id=?", (status, error, finished, run_id)
            )

    def fail_interrupted(self) -> int:
        """Mark runs left 'running' or 'queued' by a process that has died as failed (their
        results so far are kept). Runs of live processes (the app and a `tailor eval` may
        share a workspace) are left alone. Called when the service starts."""
        with self.db.read() as conn:
            rows = conn.execute("SELECT id, pid FROM eval_runs WHERE status IN ('running','queued')").fetchall()
        dead = [r["id"] for r in rows if not _alive(r["pid"])]
        with self.db.transaction() as conn:
            conn.executemany(
                "UPDATE eval_runs SET status='failed', error='interrupted: the process running it "
                "stopped', finished_at=? WHERE id=? AND status IN ('running','queued')",
                [(utcnow(), rid) for rid in dead],
            )
        return len(dead)

    def delete_run(self, run_id: str) -> None:
        self.get_run(run_id)
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM eval_runs WHERE id=?", (run_id,))

    def items(self, run_id: str) -> list[EvalItem]:
        with self.db.read() as conn:
            rows = conn.execute("SELECT item_json FROM eval_items WHERE run_id=? ORDER BY position", (run_id,))
            return [EvalItem.from_dict(json.loads(r["item_json"])) for r in rows]

    # ---- results ------------------------------------------------------------------------
    def add_result(self, run_id: str, result: ItemResult) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO eval_results(run_id, arm, item_id, reply, abstained, latency_s,"
                " completion_tokens, tokens_per_s, finish_reason, metrics_json, passages_json, created_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    run_id,
                    result.arm,
                    result.item_id,
                    result.reply,
                    int(result.abstained),
                    result.latency_s,
                    result.completion_tokens,
                    result.tokens_per_s,
                    result.finish_reason,
                    json.dumps(result.metrics),
                    json.dumps(result.passages, ensure_ascii=False) if result.passages is not None else None,
                    utcnow(),
                ),
            )
            conn.execute(
                "UPDATE eval_runs SET done=(SELECT COUNT(*) FROM eval_results WHERE run_id=?) WHERE id=?",
                (run_id, run_id),
            )

    def results(self, run_id: str, arm: str | None = None) -> list[ItemResult]:
        sql, args = "SELECT * FROM eval_results WHERE run_id=?", [run_id]
        if arm is not None:
            sql += " AND arm=?"
            args.append(arm)
        with self.db.read() as conn:
            return [_result(r) for r in conn.execute(sql, args)]

    def result(self, run_id: str, arm: str, item_id: str) -> ItemResult:
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT * FROM eval_results WHERE run_id=? AND arm=? AND item_id=?", (run_id, arm, item_id)
            ).fetchone()
        if row is None:
            raise NotFoundError(f"run {run_id} has no reply from {arm!r} to item {item_id!r}")
        return _result(row)

    def save_arm_metrics(self, run_id: str, rows: list[tuple[str, str, float, float, float, int]]) -> None:
        """rows: (arm, metric, mean, lo, hi, n)."""
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM eval_arm_metrics WHERE run_id=?", (run_id,))
            conn.executemany(
                "INSERT INTO eval_arm_metrics(run_id, arm, metric, mean, lo, hi, n) VALUES (?,?,?,?,?,?,?)",
                [(run_id, *r) for r in rows],
            )

    def metric_history(self, metric: str | None = None) -> list[dict]:
        """Per-arm aggregates of every finished run, oldest first (for charts over time)."""
        sql = (
            "SELECT r.id AS run_id, r.created_at, r.set_kind, r.set_name, r.set_fingerprint, r.arms_json,"
            " m.arm, m.metric, m.mean, m.lo, m.hi, m.n FROM eval_arm_metrics m JOIN eval_runs r ON r.id=m.run_id"
            " WHERE r.status='done'"
        )
        args: list = []
        if metric:
            sql += " AND m.metric=?"
            args.append(metric)
        sql += " ORDER BY r.created_at, m.arm"
        with self.db.read() as conn:
            out = []
            for row in conn.execute(sql, args):
                arms = {a["key"]: a for a in json.loads(row["arms_json"])}
                arm = arms.get(row["arm"], {})
                out.append(
                    {
                        "run_id": row["run_id"],
                        "created_at": row["created_at"],
                        "set_kind": row["set_kind"],
                        "set_name": row["set_name"],
                        "set_fingerprint": row["set_fingerprint"],
                        "arm": row["arm"],
                        "model": arm.get("model"),
                        "rag": arm.get("rag"),
                        "adapter_version": arm.get("adapter_version"),
                        "metric": row["metric"],
                        "mean": row["mean"],
                        "lo": row["lo"],
                        "hi": row["hi"],
                        "n": row["n"],
                    }
                )
            return out

    # ---- blind pairs and votes ----------------------------------------------------------
    def create_pair(self, run_id: str, item_id: str, arm_a: str, arm_b: str) -> str:
        pair_id = secrets.token_urlsafe(12)  # unguessable: it is all the client sees of the pair
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO eval_pairs(id, run_id, item_id, arm_a, arm_b, created_at) VALUES (?,?,?,?,?,?)",
                (pair_id, run_id, item_id, arm_a, arm_b, utcnow()),
            )
        return pair_id

    def get_pair(self, pair_id: str) -> sqlite3.Row:
        with self.db.read() as conn:
            row = conn.execute("SELECT * FROM eval_pairs WHERE id=?", (pair_id,)).fetchone()
        if row is None:
            raise NotFoundError("that comparison does not exist (it may belong to a deleted run); load a new pair")
        return row

    def add_vote(self, pair_id: str, choice: str, player_a: str, player_b: str) -> None:
        pair = self.get_pair(pair_id)
        with self.db.transaction() as conn:
            try:
                conn.execute(
                    "INSERT INTO eval_votes(pair_id, run_id, item_id, player_a, player_b, choice, created_at)"
                    " VALUES (?,?,?,?,?,?,?)",
                    (pair_id, pair["run_id"], pair["item_id"], player_a, player_b, choice, utcnow()),
                )
            except sqlite3.IntegrityError as exc:
                raise ValidationError("this pair was already voted on; load a new pair") from exc

    def add_open_vote(self, message_a: int, message_b: int, choice: str, player_a: str, player_b: str) -> str | None:
        """Record an open (not blind) vote on two chat replies, side A = message_a. A vote on
        the same two replies replaces the earlier one; returns the earlier vote's choice (None
        when this is the first)."""
        pair_id = f"chat:{message_a}:{message_b}"
        with self.db.transaction() as conn:
            row = conn.execute("SELECT choice FROM eval_votes WHERE pair_id=?", (pair_id,)).fetchone()
            conn.execute(
                "INSERT INTO eval_votes(pair_id, run_id, item_id, player_a, player_b, choice, created_at, blind,"
                " message_a, message_b) VALUES (?,NULL,?,?,?,?,?,0,?,?)"
                " ON CONFLICT(pair_id) DO UPDATE SET choice=excluded.choice, player_a=excluded.player_a,"
                " player_b=excluded.player_b, created_at=excluded.created_at",
                (pair_id, OPEN_VOTE_ITEM, player_a, player_b, choice, utcnow(), message_a, message_b),
            )
        return row["choice"] if row is not None else None

    def votes(self, run_id: str | None = None) -> list[dict]:
        sql, args = "SELECT * FROM eval_votes", []
        if run_id is not None:
            sql += " WHERE run_id=?"
            args.append(run_id)
        sql += " ORDER BY id"
        with self.db.read() as conn:
            return [dict(r) for r in conn.execute(sql, args)]

    def voted_pairs(self, run_id: str) -> set[tuple[str, str, str]]:
        """(item, arm, arm) combinations already voted on in a run (arms sorted)."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT p.item_id, p.arm_a, p.arm_b FROM eval_votes v JOIN eval_pairs p ON p.id=v.pair_id"
                " WHERE p.run_id=?",
                (run_id,),
            )
            return {(r["item_id"], *sorted((r["arm_a"], r["arm_b"]))) for r in rows}
