"""The global image-hash index, kept up to date shard by shard instead of rebuilt.

Same result as ``dedup.build_hash_index`` over the same set of screened pairs, whatever
order the shards arrive in (tests compare the two): one row per distinct image with its
preferred origin, near duplicates (perceptual hashes within ``max_hamming`` bits) joined
transitively, each cluster keeping the image whose first origin is smallest.

Why adding is cheap: adds only ever merge clusters and lower an image's first origin,
so a cluster's keeper after an add is the best of the old keepers it merged and the
images whose first origin changed. Adding a shard therefore touches its own images, the
clusters they join, and the candidates its hashes find, never the whole index again.
A shard screened again is replaced (taken out, then added, in one transaction); taking
out can split clusters, so the clusters that held its images are clustered again from
the stored near-duplicate edges.

State: one DuckDB database (tables ``images``, ``origins``, ``edges``, ``shards``,
``meta``). Images get integer ids so the heavy joins and the clustering work on numbers,
not 64-character strings. Each add is one transaction: a crash leaves the index as it
was before the add.

Candidate search: multi-index hashing with wide bands searched at radius 1. With
``m = max_hamming // 2 + 1`` bands, two hashes within ``max_hamming`` bits differ in at
most ``max_hamming // m <= 1`` bits in some band (pigeonhole), so probing each band's
value and its one-bit neighbours finds every pair; the exact distance is checked after.
For the default distance 4 that is 3 bands of 21-22 bits: at 10M images a probe meets
about 5 candidates, where dedup.py's 5 exact bands of 13 bits meet about 1,200.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from asagi_dagster.filters.dedup import INDEX_SCHEMA, ORIGIN_KEY_SQL
from asagi_dagster.query import one_row
from asagi_dagster.storage import Manifest, Storage

STATE_VERSION = 2
INDEX_FOLDER = ("image_hash_index", "state")  # under the storage root
SHARD_ROWS_FOLDER = ("image_hash_index", "shards")  # one Parquet file of index rows per shard
CHANGES_FOLDER = ("image_hash_index", "changes")  # one JSON per generation: the shards to re-filter
# image_hash_index's data file: the rows files it rewrote in one sync, each row with its shard.
SHARD_ROWS_VERSION = 2
SHARD_ROWS_SCHEMA = pa.schema([pa.field("shard", pa.string()), *INDEX_SCHEMA])
DATABASE_FILE = "index.duckdb"
GENERATION_FILE = "generation.json"  # written after each commit; tells a stale copy from the current one

# What filter_partition decides for a pair from the index alone (the other steps do not
# read it): the "changed shards" of an add are those where one of these differs.
STATUS_SQL = """CASE WHEN o.origin <> {first} THEN 'duplicate_image'
                     WHEN {keeper} <> {id} THEN 'near_duplicate_image' ELSE 'keep' END"""

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS images (
    id BIGINT, image_sha256 VARCHAR, image_phash BIGINT,
    first_origin VARCHAR, origins BIGINT,
    keeper BIGINT  -- id of the image its cluster keeps; itself when it is kept
);
CREATE TABLE IF NOT EXISTS origins (image_id BIGINT, origin VARCHAR, shard VARCHAR);
CREATE TABLE IF NOT EXISTS edges (a BIGINT, b BIGINT, distance INTEGER);  -- near-duplicate pairs, a < b
-- Shards to re-filter, recorded in the transaction that changed their decisions and cleared
-- once a changes file names them: a sync stopped in between loses none.
CREATE TABLE IF NOT EXISTS pending_refilter (shard VARCHAR);
CREATE TABLE IF NOT EXISTS shards (
    shard VARCHAR, generation BIGINT, images BIGINT,
    version VARCHAR  -- the caller's word for which screening of the shard this is (see sync_plan)
);
"""


class IndexConflict(RuntimeError):
    """Another add changed the index, or holds it, while this one ran: adds must be serialized."""


class ShardAlreadyIndexed(ValueError):
    """A shard is added once; a re-screened shard is added again with ``replace=True``."""


@dataclass(frozen=True)
class Band:
    shift: int
    width: int

    def key_sql(self, column: str) -> str:
        if self.width == 64:
            return column
        return f"(({column} >> {self.shift}) & {(1 << self.width) - 1})"

    def flips(self, radius: int) -> list[int]:
        """The XOR masks that reach every key within ``radius`` (0 or 1) bits, as signed 64-bit."""
        masks = [0] + ([1 << bit for bit in range(self.width)] if radius else [])
        return [mask - (1 << 64) if mask >= 1 << 63 else mask for mask in masks]


