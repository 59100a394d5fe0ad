//! The resolution order (`resolve::BEST_FIRST`) in SQL, over the pending table's
//! columns: which of two rows wins, and rows sorted best first.

use crate::resolve::{BEST_FIRST, Criterion};
use crate::status::rank_sql;

/// The pending table's columns the order reads.
const STATUS: &str = "bsp_status";
const TIME: &str = "status_at";
const CODE: &str = "error_code";

/// SQL predicate: the resolution in row `new` beats the one in row `old`: better
/// on some criterion and equal on every one before it.
pub fn beats_sql(new: &str, old: &str) -> String {
    let col = |row: &str, c: &str| format!("{row}.{c}");
    let (better, equal): (Vec<String>, Vec<String>) = BEST_FIRST
        .iter()
        .map(|c| match c {
            Criterion::RankDescending => {
                let (n, o) = (rank_sql(&col(new, STATUS)), rank_sql(&col(old, STATUS)));
                (format!("{n} > {o}"), format!("{n} = {o}"))
            }
            Criterion::TimeAscending => {
                let (n, o) = (col(new, TIME), col(old, TIME));
                (format!("{n} < {o}"), format!("{n} = {o}"))
            }
            Criterion::CodeAscendingNullsLast => {
                let (n, o) = (col(new, CODE), col(old, CODE));
                (
                    format!("{n} IS NOT NULL AND ({o} IS NULL OR {n} < {o})"),
                    format!("{n} IS NOT DISTINCT FROM {o}"),
                )
            }
        })
        .unzip();
    let alternatives: Vec<String> = (0..BEST_FIRST.len())
        .map(|i| {
            let mut terms: Vec<String> = equal[..i].iter().map(|e| format!("({e})")).collect();
            terms.push(format!("({})", better[i]));
            terms.join(" AND ")
        })
        .collect();
    format!("({})", alternatives.join(" OR "))
}

/// An ORDER BY list over one table's pending columns: the winner first.
pub fn best_first_sql() -> String {
    BEST_FIRST
        .iter()
        .map(|c| match c {
            Criterion::RankDescending => format!("{} DESC", rank_sql(STATUS)),
            Criterion::TimeAscending => format!("{TIME} ASC"),
            Criterion::CodeAscendingNullsLast => format!("{CODE} ASC NULLS LAST"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::{Observation, Resolved};
    use crate::status::STATUSES;

    /// Every pair from a small grid: the SQL predicate says "beats" exactly when
    /// folding the new resolution into the old changes it.
    #[test]
    fn the_sql_order_is_the_rules_order() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let grid: Vec<Resolved> = STATUSES
            .iter()
            .flat_map(|&(_, _, status)| {
                [(1, None), (1, Some(7)), (1, Some(3)), (2, None)].map(|(at_ms, code)| Resolved {
                    status,
                    at_ms,
                    code,
                })
            })
            .collect();
        let sql = format!(
            "SELECT {} FROM (SELECT ?1 AS bsp_status, ?2 AS status_at, ?3 AS error_code) AS n, \
             (SELECT ?4 AS bsp_status, ?5 AS status_at, ?6 AS error_code) AS o",
            beats_sql("n", "o")
        );
        for new in &grid {
            for old in &grid {
                let beats: bool = conn
                    .query_row(
                        &sql,
                        rusqlite::params![
                            new.status.written(),
                            new.at_ms,
                            new.code,
                            old.status.written(),
                            old.at_ms,
                            old.code
                        ],
                        |r| r.get(0),
                    )
                    .unwrap();
                let mut folded = *old;
                folded.absorb(*new);
                let changed = folded != *old && folded == *new;
                assert_eq!(beats, changed, "{new:?} over {old:?}");
            }
        }
        // Sorted best first, the first row is what folding them all gives.
        conn.execute_batch("CREATE TABLE p (bsp_status, status_at, error_code)")
            .unwrap();
        for (i, r) in grid.iter().enumerate().filter(|(i, _)| i % 3 != 1) {
            conn.execute(
                "INSERT INTO p VALUES (?1, ?2, ?3)",
                rusqlite::params![r.status.written(), r.at_ms + i as i64 % 2, r.code],
            )
            .unwrap();
        }
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM p ORDER BY {}", best_first_sql()))
            .unwrap();
        let rows: Vec<Resolved> = stmt
            .query_map([], |r| {
                let status: String = r.get(0)?;
                Ok(Resolved {
                    status: crate::status::Status::from_written(&status).unwrap(),
                    at_ms: r.get(1)?,
                    code: r.get(2)?,
                })
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let mut all = rows[rows.len() - 1];
        rows.iter().for_each(|r| {
            all.absorb(*r);
        });
        assert_eq!(rows[0], all);
    }
}
