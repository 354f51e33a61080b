"""Language groups clustered from a distance matrix (the meta-config's ``distances`` + ``num_groups``)."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def read_distances(source: str | Mapping[str, Mapping[str, float]], languages: Sequence[str]) -> np.ndarray:
    """(L, L) distances between ``languages`` (in their order) from a nested mapping (one of ``d[a][b]``,
    ``d[b][a]`` is enough) or a csv/tsv file: a header row of languages, then one row per language
    (optionally led by its name). Languages beyond ``languages`` and the diagonal are ignored."""
    if isinstance(source, str):
        rows = _read_matrix_file(source)
        where = f"distances {source!r}"
    elif isinstance(source, Mapping) and all(isinstance(row, Mapping) for row in source.values()):
        rows, where = {a: dict(row) for a, row in source.items()}, "distances"
    else:
        raise ValueError(f"distances: expected a mapping or a csv/tsv path, got {source!r}")
    n = len(languages)
    out = np.zeros((n, n))
    for i, a in enumerate(languages):
        for j, b in enumerate(languages[:i]):
            ab, ba = rows.get(a, {}).get(b), rows.get(b, {}).get(a)
            if ab is None and ba is None:
                raise ValueError(f"{where}: no distance between {a!r} and {b!r}")
            try:
                d = [float(x) for x in (ab, ba) if x is not None]
            except (TypeError, ValueError) as e:
                raise ValueError(f"{where}: distance {a!r}-{b!r} is not a number ({e})") from e
            if not all(math.isfinite(x) and x >= 0 for x in d) or (len(d) == 2 and not math.isclose(*d)):
                raise ValueError(f"{where}: distance {a!r}-{b!r} must be one finite number >= 0, got {d}")
            out[i, j] = out[j, i] = d[0]
    return out


def _read_matrix_file(path: str) -> dict[str, dict[str, str]]:
    if not Path(path).is_file():
        raise FileNotFoundError(f"distances file {path!r} does not exist")
    with open(path, encoding="utf-8", newline="") as f:
        rows = [r for r in csv.reader(f, delimiter="\t" if path.endswith((".tsv", ".tab")) else ",") if r]
    header = [c.strip() for c in rows[0]] if rows else []
    if header and header[0] == "":
        header = header[1:]
    if not header or len(rows) - 1 != len(header):
        raise ValueError(f"distances {path!r}: expected a header row of languages and one row per language "
                         f"({len(header)} languages, {max(len(rows) - 1, 0)} rows)")
    out = {}
    for lineno, (lang, row) in enumerate(zip(header, rows[1:]), start=2):
        if len(row) == len(header) + 1:
            if row[0].strip() != lang:
                raise ValueError(f"{path}:{lineno}: row of {row[0].strip()!r}, expected {lang!r} (the header's order)")
            row = row[1:]
        if len(row) != len(header):
            raise ValueError(f"{path}:{lineno}: {len(row)} values, the header has {len(header)} languages")
        try:
            out[lang] = {b: float(x) for b, x in zip(header, row)}
        except ValueError as e:
            raise ValueError(f"{path}:{lineno}: not a number ({e})") from e
    return out


def cluster_languages(languages: Sequence[str], distances: np.ndarray, num_groups: int) -> dict[str, list[str]]:
    """Average-linkage agglomerative clustering of ``distances`` (L, L) into ``num_groups`` groups, named
    ``g0, g1, ...`` in the order of their first language in ``languages``."""
    from scipy.cluster.hierarchy import cut_tree, linkage
    from scipy.spatial.distance import squareform

    if not 1 <= num_groups <= len(languages):
        raise ValueError(f"num_groups must lie in 1..{len(languages)} (the number of languages), got {num_groups}")
    if num_groups == len(languages) or len(languages) == 1:
        labels = list(range(len(languages)))
    else:
        tree = linkage(squareform(distances, checks=False), method="average")
        labels = cut_tree(tree, n_clusters=num_groups).ravel().tolist()
    names = {}
    for label in labels:
        names.setdefault(label, f"g{len(names)}")
    groups: dict[str, list[str]] = {}
    for lang, label in zip(languages, labels):
        groups.setdefault(names[label], []).append(lang)
    return groups
