"""Which pairs to check: every image's most similar images outside its own group, to a fixpoint.

A fixed number of candidates per image fails on sets padded with copies: a radiograph with fifty
byte copies and turned copies fills any short list with byte copies, and its turned copies are
never looked at. Here an image's candidates are the ``k`` most similar images *outside the group
it already belongs to*; after each round of checks the groups grow, and every image whose group
grew is asked again. Rounds stop when a round joins nothing (``MAX_ROUNDS`` is a safety net).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from fracbench.copies import descriptors as D

K_CANDIDATES = 24  # candidates per image per round, outside its group (crop-and-shift copies of a source rank
#                   up to ~20th among 1,550 radiographs of one set by the polar descriptors: BENCHMARKS.md)
MAX_ROUNDS = 12  # safety net; rounds normally stop when one joins nothing


Families = tuple[np.ndarray, ...]  # descriptor families (fracbench.copies.descriptors.describe), each (N, V, D)


def _families(inv: np.ndarray | Families) -> Families:
    return tuple(inv) if isinstance(inv, (tuple, list)) else (inv,)


def shortlist_outside(inv: np.ndarray | Families, base: np.ndarray | Families, label: np.ndarray,
                      queries: np.ndarray, k: int = K_CANDIDATES, block: int = 256) -> list[tuple[float, int, int]]:
    """(similarity, query, candidate) for each query row: its ``k`` most similar rows with another label."""
    out: list[tuple[float, int, int]] = []
    fams = _families(inv)
    for s in range(0, len(queries), block):
        q = queries[s:s + block]
        excl = label[q][:, None] == label[None, :]
        idx, sim = D.shortlist(tuple(f[q] for f in fams), base, k, exclude=excl)
        for r, qi in enumerate(q):
            for c in range(idx.shape[1]):
                if np.isfinite(sim[r, c]):
                    out.append((float(sim[r, c]), int(qi), int(idx[r, c])))
    return out


def rounds(inv: np.ndarray | Families, find: Callable[[int], int], check: Callable[[int, int], bool],
           rows: Sequence[int] | None = None, k: int = K_CANDIDATES,
           on_round: Callable[[int, int, int], None] | None = None) -> int:
    """Check candidate pairs to a fixpoint; returns the number of pairs checked.

    ``inv`` (N, V, D): each image's invariant vectors (variant 0: the base), or a tuple of such families. ``find(i)`` is the
    current group of image ``i`` (a union-find the caller owns); ``check(i, j)`` checks a pair and,
    when it is a copy, joins the two groups. ``rows`` limits the images taking part.
    """
    fams = _families(inv)
    rows = np.arange(len(fams[0])) if rows is None else np.asarray(list(rows), np.int64)
    if len(rows) < 2:
        return 0
    sub_inv = tuple(f[rows] for f in fams)
    base = tuple(np.ascontiguousarray(f[:, 0]) for f in sub_inv)
    seen: set[tuple[int, int]] = set()
    queries = np.arange(len(rows))
    checked = 0
    for r in range(MAX_ROUNDS):
        label = np.array([find(int(i)) for i in rows])
        pairs = shortlist_outside(sub_inv, base, label, queries, k)
        pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
        joined_rows: set[int] = set()
        for _, a, b in pairs:
            i, j = int(rows[a]), int(rows[b])
            key = (min(i, j), max(i, j))
            if key in seen or find(i) == find(j):
                continue
            seen.add(key)
            checked += 1
            if check(i, j):
                joined_rows.update((a, b))
        if on_round is not None:
            on_round(r, len(pairs), len(joined_rows))
        if not joined_rows:
            break
        # only images whose group grew can have new candidates outside it
        new_label = np.array([find(int(i)) for i in rows])
        grown = {new_label[a] for a in joined_rows}
        queries = np.flatnonzero(np.isin(new_label, list(grown)))
    return checked
