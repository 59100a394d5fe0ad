#!/usr/bin/env python3
"""What one BigQuery run of bsp-status-loader bills, from the sizes of the partitions its
statements read: what a dry run of each statement would report. Prints the table of
docs/cost.md (markdown) for three organization sizes and two schedules.

Run: python3 scripts/cost_model.py [--row-bytes 1000] [--price 6.25]

The statements are those of one run (src/target/bigquery/): the bounds query, the rows
check, and the script's statements; load jobs (staging) are free. On-demand billing counts
each table a statement references at least 10 MB. A statement with an UPDATE clause is
billed for every column of every partition it reads; the others for the columns they name.
"""
import argparse

MB, GB, TIB = 10**6, 10**9, 2**40
MIN_PER_TABLE = 10 * MB

# Assumptions (docs/cost.md explains each).
COPIES = 1.1                 # rows per message in a month partition (Glific's copies, deduped nightly)
NARROW_BYTES = 64            # key (~38 B), status, partition column, bq_inserted_at of one row
PENDING_ROW = 160            # a pending key, all columns
PENDING_NARROW = 80          # the columns the bounds query reads
TIMELINE_ROW = 100           # a timeline row, all columns
TIMELINE_MONTHS = 7          # partitions the timeline MERGE reads (180 days back, and this month)
MESSAGES_PARTITIONS = 2      # MONTH partitions a MERGE reads: a key's status month and the
                             # lookback (31 days) always reaches the month before
PENDING_DAYS = 7             # keys kept: unmatched until found, matched for copies (--pending-ttl)
FILE_ROW = 120               # a files row (name, generation, done_by, processed_at)
FILES_PER_MINUTE = 1         # the receiver's files
REMEMBER_DAYS = 7            # done files older than this are forgotten (daily full listing)
DEAD_LETTERS_BYTES = 50 * MB # the dead letters table
SCHEDULES = {"15 min": 4 * 24 * 30, "hourly": 24 * 30}
ORGS = [30_000, 300_000, 3_000_000]


def billed(*tables):
    """One statement: the bytes it reads per table, each at least 10 MB."""
    return sum(max(MIN_PER_TABLE, int(b)) for b in tables)


def run_bytes(messages_per_month, runs_per_month, row_bytes):
    per_run = messages_per_month / runs_per_month          # keys a run brings
    partition_rows = messages_per_month * COPIES
    partition_all = partition_rows * row_bytes             # one month, every column
    partition_narrow = partition_rows * NARROW_BYTES
    pending_rows = messages_per_month / 30 * PENDING_DAYS
    pending_all = pending_rows * PENDING_ROW
    stage = per_run * PENDING_ROW
    timeline = messages_per_month * TIMELINE_MONTHS * TIMELINE_ROW
    files = FILES_PER_MINUTE * 60 * 24 * REMEMBER_DAYS * FILE_ROW
    runs_per_day = runs_per_month / 30
    m_all = MESSAGES_PARTITIONS * partition_all
    m_narrow = MESSAGES_PARTITIONS * partition_narrow
    statements = {
        "bounds (pending, stage)": billed(pending_rows * PENDING_NARROW, stage),
        "rows check (messages: key, write time)": billed(m_narrow),
        "pending MERGE": billed(pending_all, stage),
        "timeline MERGE (all columns, 7 months)": billed(timeline, per_run * TIMELINE_ROW),
        "count of rows to update": billed(m_narrow, pending_all, stage),
        "messages MERGE (all columns)": billed(m_all, pending_all, stage),
        "keys found (messages: key, partition)": billed(m_narrow, pending_all),
        "keys tried": billed(pending_all, stage),
        "expiry (count, dead letters, delete)": 3 * billed(pending_all) + billed(DEAD_LETTERS_BYTES),
        "dead letters of the batch": billed(DEAD_LETTERS_BYTES, files, stage) + billed(files, stage, stage),
        "files MERGE": billed(files, stage),
        "bookkeeping (watermark read and write, files from it)": 2 * billed(0) + billed(files),
        "forgetting old files (daily, per run)": billed(files) / runs_per_day,
        "runs record": billed(0),
    }
    return statements


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--row-bytes", type=int, default=1000, help="bytes of a messages row, all columns")
    p.add_argument("--price", type=float, default=6.25, help="USD per TiB, on-demand")
    a = p.parse_args()
    print("| messages a month | schedule | GB a run | messages MERGE share | TiB a month | USD a month (1 TiB free) |")
    print("|---:|---|---:|---:|---:|---:|")
    for m in ORGS:
        for name, runs in SCHEDULES.items():
            s = run_bytes(m, runs, a.row_bytes)
            total = sum(s.values())
            month = total * runs / TIB
            usd = max(0.0, month - 1) * a.price
            share = s["messages MERGE (all columns)"] / total
            print(f"| {m:,} | {name} | {total / GB:.2f} | {share:.0%} | {month:.2f} | {usd:,.2f} |")
    print()
    print("Per statement, 300,000 messages a month, 15-minute runs (MB):")
    for k, v in run_bytes(300_000, SCHEDULES["15 min"], a.row_bytes).items():
        print(f"- {k}: {v / MB:,.0f}")


if __name__ == "__main__":
    main()
