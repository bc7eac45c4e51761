"""Train / validation / test splits that stay put as the dataset grows.

Two properties pull against each other:
- *stability*: once an example is in the test split it must stay there, so evaluations of
  successive adapters are comparable;
- *stratification*: every label should be spread over the splits in the configured ratios,
  even a label with only ten examples.

Recomputing a split from ranks within each label (the usual stratified split) is exact but
unstable: one new example shifts every rank after it. Hashing each id into a bucket is
stable but only stratified on average (a 10-example label may get no test example at all).

So: an assignment, once made, is stored and never revisited (stability by storage, not by
recomputation). Unassigned examples are dealt out per label group, in the order of a hash
of their id (so the outcome does not depend on insertion order within a batch, nor on ids
being sequential), each to the split with the largest deficit against its target share of
that label's examples (counting the ones already assigned). Every label therefore stays
within one example of its target counts per split, and adding examples only ever adds to
the splits. `reassign=True` starts over (and says so: it changes the test split).
Preference pairs are their own groups (per label too), dealt out the same way.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Protocol, cast

from assistant.db import Database, utcnow
from assistant.errors import ValidationError

from .curation_settings import CurationSettings
from .example import SPLITS

DEFAULT_RATIOS = (0.8, 0.1, 0.1)
DEFAULT_SEED = "tailor"


class ExampleDb(Protocol):
    """What the split policy needs of an example store (tuning.example_store.ExampleStore,
    which calls it for every new example): the database holding the examples table."""

    db: Database


@dataclass
class SplitConfig:
    ratios: tuple[float, float, float] = DEFAULT_RATIOS  # train, validation, test
    seed: str = DEFAULT_SEED

    def validated(self) -> SplitConfig:
        r = tuple(float(x) for x in self.ratios)
        if len(r) != 3 or any(x < 0 for x in r) or sum(r) <= 0:
            raise ValidationError("split ratios must be three non-negative numbers, e.g. 80,10,10")
        total = sum(r)
        return SplitConfig(cast("tuple[float, float, float]", tuple(x / total for x in r)), str(self.seed))


def parse_ratios(text: str) -> tuple[float, float, float]:
    try:
        parts = [float(x) for x in str(text).replace("/", ",").split(",") if x.strip()]
    except ValueError:
        raise ValidationError(f"split ratios must be numbers like 80,10,10, got {text!r}") from None
    if len(parts) != 3:
        raise ValidationError(f"give three split ratios (train,validation,test), got {text!r}")
    return SplitConfig(cast("tuple[float, float, float]", tuple(parts))).validated().ratios


def id_hash(example_id: int, seed: str = DEFAULT_SEED) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{example_id}".encode()).digest()[:8], "big")


def get_config(store: ExampleDb) -> SplitConfig:
    saved = CurationSettings(store.db).get("split_config")
    if not saved:
        return SplitConfig()
    return SplitConfig(tuple(saved["ratios"]), saved.get("seed", DEFAULT_SEED)).validated()


def set_config(store: ExampleDb, config: SplitConfig) -> SplitConfig:
    config = config.validated()
    CurationSettings(store.db).set("split_config", {"ratios": list(config.ratios), "seed": config.seed})
    return config


def _pick(counts: dict[str, int], ratios: tuple[float, ...]) -> str:
    total = sum(counts.values()) + 1
    # Largest deficit (target count minus current count) after adding this example; ties go
    # to the split listed first.
    return max(SPLITS, key=lambda s: (ratios[SPLITS.index(s)] * total - counts[s], -SPLITS.index(s)))


def assign_splits(store: ExampleDb, config: SplitConfig | None = None, reassign: bool = False) -> dict:
    """Give every example without a split one (see the module notes). Returns counts of
    newly assigned examples per split."""
    config = (config or get_config(store)).validated()
    with store.db.transaction() as conn:
        if reassign:
            conn.execute("UPDATE examples SET split=NULL")
        # Strata: the label, and whether the row is a preference pair (pairs are balanced
        # among themselves, so DPO has validation pairs even when examples outnumber them).
        counts: dict[tuple, dict[str, int]] = defaultdict(lambda: {s: 0 for s in SPLITS})
        pair = "(rejected_text IS NOT NULL)"
        for row in conn.execute(
            f"SELECT label, {pair} AS pair, split, COUNT(*) AS n FROM examples WHERE split IS NOT NULL"
            " GROUP BY label, pair, split"
        ):
            counts[(row["label"], row["pair"])][row["split"]] = row["n"]
        todo = conn.execute(f"SELECT id, label, {pair} AS pair FROM examples WHERE split IS NULL").fetchall()
        if not todo:
            return {s: 0 for s in SPLITS}
        groups: dict[tuple, list[int]] = defaultdict(list)
        for row in todo:
            groups[(row["label"], row["pair"])].append(row["id"])
        added = {s: 0 for s in SPLITS}
        updates = []
        for label, ids in groups.items():
            c = counts[label]
            for ex_id in sorted(ids, key=lambda i: id_hash(i, config.seed)):
                split = _pick(c, config.ratios)
                c[split] += 1
                added[split] += 1
                updates.append((split, ex_id))
        conn.executemany("UPDATE examples SET split=? WHERE id=?", updates)
    return added


def reassign_all(store: ExampleDb, config: SplitConfig | None = None) -> dict:
    if config is not None:
        set_config(store, config)
    CurationSettings(store.db).set("splits_reassigned_at", utcnow())
    return assign_splits(store, config, reassign=True)