def band_layout(max_hamming: int) -> tuple[list[Band], int]:
    """Bands and the radius to probe each at, so that no pair within ``max_hamming`` is missed."""
    count = max_hamming // 2 + 1
    radius = max_hamming // count
    assert radius <= 1
    base, wider = divmod(64, count)
    bands, shift = [], 0
    for i in range(count):
        width = base + (1 if i < wider else 0)
        bands.append(Band(shift, width))
        shift += width
    return bands, radius


@dataclass
class AddResult:
    shards: list[str]  # the shards added
    images_added: int  # distinct images new to the index
    origins_added: int  # (image, origin) pairs new to the index
    edges_added: int  # near-duplicate pairs found for the new images
    changed_shards: list[str] = field(default_factory=list)  # other shards whose decisions differ now: re-filter these
    replaced: list[str] = field(default_factory=list)  # shards that were indexed before and were taken out first
    seconds: dict[str, float] = field(default_factory=dict)  # per phase, for logs and benchmarks


@dataclass
class SyncPlan:
    add: list[str]  # screened, not indexed
    replace: list[str]  # indexed from another version of the shard (screened again)
    remove: list[str]  # indexed, no longer screened


class PhaseClock:
    """Seconds per phase of an add, so a slow index shows where its time goes."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = round(now - self._last, 3)
        self._last = now


class HashIndex:
    """An open index database. ``add`` and ``remove`` change it; run them one at a time."""

    def __init__(self, con: duckdb.DuckDBPyConnection, max_hamming: int):
        self.con = con
        self.max_hamming = max_hamming
        self.bands, self.radius = band_layout(max_hamming)
        con.execute(SCHEMA_SQL)
        self._check_meta()

    @classmethod
    def open(cls, path: str, max_hamming: int, memory_limit: str = "2GB", threads: int | None = None) -> HashIndex:
        """The index in the database file ``path`` (created when missing)."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            con = duckdb.connect(path)
        except duckdb.IOException as exc:  # another process holds the file's write lock
            raise IndexConflict(f"the hash index at {path} is held by another process: {exc}") from exc
        con.execute(f"SET memory_limit = '{memory_limit}'")
        con.execute("SET preserve_insertion_order = false")  # lets big joins and inserts stream
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        try:
            return cls(con, max_hamming)
        except BaseException:
            con.close()  # a refused index must not stay locked by this process
            raise

    def close(self) -> None:
        self.con.close()

    # --- reading ------------------------------------------------------------------
    @property
    def generation(self) -> int:
        return int(self._meta("generation") or 0)

    def shards(self) -> list[str]:
        return [row[0] for row in self.con.execute("SELECT shard FROM shards ORDER BY shard").fetchall()]

    def image_count(self) -> int:
        return one_row(self.con.execute("SELECT count(*) FROM images"))[0]

    def to_table(self) -> pa.Table:
        """The whole index in dedup.INDEX_SCHEMA, sorted by image_sha256 (what build_hash_index returns)."""
        return self._index_rows("TRUE")

    def shard_table(self, shard: str) -> pa.Table:
        """The index rows of the images ``shard`` has: all filter_partition needs for that shard."""
        return self._index_rows("i.id IN (SELECT image_id FROM origins WHERE shard = $shard)", {"shard": shard})

    def decisions(self) -> dict[tuple[str, str, str], str]:
        """(shard, image_sha256, origin) -> what filtering does with that image from that origin."""
        status = STATUS_SQL.format(first="i.first_origin", keeper="i.keeper", id="i.id")
        rows = self.con.execute(f"SELECT o.shard, i.image_sha256, o.origin, {status} FROM origins o JOIN images i ON i.id = o.image_id").fetchall()
        return {(shard, sha, origin): decision for shard, sha, origin, decision in rows}

    # --- adding -------------------------------------------------------------------
    def sync_plan(self, current: Mapping[str, str]) -> SyncPlan:
        """What to add, replace and remove so that the index holds ``current`` (shard -> version)."""
        indexed = dict(self.con.execute("SELECT shard, version FROM shards").fetchall())
        return SyncPlan(
            add=sorted(set(current) - set(indexed)),
            replace=sorted(key for key in set(current) & set(indexed) if current[key] != indexed[key]),
            remove=sorted(set(indexed) - set(current)),
        )

    def add(self, shards: Mapping[str, str | list[str]], replace: bool = False, versions: Mapping[str, str] | None = None) -> AddResult:
        """Add the screened pairs of ``shards`` (shard key -> Parquet url or urls), in one transaction.

        A shard already indexed is refused, or with ``replace`` (it was screened again)
        taken out first in the same transaction; the report compares with the index as it
        was before both steps. ``versions`` (shard -> any string, e.g. the manifest's commit
        time) is kept for ``sync_plan``."""
        shard_urls = {key: [urls] if isinstance(urls, str) else list(urls) for key, urls in shards.items()}
        known = sorted(set(self.shards()) & set(shard_urls))
        if known and not replace:
            raise ShardAlreadyIndexed(f"already in the hash index: {known[:5]}; add it with replace=True to index its new pairs")
        self.con.execute("BEGIN TRANSACTION")
        try:
            result = self._add(shard_urls, known, dict(versions or {}))
            self._record_pending(result.changed_shards + list(shard_urls))
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        return result

    def remove(self, shards: list[str]) -> list[str]:
        """Take ``shards`` out of the index; returns the other shards whose decisions changed."""
        self.con.execute("BEGIN TRANSACTION")
        try:
            self._start_snapshot()
            self._remove(shards)
            changed = self._changed_shards(shards)
            self.con.execute("DELETE FROM pending_refilter WHERE list_contains($removed, shard)", {"removed": list(shards)})
            self._record_pending([shard for shard in changed if shard not in set(shards)])
            self._set_meta("generation", str(self.generation + 1))
            self.con.execute("DROP TABLE affected_before")
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        return changed

    def _add(self, shards: dict[str, list[str]], replaced: list[str], versions: dict[str, str]) -> AddResult:
        generation = self.generation + 1
        clock = PhaseClock()
        self._start_snapshot()
        if replaced:
            self._remove(replaced)
            clock.lap("remove")
        self._load_incoming(shards)
        clock.lap("read")
        first_new, images_added, origins_added = self._insert_images_and_origins()
        clock.lap("images")
        edges_added = self._insert_edges(first_new)
        clock.lap("candidates")
        self._snapshot_affected()
        self._recluster()
        clock.lap("clusters")
        changed = self._changed_shards(list(shards))
        clock.lap("changed")
        self.con.execute(  # every shard, an empty one too: it was added
            """INSERT INTO shards SELECT k.shard, $generation, count(DISTINCT n.image_sha256), k.version
               FROM (SELECT unnest($keys) AS shard, unnest($versions) AS version) k
               LEFT JOIN incoming n USING (shard) GROUP BY k.shard, k.version""",
            {"generation": generation, "keys": list(shards), "versions": [versions.get(key) for key in shards]},
        )
        self._set_meta("generation", str(generation))
        for table in ("incoming", "incoming_ids", "new_origins", "touched", "new_edges", "affected_before"):
            self.con.execute(f"DROP TABLE IF EXISTS {table}")
        clock.lap("bookkeeping")
        return AddResult(sorted(shards), images_added, origins_added, edges_added, changed, replaced, clock.seconds)

    def _load_incoming(self, shards: dict[str, list[str]]) -> None:
        """The distinct (image, hash, origin, shard) of the new shards' screened pairs: one
        scan of all their files, each row's shard told by the file it came from."""
        files = [(url, key) for key, urls in shards.items() for url in urls]
        self.con.register("incoming_files", pa.table({"filename": [u for u, _ in files], "shard": [k for _, k in files]}))
        try:
            self.con.execute(
                f"""CREATE OR REPLACE TEMP TABLE incoming AS
                    SELECT DISTINCT p.image_sha256, p.image_phash, {ORIGIN_KEY_SQL} AS origin, f.shard
                    FROM read_parquet($urls, filename = true) p LEFT JOIN incoming_files f USING (filename)""",
                {"urls": [url for url, _ in files]},
            )
        finally:
            self.con.unregister("incoming_files")
        if one_row(self.con.execute("SELECT count(*) FROM incoming WHERE shard IS NULL"))[0]:
            raise ValueError("DuckDB named a file otherwise than its url: rows could not be given a shard")

    def _insert_images_and_origins(self) -> tuple[int, int, int]:
        """Ids for the new images, their rows, and the known images' new origins; returns
        the first new id, the images added and the (image, origin) pairs added."""
        con = self.con
        # Never a removed image's id (the before-snapshot may hold it); an index written
        # before next_id was kept starts after its largest id.
        next_id = self._meta("next_id")
        first_new = int(next_id) if next_id else one_row(con.execute("SELECT coalesce(max(id) + 1, 0) FROM images"))[0]
        # Ids are internal (no result depends on them), so they follow no order.
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE incoming_ids AS
                WITH distinct_images AS (
                         SELECT image_sha256, min(image_phash) AS image_phash, min(origin) AS first_origin, count(DISTINCT origin) AS origins
                         FROM incoming GROUP BY image_sha256),
                     known AS (SELECT image_sha256, id FROM images WHERE image_sha256 IN (SELECT image_sha256 FROM distinct_images))
                SELECT d.*, k.id IS NULL AS is_new,
                       coalesce(k.id, {first_new} + row_number() OVER (PARTITION BY k.id IS NULL) - 1) AS id
                FROM distinct_images d LEFT JOIN known k USING (image_sha256)"""
        )
        # New images go in whole (all their origins are new); known ones are updated below.
        con.execute("INSERT INTO images SELECT id, image_sha256, image_phash, first_origin, origins, id FROM incoming_ids WHERE is_new")
        con.execute(
            """CREATE OR REPLACE TEMP TABLE new_origins AS
               SELECT DISTINCT k.id AS image_id, n.origin
               FROM incoming n JOIN incoming_ids k USING (image_sha256)
               ANTI JOIN (SELECT image_id, origin FROM origins  -- only the known images' rows, not a hash table of all
                          WHERE image_id IN (SELECT id FROM incoming_ids WHERE NOT is_new)) o
                    ON o.image_id = k.id AND o.origin = n.origin
               WHERE NOT k.is_new"""
        )
        # Only images that gain an origin can change their first origin and count.
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE touched AS
                SELECT id, NULL::VARCHAR AS old_first, id AS old_keeper, NULL::VARCHAR AS new_first, NULL::BIGINT AS new_count
                FROM incoming_ids WHERE is_new
                UNION ALL
                SELECT i.id, i.first_origin, i.keeper, least(i.first_origin, min(n.origin)), i.origins + count(*)
                FROM new_origins n JOIN images i ON i.id = n.image_id AND i.id < {first_new}
                GROUP BY i.id, i.first_origin, i.keeper, i.origins"""
        )
        con.execute(
            """UPDATE images SET first_origin = t.new_first, origins = t.new_count
               FROM touched t WHERE images.id = t.id AND t.old_first IS NOT NULL"""
        )
        con.execute("INSERT INTO origins SELECT DISTINCT k.id, n.origin, n.shard FROM incoming n JOIN incoming_ids k USING (image_sha256)")
        added, new_image_origins = one_row(con.execute(f"SELECT count(*), coalesce(sum(origins), 0) FROM images WHERE id >= {first_new}"))
        self._set_meta("next_id", str(first_new + added))
        return first_new, added, new_image_origins + one_row(con.execute("SELECT count(*) FROM new_origins"))[0]

    def _insert_edges(self, first_new: int) -> int:
        """Near-duplicate pairs between the new images and every image (new ones included)."""
        con = self.con
        con.execute("""CREATE OR REPLACE TEMP TABLE queries AS SELECT id, image_phash FROM incoming_ids WHERE is_new AND image_phash IS NOT NULL""")
        probes = []
        for band in self.bands:
            flips = ", ".join(str(mask) for mask in band.flips(self.radius))
            probes.append(
                f"""SELECT least(q.id, i.id) AS a, greatest(q.id, i.id) AS b, bit_count(xor(q.image_phash, i.image_phash)) AS distance
                    FROM (SELECT id, image_phash, xor({band.key_sql("image_phash")}, f.flip) AS probe
                          FROM queries, unnest([{flips}]::BIGINT[]) AS f(flip)) q
                    JOIN images i ON {band.key_sql("i.image_phash")} = q.probe
                    WHERE (q.id < i.id OR i.id < {first_new})  -- a pair of two new images once, not from both ends
                      AND bit_count(xor(q.image_phash, i.image_phash)) <= {self.max_hamming}"""
            )
        con.execute(f"CREATE OR REPLACE TEMP TABLE new_edges AS SELECT DISTINCT * FROM ({' UNION ALL '.join(probes)})")
        con.execute("INSERT INTO edges SELECT * FROM new_edges")
        con.execute("DROP TABLE queries")
        return one_row(con.execute("SELECT count(*) FROM new_edges"))[0]

    def _start_snapshot(self) -> None:
        """Images as they were before this transaction, for those a step may change (first seen wins)."""
        self.con.execute("CREATE OR REPLACE TEMP TABLE affected_before (id BIGINT, first_origin VARCHAR, keeper BIGINT)")

    def _snapshot(self, select_sql: str) -> None:
        self.con.execute(f"INSERT INTO affected_before SELECT * FROM ({select_sql}) s WHERE s.id NOT IN (SELECT id FROM affected_before)")

    def _snapshot_affected(self) -> None:
        """The images whose decision this add can change, as they were before it: the
        touched images and the keepers of every cluster a new edge or a touched image reaches."""
        self._snapshot(
            """WITH labels AS (
                   SELECT old_keeper AS label FROM touched WHERE old_first IS NOT NULL
                   UNION SELECT i.keeper FROM new_edges e JOIN images i ON i.id = e.a
                   UNION SELECT i.keeper FROM new_edges e JOIN images i ON i.id = e.b)
               SELECT id, old_first AS first_origin, old_keeper AS keeper FROM touched WHERE old_first IS NOT NULL
               UNION
               SELECT i.id, i.first_origin, i.keeper FROM images i JOIN labels l ON i.id = l.label
               WHERE i.id NOT IN (SELECT id FROM touched)"""
        )
        # A keeper that is itself touched is in the first half with its old first origin.

    def _recluster(self) -> None:
        """Merge the clusters the new edges join and pick each merged cluster's keeper."""
        con = self.con
        pairs = con.execute(
            """SELECT ia.keeper AS left_label, ib.keeper AS right_label
               FROM new_edges e JOIN images ia ON ia.id = e.a JOIN images ib ON ib.id = e.b"""
        ).fetchnumpy()
        # A new image with no edge stays alone and keeps itself: only known images whose
        # first origin changed join the graph without an edge.
        touched_labels = con.execute("SELECT i.keeper FROM touched t JOIN images i ON i.id = t.id WHERE t.old_first IS NOT NULL").fetchnumpy()["keeper"]
        left, right = pairs["left_label"], pairs["right_label"]
        nodes, inverse = np.unique(np.concatenate([left, right, touched_labels]), return_inverse=True)
        component = nodes[connected_components(len(nodes), inverse[: len(left)], inverse[len(left) : 2 * len(left)])]
        con.register("label_components", pa.table({"label": nodes, "component": component}))
        try:
            # Candidates: every old keeper in the component, and the touched images (their
            # first origin may now beat their keeper's). Nothing else can have become best.
            con.execute(
                """CREATE OR REPLACE TEMP TABLE relabel AS
                   WITH candidates AS (
                       SELECT c.component, c.label AS candidate FROM label_components c
                       UNION SELECT c.component, t.id FROM touched t JOIN images i ON i.id = t.id JOIN label_components c ON c.label = i.keeper),
                   best AS (
                       SELECT c.component, arg_min(i.id, (i.first_origin, i.image_sha256)) AS keeper
                       FROM candidates c JOIN images i ON i.id = c.candidate GROUP BY c.component)
                   SELECT c.label, b.keeper FROM label_components c JOIN best b USING (component) WHERE c.label <> b.keeper"""
            )
        finally:
            con.unregister("label_components")
        con.execute("UPDATE images SET keeper = r.keeper FROM relabel r WHERE images.keeper = r.label")
        con.execute("DROP TABLE relabel")

    def _remove(self, shards: list[str]) -> None:
        """Take the shards' origins out; images left with none go. The clusters that held
        a changed image are clustered again from their stored edges (they may split)."""
        con = self.con
        con.execute(
            """CREATE OR REPLACE TEMP TABLE shrunk AS
               WITH hit AS (SELECT DISTINCT image_id FROM origins WHERE shard IN (SELECT unnest($shards)))
               SELECT h.image_id AS id, min(o.origin) FILTER (WHERE o.shard NOT IN (SELECT unnest($shards))) AS first_origin,
                      count(DISTINCT o.origin) FILTER (WHERE o.shard NOT IN (SELECT unnest($shards))) AS origins
               FROM hit h JOIN origins o ON o.image_id = h.image_id GROUP BY h.image_id""",
            {"shards": shards},
        )
        con.execute(
            """CREATE OR REPLACE TEMP TABLE members AS
               SELECT id, first_origin, keeper FROM images WHERE keeper IN (SELECT i.keeper FROM shrunk s JOIN images i ON i.id = s.id)"""
        )
        self._snapshot("SELECT id, first_origin, keeper FROM members")
        con.execute("DELETE FROM origins WHERE shard IN (SELECT unnest($shards))", {"shards": shards})
        con.execute("DELETE FROM shards WHERE shard IN (SELECT unnest($shards))", {"shards": shards})
        con.execute("CREATE OR REPLACE TEMP TABLE gone AS SELECT id FROM shrunk WHERE origins = 0")
        con.execute("DELETE FROM images WHERE id IN (SELECT id FROM gone)")
        con.execute("DELETE FROM edges WHERE a IN (SELECT id FROM gone) OR b IN (SELECT id FROM gone)")
        con.execute("DELETE FROM members WHERE id IN (SELECT id FROM gone)")
        con.execute("UPDATE images SET first_origin = s.first_origin, origins = s.origins FROM shrunk s WHERE images.id = s.id")
        self._recluster_members()
        for table in ("shrunk", "members", "gone"):
            con.execute(f"DROP TABLE {table}")

    def _recluster_members(self) -> None:
        """Components and keepers of the images in ``members`` from the edges among them."""
        con = self.con
        ids = np.sort(con.execute("SELECT id FROM members").fetchnumpy()["id"])
        edges = con.execute("SELECT a, b FROM edges WHERE a IN (SELECT id FROM members) AND b IN (SELECT id FROM members)").fetchnumpy()
        component = ids[connected_components(len(ids), np.searchsorted(ids, edges["a"]), np.searchsorted(ids, edges["b"]))]
        con.register("member_components", pa.table({"id": ids, "component": component}))
        try:
            con.execute(
                """UPDATE images SET keeper = best.keeper
                   FROM (SELECT c.id, arg_min(i.id, (i.first_origin, i.image_sha256)) OVER (PARTITION BY c.component) AS keeper
                         FROM member_components c JOIN images i ON i.id = c.id) best
                   WHERE images.id = best.id"""
            )
        finally:
            con.unregister("member_components")

    def _changed_shards(self, added: list[str]) -> list[str]:
        """Earlier shards where some (image, origin) gets another decision than before this add."""
        before = STATUS_SQL.format(first="b.first_origin", keeper="b.keeper", id="b.id")
        after = STATUS_SQL.format(first="i.first_origin", keeper="i.keeper", id="i.id")
        rows = self.con.execute(
            f"""SELECT DISTINCT o.shard FROM affected_before b JOIN images i ON i.id = b.id JOIN origins o ON o.image_id = b.id
                WHERE o.shard NOT IN (SELECT unnest($added)) AND {before} <> {after} ORDER BY o.shard""",
            {"added": added},
        ).fetchall()
        return [row[0] for row in rows]

    # --- helpers ------------------------------------------------------------------
    def _index_rows(self, where: str, params: dict | None = None) -> pa.Table:
        table = self.con.execute(
            f"""WITH chosen AS (SELECT * FROM images i WHERE {where}),
                     sizes AS (SELECT keeper, count(*) AS cluster_size FROM images
                               WHERE keeper IN (SELECT keeper FROM chosen) GROUP BY keeper)
                SELECT i.image_sha256, i.image_phash, i.first_origin, i.origins,
                       k.image_sha256 AS keeper_sha256, k.first_origin AS keeper_origin,
                       bit_count(xor(i.image_phash, k.image_phash))::INTEGER AS hamming_to_keeper, s.cluster_size
                FROM chosen i JOIN images k ON k.id = i.keeper JOIN sizes s ON s.keeper = i.keeper
                ORDER BY i.image_sha256""",
            params or {},
        ).to_arrow_table()
        return table.cast(INDEX_SCHEMA)

    def _meta(self, key: str) -> str | None:
        row = self.con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else None

    def _record_pending(self, shards: list[str]) -> None:
        if shards:
            self.con.execute("INSERT INTO pending_refilter SELECT unnest($shards)", {"shards": sorted(set(shards))})

    def pending_refilter(self) -> list[str]:
        """Shards whose decisions changed and that no changes file has named yet."""
        return [row[0] for row in self.con.execute("SELECT DISTINCT shard FROM pending_refilter ORDER BY shard").fetchall()]

    def clear_pending(self, shards: list[str]) -> None:
        """``shards`` are named in a changes file: their re-filter is asked for."""
        self.con.execute("DELETE FROM pending_refilter WHERE list_contains($shards, shard)", {"shards": list(shards)})

    def bump_generation(self) -> int:
        self._set_meta("generation", str(self.generation + 1))
        return self.generation

    def _set_meta(self, key: str, value: str) -> None:
        self.con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, value])

    def _check_meta(self) -> None:
        """An index built for another distance or layout would give other clusters: refuse it."""
        expected = {"state_version": str(STATE_VERSION), "max_hamming": str(self.max_hamming)}
        for key, value in expected.items():
            found = self._meta(key)
            if found is None:
                self._set_meta(key, value)
            elif found != value:
                raise ValueError(f"the hash index was built with {key}={found}, not {value}: rebuild it")


