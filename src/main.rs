//! The `bsp-status-loader` binary: parse the command line, set up logs, run.

use std::process::ExitCode;

use bsp_status_loader::cli::{self, Cli, Command};
use bsp_status_loader::{commands, error, logging};
use clap::Parser;
use clap::error::ErrorKind;

fn main() -> ExitCode {
    let run_id = format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage(e, &run_id),
    };
    logging::init(cli.log_format, &run_id);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Run(args) => commands::run(args, &run_id).await,
            Command::Backfill(args) => commands::backfill(args, &run_id).await,
            Command::Resolve(args) => commands::resolve(args).await,
            Command::Init(args) => commands::init(args).await,
            Command::Report(args) => commands::report(args).await,
            Command::Status(args) => commands::status(args, cli.log_format).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = error::exit_code(&e);
            // One line, whatever the causes' own messages hold.
            let message = format!("{e:#}")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            tracing::error!(exit_code = code, "{message}");
            ExitCode::from(code)
        }
    }
}

/// A command line clap refused: one log line (JSON when asked), exit 2. Help and
/// version requests print as clap prints them.
fn usage(e: clap::Error, run_id: &str) -> ExitCode {
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    logging::init(cli::log_format_hint(std::env::args()), run_id);
    let message = cli::one_line(&e.to_string());
    tracing::error!(exit_code = error::EXIT_USAGE, "{message}");
    ExitCode::from(error::EXIT_USAGE)
}
