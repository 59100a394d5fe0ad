//! Which files fall in a backfill window: by the date in their path
//! (`…/YYYY/MM/DD/…` or `YYYY-MM-DD`), else by their modification time.

use chrono::NaiveDate;

use crate::source::ObjectRef;

pub fn in_window(object: &ObjectRef, from: NaiveDate, to: NaiveDate) -> bool {
    let day = date_in_path(&object.name).unwrap_or_else(|| object.last_modified.date_naive());
    (from..=to).contains(&day)
}

fn date_in_path(name: &str) -> Option<NaiveDate> {
    let parts: Vec<&str> = name.split('/').collect();
    let nested = parts.windows(3).find_map(|w| {
        let [y, m, d] = w else { return None };
        let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
        if digits(y, 4) && digits(m, 2) && digits(d, 2) {
            NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)
        } else {
            None
        }
    });
    nested.or_else(|| {
        name.char_indices()
            .filter_map(|(i, _)| name.get(i..i + 10))
            .find_map(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_from_paths() {
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day);
        assert_eq!(
            date_in_path("gupshup/2025/11/22/01/a.ndjson"),
            d(2025, 11, 22)
        );
        assert_eq!(
            date_in_path("gupshup/dt=2025-11-02/a.ndjson.gz"),
            d(2025, 11, 2)
        );
        assert_eq!(date_in_path("gupshup/a.ndjson"), None);
        assert_eq!(date_in_path("2025/13/40/a"), None);
    }
}