def connected_components(count: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Component of each node 0..count-1 (its smallest node) given edges left[i]-right[i].

    Min-label propagation with pointer jumping, on numpy arrays: a few passes over the
    edges, memory 8 bytes per node and edge, no Python object per node.
    """
    labels = np.arange(count, dtype=np.int64)
    while True:
        smaller = np.minimum(labels[left], labels[right])
        before = labels.copy()
        np.minimum.at(labels, left, smaller)
        np.minimum.at(labels, right, smaller)
        while True:  # jump to the label's label until every chain is one step long
            jumped = labels[labels]
            if np.array_equal(jumped, labels):
                break
            labels = jumped
        if np.array_equal(labels, before):
            return labels


def write_shard_rows(storage: Storage, index: HashIndex, shards: list[str]) -> dict[str, str]:
    """Each shard's index rows (shard_table) as its own Parquet file on the root, replaced
    atomically: what filtered_pairs of that shard reads instead of the whole index.
    Returns shard -> url."""
    urls = {}
    for shard in shards:
        dest = shard_rows_path(storage, shard)
        with storage.atomic_local_file(dest) as tmp:
            pq.write_table(index.shard_table(shard), tmp)
        urls[shard] = storage.url(dest)
    return urls


def shard_key(asset: str, partition: str) -> str:
    """How the index names a screened partition: its asset and partition key."""
    return f"{asset}/{partition}"


def shard_rows_path(storage: Storage, shard: str) -> str:
    return storage.path(*SHARD_ROWS_FOLDER, f"{shard}.parquet")


@dataclass
class SyncResult:
    """What one sync of the index with the screened partitions did."""

    plan: SyncPlan
    generation: int  # the index's generation after the sync
    refilter: list[str]  # shards whose filtered output must be made again (the added and replaced ones included)
    shard_rows: dict[str, str] = field(default_factory=dict)  # refilter shard -> url of its rows file, rewritten


class IndexDoesNotCoverPartition(RuntimeError):
    """A partition is filtered before image_hash_index has added its screened pairs."""


def index_rows_url(storage: Storage, screened: Manifest) -> str:
    """The index rows of one screened partition, written by image_hash_index when it added it."""
    path = shard_rows_path(storage, shard_key(screened.asset, screened.partition))
    if not storage.exists(path):
        raise IndexDoesNotCoverPartition(
            f"image_hash_index does not cover {screened.asset} {screened.partition} yet (no {path}): "
            "materialize image_hash_index after screening this partition, then filter it"
        )
    return storage.url(path)


def sync_shards(storage: Storage, index: HashIndex, versions: Mapping[str, str], urls: Mapping[str, str]) -> SyncResult:
    """Make ``index`` hold exactly the screened partitions ``versions`` (shard -> version;
    ``urls``: shard -> screened pairs), and rewrite the rows files of the shards to re-filter.
    Costs what the added, replaced and removed shards hold, never the whole index."""
    plan = index.sync_plan(versions)
    if plan.remove:
        index.remove(plan.remove)
    todo = plan.add + plan.replace
    if todo:
        index.add({key: urls[key] for key in todo}, replace=True, versions={key: versions[key] for key in todo})
    # Every shard recorded as pending, this sync's and any an earlier sync stopped before
    # naming in a changes file; leftovers alone get a generation of their own, since the
    # re-filter sensor may have read the changes of the generation they came from.
    refilter = index.pending_refilter()
    if refilter and not (plan.add or plan.replace or plan.remove):
        index.bump_generation()
    for shard in plan.remove:  # a filter run of a shard no longer screened must not find old rows
        path = shard_rows_path(storage, shard)
        if storage.exists(path):
            storage.fs.rm(path)
    return SyncResult(plan, index.generation, refilter, write_shard_rows(storage, index, refilter))


def rewritten_rows(storage: Storage, shard_rows: Mapping[str, str]) -> Iterator[tuple[int, list[dict]]]:
    """Per rows file written by a sync: its row count from the file's footer, and its rows
    (SHARD_ROWS_SCHEMA), read back from the file."""
    for shard, url in sorted(shard_rows.items()):
        path = storage.strip_protocol(url)
        with storage.fs.open(path, "rb") as f:
            count = pq.ParquetFile(f).metadata.num_rows
        yield count, [{"shard": shard, **row} for row in storage.iter_rows(path)]


def changes_path(storage: Storage, generation: int) -> str:
    return storage.path(*CHANGES_FOLDER, f"{generation:012d}.json")


def changed_since(storage: Storage, after: int, upto: int) -> list[str]:
    """The shards to re-filter for index generations after..upto, from their changes files.
    A generation without a file made no sync of its own (a remove and an add in one sync)."""
    start = after if upto >= after else 0  # the index was built again from nothing: everything it lists
    shards: set[str] = set()
    for generation in range(start + 1, upto + 1):
        path = changes_path(storage, generation)
        if storage.exists(path):
            shards.update(storage.read_json(path)["refilter"])
    return sorted(shards)


def write_changes(storage: Storage, result: SyncResult) -> str:
    """The sync's shard lists as a file on the root (at scale too long for run metadata);
    one per generation, never rewritten. Returns its url."""
    path = changes_path(storage, result.generation)
    storage.write_json(
        path,
        {
            "generation": result.generation,
            "refilter": result.refilter,
            "added": result.plan.add,
            "replaced": result.plan.replace,
            "removed": result.plan.remove,
        },
    )
    return storage.url(path)


@contextmanager
def open_on_root(storage: Storage, max_hamming: int, memory_limit: str = "2GB") -> Iterator[HashIndex]:
    """The index kept on the storage root, open for adds; committed when the block ends without error.

    Local root: the database file is used in place; each add is its own transaction and
    DuckDB's file lock refuses a second writer (IndexConflict). s3: the file is
    downloaded, changed, and uploaded in one PUT after checking that no other add
    committed since it was read (the generation file); adds are meant to be serialized
    through one asset, so the check is a guard, not the mechanism.
    """
    folder = storage.path(*INDEX_FOLDER)
    database = f"{folder}/{DATABASE_FILE}"
    if storage.is_local:
        index = HashIndex.open(database, max_hamming, memory_limit)
        try:
            yield index
            generation = index.generation
        finally:
            index.close()
        storage.write_json(f"{folder}/{GENERATION_FILE}", {"generation": generation})
        return
    read_generation = _root_generation(storage, folder)
    with tempfile.TemporaryDirectory(prefix="asagi-hash-index-") as work:
        local = os.path.join(work, DATABASE_FILE)
        if storage.exists(database):
            storage.fs.get_file(database, local)
        index = HashIndex.open(local, max_hamming, memory_limit)
        index.con.register_filesystem(storage.fs)  # the screened pairs are read from the same root
        try:
            yield index
            generation = index.generation
            index.con.execute("CHECKPOINT")  # everything in the one file, nothing left in the WAL
        finally:
            index.close()
        if _root_generation(storage, folder) != read_generation:
            raise IndexConflict("another add committed the hash index while this one ran: serialize adds")
        storage.fs.put_file(local, database)  # one PUT (multipart above 100 MB): readers see the old or the new file
        storage.write_json(f"{folder}/{GENERATION_FILE}", {"generation": generation})


def _root_generation(storage: Storage, folder: str) -> int:
    path = f"{folder}/{GENERATION_FILE}"
    return int(storage.read_json(path)["generation"]) if storage.exists(path) else 0
