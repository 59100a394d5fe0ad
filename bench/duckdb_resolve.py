"""The same resolution as `bsp-status-loader resolve`, written for DuckDB: the yardstick.
Usage: python duckdb_resolve.py DATA_DIR OUTPUT [THREADS]"""
import glob

import duckdb

from peer import RANKS, args

data, output, threads = args()
# DuckDB fails on a pattern that matches nothing (a folder of plain files only).
patterns = [p for p in (f"{data}/**/*.ndjson", f"{data}/**/*.ndjson.gz") if glob.glob(p, recursive=True)]
rank_of = "CASE s " + " ".join(f"WHEN '{w}' THEN {i + 1}" for i, (w, _) in enumerate(RANKS)) + " END"
word_of = "CASE b.rank " + " ".join(f"WHEN {i + 1} THEN '{v}'" for i, (_, v) in enumerate(RANKS)) + " END"

SQL = f"""
WITH raw AS (
  SELECT json AS j0 FROM read_ndjson_objects({patterns!r}, compression = 'auto_detect')
), u AS (
  SELECT CASE WHEN (j0->'$.body') IS NOT NULL AND (j0->'$.type') IS NULL AND (j0->'$.entry') IS NULL
              THEN CASE WHEN json_type((j0->'$.body')) = 'VARCHAR' THEN ((j0->>'$.body'))::JSON ELSE (j0->'$.body') END
              ELSE j0 END AS j
  FROM raw
), v2 AS (
  SELECT coalesce(nullif(trim((j->>'$.payload.gsId')), ''), nullif(trim((j->>'$.payload.id')), '')) AS k,
         lower((j->>'$.payload.type')) AS s,
         coalesce((j->>'$.payload.payload.ts'), (j->>'$.timestamp')) AS t,
         (j->>'$.payload.payload.code') AS c
  FROM u WHERE (j->>'$.type') = 'message-event'
), changes AS (
  SELECT unnest(json_extract(j, '$.entry[*].changes[*]')) AS ch FROM u WHERE (j->'$.entry') IS NOT NULL
), statuses AS (
  SELECT unnest(json_extract(ch, '$.value.statuses[*]')) AS x FROM changes WHERE (ch->>'$.field') = 'messages'
), v3 AS (
  SELECT coalesce(nullif(trim((x->>'$.gs_id')), ''), nullif(trim((x->>'$.id')), '')) AS k,
         lower((x->>'$.status')) AS s,
         (x->>'$.timestamp') AS t,
         coalesce((x->>'$.errors[0].code'), (x->>'$.code')) AS c
  FROM statuses
), ev AS (
  SELECT k, {rank_of} AS rank, CAST(t AS HUGEINT) AS tv, TRY_CAST(c AS BIGINT) AS c
  FROM (SELECT * FROM v2 UNION ALL SELECT * FROM v3)
  WHERE k IS NOT NULL AND regexp_full_match(t, '[0-9]+') AND {rank_of} IS NOT NULL
), r AS (
  SELECT k, rank, CAST(CASE WHEN tv >= 100000000000 THEN tv ELSE tv * 1000 END AS BIGINT) AS ms, c FROM ev
), best AS (
  SELECT k, arg_min({{'rank': rank, 'ms': ms, 'c': c}}, (-rank, ms, coalesce(c, 9223372036854775807))) AS b
  FROM r GROUP BY k
)
SELECT '{{"bsp_message_id":' || to_json(k) || ',"bsp_status":"' || {word_of} || '","status_at":"'
       || strftime(make_timestamp(b.ms * 1000), '%Y-%m-%dT%H:%M:%S.%gZ') || '","error_code":'
       || CASE WHEN b.rank = 3 AND b.c IS NOT NULL THEN CAST(b.c AS VARCHAR) ELSE 'null' END || '}}'
FROM best ORDER BY k
"""

con = duckdb.connect()
con.execute(f"SET threads = {threads}")
cur = con.execute(SQL)
with open(output, "w") as out:
    while rows := cur.fetchmany(100_000):
        out.write("".join(r[0] + "\n" for r in rows))
