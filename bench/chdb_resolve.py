"""The same resolution as `bsp-status-loader resolve`, written for ClickHouse in-process
(chdb): the second yardstick, rule for rule a port of duckdb_resolve.py.
Usage: python chdb_resolve.py DATA_DIR OUTPUT [THREADS]"""
import chdb

from peer import RANKS, args

data, output, threads = args()
rank_of = "multiIf(" + ", ".join(f"s = '{w}', {i + 1}" for i, (w, _) in enumerate(RANKS)) + ", NULL)"
word_of = "[" + ", ".join(f"'{v}'" for _, v in RANKS) + "][b.1]"


def text(j, *path):
    """A field as DuckDB's `->>` gives it: a string's value, any other value's JSON text, NULL if absent."""
    p = ", ".join(f"'{k}'" if isinstance(k, str) else str(k) for k in path)
    return (f"if(JSONHas({j}, {p}), if(JSONType({j}, {p}) = 'String', JSONExtractString({j}, {p}), "
            f"JSONExtractRaw({j}, {p})), NULL)")


def key(j, first, second):
    return f"coalesce(nullIf(trimBoth({text(j, *first)}), ''), nullIf(trimBoth({text(j, *second)}), ''))"


SQL = f"""
WITH u AS (
  SELECT if(JSONHas(line, 'body') AND NOT JSONHas(line, 'type') AND NOT JSONHas(line, 'entry'),
            if(JSONType(line, 'body') = 'String', JSONExtractString(line, 'body'), JSONExtractRaw(line, 'body')),
            line) AS j
  FROM file('{data}/**/*.{{ndjson,ndjson.gz}}', 'LineAsString', 'line String')
  WHERE notEmpty(trimBoth(line))
), v2 AS (
  SELECT {key('j', ('payload', 'gsId'), ('payload', 'id'))} AS k,
         lower({text('j', 'payload', 'type')}) AS s,
         coalesce({text('j', 'payload', 'payload', 'ts')}, {text('j', 'timestamp')}) AS t,
         {text('j', 'payload', 'payload', 'code')} AS c
  FROM u WHERE {text('j', 'type')} = 'message-event'
), statuses AS (
  SELECT arrayJoin(JSONExtractArrayRaw(ch, 'value', 'statuses')) AS x
  FROM (SELECT arrayJoin(arrayFlatten(arrayMap(e -> JSONExtractArrayRaw(e, 'changes'), JSONExtractArrayRaw(j, 'entry')))) AS ch
        FROM u WHERE JSONHas(j, 'entry'))
  WHERE {text('ch', 'field')} = 'messages'
), v3 AS (
  SELECT {key('x', ('gs_id',), ('id',))} AS k,
         lower({text('x', 'status')}) AS s,
         {text('x', 'timestamp')} AS t,
         coalesce({text('x', 'errors', 1, 'code')}, {text('x', 'code')}) AS c
  FROM statuses
), ev AS (
  SELECT k, {rank_of} AS rank, toInt128(t) AS tv, toInt64OrNull(c) AS c
  FROM (SELECT * FROM v2 UNION ALL SELECT * FROM v3)
  WHERE k IS NOT NULL AND match(t, '^[0-9]+$') AND rank IS NOT NULL
), r AS (
  SELECT k, rank, toInt64(if(tv >= 100000000000, tv, tv * 1000)) AS ms, c FROM ev
), best AS (
  SELECT k, argMin((rank, ms, c), (-rank, ms, coalesce(c, 9223372036854775807))) AS b
  FROM r GROUP BY k
)
SELECT concat('{{"bsp_message_id":', toJSONString(k), ',"bsp_status":"', {word_of}, '","status_at":"',
              formatDateTime(toDateTime(intDiv(b.2, 1000), 'UTC'), '%Y-%m-%dT%H:%i:%S'), '.',
              leftPad(toString(b.2 % 1000), 3, '0'), 'Z","error_code":',
              if(b.1 = 3 AND b.3 IS NOT NULL, toString(b.3), 'null'), '}}')
FROM best ORDER BY k
INTO OUTFILE '{output}' TRUNCATE FORMAT LineAsString
SETTINGS max_threads = {threads}, output_format_json_escape_forward_slashes = 0
"""

chdb.query(SQL)
