//! The JSON schemas in `schemas/` (the same files `bq mk` takes), compiled in.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Field {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub mode: Option<String>,
}

impl Field {
    pub fn required(&self) -> bool {
        self.mode.as_deref() == Some("REQUIRED")
    }
}

/// One of the job's own tables, or Glific's `messages`.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    /// Default table name.
    pub name: &'static str,
    pub json: &'static str,
    /// Columns renamed since an earlier release, (old, new): `init` renames them.
    pub renamed: &'static [(&'static str, &'static str)],
}

pub const PENDING: Table = Table {
    name: "bsp_loader_pending",
    json: include_str!("../../schemas/pending.json"),
    renamed: &[],
};
pub const FILES: Table = Table {
    name: "bsp_loader_files",
    json: include_str!("../../schemas/files.json"),
    renamed: &[("run_id", "done_by")],
};
pub const DEAD_LETTERS: Table = Table {
    name: "bsp_loader_dead_letters",
    json: include_str!("../../schemas/dead_letters.json"),
    renamed: &[],
};
pub const TIMELINE: Table = Table {
    name: "bsp_message_timeline",
    json: include_str!("../../schemas/timeline.json"),
    renamed: &[],
};
pub const RUNS: Table = Table {
    name: "bsp_loader_runs",
    json: include_str!("../../schemas/runs.json"),
    renamed: &[],
};
pub const WATERMARKS: Table = Table {
    name: "bsp_loader_watermarks",
    json: include_str!("../../schemas/watermarks.json"),
    renamed: &[],
};
pub const MESSAGES: Table = Table {
    name: "messages",
    json: include_str!("../../schemas/messages.json"),
    renamed: &[],
};

impl Table {
    pub fn fields(&self) -> Vec<Field> {
        serde_json::from_str(self.json).expect("schemas/*.json are valid (tested)")
    }

    /// The column names, in the schema's order.
    pub fn field_names(&self) -> Vec<String> {
        self.fields().into_iter().map(|f| f.name).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_parses_and_names_are_identifiers() {
        for table in [
            PENDING,
            FILES,
            DEAD_LETTERS,
            TIMELINE,
            RUNS,
            WATERMARKS,
            MESSAGES,
        ] {
            let fields = table.fields();
            assert!(!fields.is_empty());
            for f in fields {
                assert!(super::super::ident(&f.name).is_ok(), "{}", f.name);
            }
        }
    }

    #[test]
    fn the_timeline_table_has_a_column_per_status_in_rank_order() {
        let names = TIMELINE.field_names();
        assert_eq!(names[..2], ["bsp_message_id", "first_at"]);
        assert_eq!(names[2..9], crate::resolve::TIMELINE_FIELDS);
        assert_eq!(names[9], "error_code");
    }
}
