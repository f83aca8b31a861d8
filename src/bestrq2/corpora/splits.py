"""Group-disjoint train/valid/test assignment: every group (voice, speaker, SoundFont, source file) lands in
exactly one split, so a probe is tested on sources it never saw."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)
SPLIT_NAMES = ("train", "valid", "test")


def _rank(group: str, seed: int) -> str:
    return hashlib.sha1(f"{seed}:{group}".encode()).hexdigest()


def assign_splits(
    group_sizes: Mapping[str, int],
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    fixed: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Map each group to 'train' / 'valid' / 'test'.

    Groups are visited in a seeded hash order (stable: adding a group does not reshuffle the others much)
    and each goes to the split furthest below its target share of items. With three or more groups, valid
    and test each get at least one group. `fixed` pins chosen groups to a split.
    """
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"fractions must be non-negative and sum to 1, got {fractions}")
    fixed = dict(fixed or {})
    for g, s in fixed.items():
        if s not in SPLIT_NAMES:
            raise ValueError(f"fixed split {s!r} for group {g!r} not in {SPLIT_NAMES}")
    total = sum(group_sizes.values()) or 1
    filled = defaultdict(int)
    out: dict[str, str] = {}
    for g, s in fixed.items():
        if g in group_sizes:
            out[g] = s
            filled[s] += group_sizes[g]
    order = sorted((g for g in group_sizes if g not in out), key=lambda g: _rank(g, seed))
    # Guarantee one group for each of test and valid first (the rarest splits), when there are enough groups.
    if len(group_sizes) >= 3:
        for s in ("test", "valid"):
            if filled[s] == 0 and order:
                g = order.pop(0)
                out[g] = s
                filled[s] += group_sizes[g]
    for g in order:
        deficit = {s: fractions[i] * total - filled[s] for i, s in enumerate(SPLIT_NAMES)}
        s = max(SPLIT_NAMES, key=lambda k: (deficit[k], -SPLIT_NAMES.index(k)))
        out[g] = s
        filled[s] += group_sizes[g]
    return out


def count_groups(rows: Iterable[Mapping[str, Any]], key: str = "group") -> dict[str, int]:
    sizes: dict[str, int] = defaultdict(int)
    for r in rows:
        sizes[r[key]] += 1
    return dict(sizes)


def overlapping_groups(rows: Iterable[Mapping[str, Any]]) -> dict[str, set[str]]:
    """Groups that appear in more than one split (empty when the splits are group-disjoint)."""
    seen: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        seen[r["group"]].add(r["split"])
    return {g: s for g, s in seen.items() if len(s) > 1}
