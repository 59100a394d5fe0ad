//! Bringing the job's own tables, as earlier releases made them, to this
//! release's shape by DDL (no bytes billed): `RENAME COLUMN`, then `ADD COLUMN
//! IF NOT EXISTS` (NULLABLE, so old rows read NULL); then the schema is patched
//! to what the DDL made (a no-op on BigQuery; bqemulator's metadata needs it).
//! Safe to repeat: a table already in shape costs one `tables.get`.

use anyhow::Result;
use serde_json::{Value, json};

use super::api::Api;
use super::same_name;
use crate::target::schema::Table;

/// What a table needs: columns to rename, then the schema it should end with
/// (None when it has it already).
#[derive(Debug, PartialEq)]
pub struct Plan {
    pub renames: Vec<(&'static str, &'static str)>,
    /// New columns: (name, type).
    pub added: Vec<(String, String)>,
    pub fields: Option<Vec<Value>>,
}

/// The plan for a table whose metadata lists `fields`.
pub fn plan(table: Table, fields: &[Value]) -> Plan {
    let has = |name: &str| fields.iter().any(|f| same_name(f, name));
    let renames: Vec<_> = table
        .renamed
        .iter()
        .copied()
        .filter(|(old, new)| has(old) && !has(new))
        .collect();
    let mut after: Vec<Value> = fields
        .iter()
        .map(|f| {
            let mut f = f.clone();
            if let Some((_, new)) = renames.iter().find(|(old, _)| same_name(&f, old)) {
                f["name"] = (*new).into();
            }
            f
        })
        .collect();
    let missing: Vec<Value> = table
        .fields()
        .into_iter()
        .filter(|f| !after.iter().any(|a| same_name(a, &f.name)))
        .map(|f| json!({ "name": f.name, "type": f.kind, "mode": "NULLABLE" }))
        .collect();
    let changed = !renames.is_empty() || !missing.is_empty();
    let added = missing
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap_or_default().to_owned(),
                f["type"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    after.extend(missing);
    Plan {
        renames,
        added,
        fields: changed.then_some(after),
    }
}

/// Upgrades `dataset.table` (its metadata `meta`) as `plan` says.
pub async fn upgrade(api: &Api, dataset: &str, table: Table, meta: &Value) -> Result<()> {
    let fields = meta["schema"]["fields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let plan = plan(table, &fields);
    let target = format!("`{}.{dataset}.{}`", api.project, table.name);
    let renames = plan.renames.iter().map(|(old, new)| {
        (
            format!("rename_{old}"),
            format!("RENAME COLUMN {old} TO {new}"),
        )
    });
    let adds = plan.added.iter().map(|(name, kind)| {
        (
            format!("add_{name}"),
            format!("ADD COLUMN IF NOT EXISTS {name} {kind}"),
        )
    });
    // One change a statement: bqemulator takes no lists of them.
    for (step, change) in renames.chain(adds) {
        let job = format!(
            "bsp_{dataset}_init_{}_{step}",
            uuid::Uuid::new_v4().simple()
        );
        api.run(&job, &format!("ALTER TABLE {target} {change}"), vec![])
            .await?;
    }
    if let Some(fields) = plan.fields {
        // Restates the schema the DDL made (bqemulator's metadata lags its DDL).
        let resource = json!({
            "tableReference": { "projectId": api.project, "datasetId": dataset, "tableId": table.name },
            "schema": { "fields": fields },
        });
        api.patch_table(dataset, table.name, resource).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::schema;

    fn previous(json: &str) -> Vec<Value> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn the_previous_releases_files_table_gets_done_by_in_place_of_run_id() {
        let old = previous(include_str!("../../../tests/previous_release/files.json"));
        let p = plan(schema::FILES, &old);
        assert_eq!(p.renames, [("run_id", "done_by")]);
        let names: Vec<&str> = p
            .fields
            .as_ref()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["object_name", "generation", "done_by", "processed_at"]
        );
        assert_eq!(
            p.fields.unwrap()[2]["mode"],
            "REQUIRED",
            "a rename keeps the mode"
        );
    }

    #[test]
    fn the_previous_releases_pending_table_gains_nullable_columns_at_the_end() {
        let old = previous(include_str!("../../../tests/previous_release/pending.json"));
        let p = plan(schema::PENDING, &old);
        assert!(p.renames.is_empty());
        let fields = p.fields.unwrap();
        assert_eq!(fields.len(), old.len() + 2);
        assert_eq!(fields[old.len()]["name"], "partition_at");
        assert_eq!(fields[old.len() + 1]["name"], "last_tried_at");
        assert!(fields[old.len()..].iter().all(|f| f["mode"] == "NULLABLE"));
        assert_eq!(
            p.added,
            [
                ("partition_at".to_owned(), "TIMESTAMP".to_owned()),
                ("last_tried_at".to_owned(), "TIMESTAMP".to_owned())
            ]
        );
    }

    #[test]
    fn a_table_in_shape_needs_nothing() {
        for table in [schema::PENDING, schema::FILES, schema::RUNS] {
            let now: Vec<Value> = serde_json::from_str(table.json).unwrap();
            assert_eq!(
                plan(table, &now),
                Plan {
                    renames: vec![],
                    added: vec![],
                    fields: None
                }
            );
        }
    }
}
