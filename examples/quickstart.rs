//! The quick start: seed a SQLite `messages` table from fixtures/messages.sql, run
//! the job on fixtures/callbacks, and print each row's resulting status.
//!
//!     cargo run --example quickstart

use bsp_status_loader::cli::{Cli, Command};
use bsp_status_loader::{commands, logging};
use clap::Parser;

fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let db = root.join("quickstart.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let conn = rusqlite::Connection::open(&db)?;
    conn.execute_batch(&std::fs::read_to_string(
        root.join("fixtures/messages.sql"),
    )?)?;

    let source = root.join("fixtures/callbacks");
    let cli = Cli::parse_from([
        "bsp-status-loader",
        "--log-format",
        "text",
        "run",
        "--source",
        source.to_str().expect("a UTF-8 path"),
        "--target",
        &format!("sqlite://{}", db.display()),
    ]);
    logging::init(cli.log_format, "quickstart");
    let Command::Run(args) = &cli.command else {
        unreachable!()
    };
    tokio::runtime::Runtime::new()?.block_on(commands::run(args, "quickstart"))?;

    println!(
        "\n{:<4} {:<38} {:<10} errors",
        "id", "bsp_message_id", "bsp_status"
    );
    let mut rows = conn.prepare(
        "SELECT id, coalesce(bsp_message_id, '-'), coalesce(bsp_status, '-'), coalesce(errors, '')
         FROM messages ORDER BY id, rowid",
    )?;
    let mut rows = rows.query([])?;
    while let Some(r) = rows.next()? {
        let (id, key, status, errors): (i64, String, String, String) =
            (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
        println!("{id:<4} {key:<38} {status:<10} {errors}");
    }
    let pending: i64 = conn.query_row(
        "SELECT COUNT(*) FROM bsp_loader_pending WHERE matched_at IS NULL",
        [],
        |r| r.get(0),
    )?;
    let dead: i64 = conn.query_row("SELECT COUNT(*) FROM bsp_loader_dead_letters", [], |r| {
        r.get(0)
    })?;
    println!(
        "\n{pending} keys pending (no row yet), {dead} dead letters; database: {}",
        db.display()
    );
    Ok(())
}
