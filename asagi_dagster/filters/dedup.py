"""The global image-hash index: which copy of each image every source keeps.

Input: every screened pair of every shard and dataset ever ingested. An image is its
bytes' sha256; an origin is what brought it (a web page, a dataset record). The result
depends only on the set of pairs, never on the order shards arrived in:

- exact duplicates: the same bytes from several origins are kept from one origin only:
  a curated dataset's before a web page's (its text is a written caption, not an alt
  attribute), then the smallest (source, origin id). All texts that origin gave the image stay (a
  dataset's five captions of one photo are not duplicates of each other).
- near duplicates: images whose perceptual hashes differ in at most ``max_hamming``
  bits are joined into clusters (transitively); each cluster keeps one image, the one
  whose first origin is smallest.

Candidate pairs come from multi-index hashing: split the 64-bit hash into
max_hamming + 1 bands; two hashes within the distance agree on at least one band
(pigeonhole), so only hashes sharing a band are compared, in DuckDB.
"""

from __future__ import annotations

from collections import Counter
from typing import cast

import duckdb
import pyarrow as pa

from asagi_dagster import catalog
from asagi_dagster.filters.images import hamming
from asagi_dagster.storage import Manifest, Storage

# An origin's sort key: "0:" for curated datasets, "1:" for the web, so the minimum is
# the preferred copy. filtered_pairs compares the same key.
ORIGIN_KEY_SQL = "(CASE WHEN source = 'web' THEN '1:' ELSE '0:' END || source || '/' || origin_id)"

INDEX_VERSION = 1
INDEX_SCHEMA = pa.schema(
    [
        ("image_sha256", pa.string()),
        ("image_phash", pa.int64()),
        ("first_origin", pa.string()),  # preferred origin key (ORIGIN_KEY_SQL) that has this image
        ("origins", pa.int64()),  # how many origins have these exact bytes
        ("keeper_sha256", pa.string()),  # the image its near-duplicate cluster keeps
        ("keeper_origin", pa.string()),
        ("hamming_to_keeper", pa.int32()),
        ("cluster_size", pa.int64()),  # distinct images in the cluster
    ]
)


def build_hash_index(con: duckdb.DuckDBPyConnection, screened_urls: list[str], max_hamming: int) -> pa.Table:
    """One row per distinct image across ``screened_urls`` (Parquet files of screened pairs)."""
    if not screened_urls:
        return INDEX_SCHEMA.empty_table()
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE images AS
           SELECT image_sha256, any_value(image_phash) AS image_phash,
                  min({ORIGIN_KEY_SQL}) AS first_origin, count(DISTINCT {ORIGIN_KEY_SQL}) AS origins
           FROM read_parquet(?) GROUP BY image_sha256""",
        [screened_urls],
    )
    edges = _near_pairs(con, max_hamming)
    images = con.execute("SELECT image_sha256, image_phash, first_origin, origins FROM images ORDER BY image_sha256").fetchall()
    keeper = _cluster_keepers(images, edges)
    phash = {sha: value for sha, value, _, _ in images}
    first = {sha: origin for sha, _, origin, _ in images}
    sizes = Counter(keeper.values())
    rows = [
        {
            "image_sha256": sha,
            "image_phash": value,
            "first_origin": origin,
            "origins": origins,
            "keeper_sha256": keeper[sha],
            "keeper_origin": first[keeper[sha]],
            "hamming_to_keeper": hamming(value, phash[keeper[sha]]),
            "cluster_size": sizes[keeper[sha]],
        }
        for sha, value, origin, origins in images
    ]
    return pa.Table.from_pylist(rows, schema=INDEX_SCHEMA)


def _near_pairs(con: duckdb.DuckDBPyConnection, max_hamming: int) -> list[tuple[str, str]]:
    bands = max_hamming + 1
    width = -(-64 // bands)  # ceil: the last band may be narrower
    joins = []
    for band in range(bands):
        shift, mask = band * width, (1 << min(width, 64 - band * width)) - 1
        joins.append(
            f"""SELECT a.image_sha256 AS a, b.image_sha256 AS b FROM images a JOIN images b
                ON (a.image_phash >> {shift}) & {mask} = (b.image_phash >> {shift}) & {mask}
                AND a.image_sha256 < b.image_sha256
                WHERE bit_count(xor(a.image_phash, b.image_phash)) <= {max_hamming}"""
        )
    return con.execute(" UNION ".join(joins)).fetchall()


def _cluster_keepers(images: list[tuple], edges: list[tuple[str, str]]) -> dict[str, str]:
    """Union-find over near-duplicate edges; each image -> its cluster's kept image."""
    parent = {sha: sha for sha, *_ in images}

    def root(sha: str) -> str:
        while parent[sha] != sha:
            parent[sha] = parent[parent[sha]]
            sha = parent[sha]
        return sha

    for a, b in edges:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    rank = {sha: (origin, sha) for sha, _, origin, _ in images}
    best: dict[str, str] = {}
    for sha in parent:
        r = root(sha)
        if r not in best or rank[sha] < rank[best[r]]:
            best[r] = sha
    return {sha: best[root(sha)] for sha in parent}


SCREENED_ASSETS = ("screened_pairs", "screened_dataset_pairs")  # every source family's screened pairs


def screened_manifests(storage: Storage) -> list[Manifest]:
    """Every materialized partition of every screened-pairs asset, sorted: one read of the
    manifest catalog, not one file per partition."""
    found = catalog.latest_manifests(storage, SCREENED_ASSETS)
    return [cast(Manifest, found[key]) for key in sorted(found, key=lambda k: (SCREENED_ASSETS.index(k[0]), k[1]))]  # pairs, not models


def screened_versions(storage: Storage) -> tuple[dict[str, str], dict[str, str]]:
    """(versions, urls) of every screened partition, keyed "<asset>/<partition>" as the
    incremental index names shards: the version is the manifest's commit time in the
    catalog, which changes whenever the partition is screened again. One catalog read."""
    table = catalog.read_latest(storage, ["committed_ns", "data_url"], SCREENED_ASSETS)
    versions, urls = {}, {}
    for asset, partition, committed_ns, url in zip(*(table.column(c).to_pylist() for c in ("asset", "partition", "committed_ns", "data_url"))):
        key = f"{asset}/{partition}"
        versions[key], urls[key] = str(committed_ns), url
    return versions, urls
