//! One module per subcommand; each wires source → pipeline → target.

mod init;
mod resolve;
mod run;
mod window;

pub use init::init;
pub use resolve::resolve;
pub use run::{backfill, run};
