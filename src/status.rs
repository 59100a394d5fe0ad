//! The one status table: the words Gupshup sends, the word we write, and its rank.
//! Every rule and every SQL text that needs a rank is derived from `STATUSES`.

/// A status a message can reach. The discriminant is its rank (higher wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Status {
    Enqueued = 1,
    Sent = 2,
    Error = 3,
    Delivered = 4,
    Read = 5,
    Played = 6,
    Deleted = 7,
}

/// (callback word, written value, status), in rank order.
pub const STATUSES: [(&str, &str, Status); 7] = [
    ("enqueued", "enqueued", Status::Enqueued),
    ("sent", "sent", Status::Sent),
    ("failed", "error", Status::Error),
    ("delivered", "delivered", Status::Delivered),
    ("read", "read", Status::Read),
    ("played", "played", Status::Played),
    ("deleted", "deleted", Status::Deleted),
];

impl Status {
    /// Recognises a callback's status word, case-insensitively.
    pub fn from_callback(word: &str) -> Option<Status> {
        let find = |same: fn(&str, &str) -> bool| {
            let found = STATUSES.iter().find(|(w, _, _)| same(w, word));
            found.map(|&(_, _, s)| s)
        };
        // As sent nearly always: compared whole before byte by byte without case.
        find(|w, word| w == word).or_else(|| find(str::eq_ignore_ascii_case))
    }

    /// Reads back a value this job (or Glific) wrote to `bsp_status`.
    pub fn from_written(value: &str) -> Option<Status> {
        STATUSES
            .iter()
            .find(|(_, v, _)| *v == value)
            .map(|&(_, _, s)| s)
    }

    pub fn from_rank(rank: u8) -> Option<Status> {
        STATUSES
            .iter()
            .map(|&(_, _, s)| s)
            .find(|s| s.rank() == rank)
    }

    pub fn rank(self) -> u8 {
        self as u8
    }

    /// The value written to `bsp_status` (Glific's word: `failed` becomes `error`).
    pub fn written(self) -> &'static str {
        STATUSES[usize::from(self.rank() - 1)].1
    }
}

/// SQL expression giving the rank of the written value in `column`; NULL or any
/// other value ranks 0. Used by every target so the guard has one source.
pub fn rank_sql(column: &str) -> String {
    let arms: String = STATUSES
        .iter()
        .map(|(_, v, s)| format!(" WHEN '{v}' THEN {}", s.rank()))
        .collect();
    format!("(CASE {column}{arms} ELSE 0 END)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_in_rank_order_and_round_trips() {
        for (i, (word, value, status)) in STATUSES.iter().enumerate() {
            assert_eq!(usize::from(status.rank()), i + 1);
            assert_eq!(Status::from_callback(word), Some(*status));
            assert_eq!(Status::from_written(value), Some(*status));
            assert_eq!(status.written(), *value);
        }
    }

    #[test]
    fn callback_words_are_case_insensitive_and_failed_is_written_error() {
        assert_eq!(Status::from_callback("READ"), Some(Status::Read));
        assert_eq!(
            Status::from_callback("Failed").map(Status::written),
            Some("error")
        );
        assert_eq!(Status::from_callback("warning"), None);
        assert_eq!(Status::from_callback("error"), None);
    }

    #[test]
    fn rank_sql_names_every_status_and_defaults_to_zero() {
        let sql = rank_sql("T.bsp_status");
        for (_, v, s) in STATUSES {
            assert!(
                sql.contains(&format!("WHEN '{v}' THEN {}", s.rank())),
                "{sql}"
            );
        }
        assert!(sql.ends_with("ELSE 0 END)"));
    }
}
