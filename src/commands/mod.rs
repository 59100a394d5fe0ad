//! One module per subcommand; each wires source → pipeline → target.

mod destinations;
mod init;
mod listing;
mod report;
mod resolve;
mod run;
mod status;
mod summary;
mod window;

pub use init::init;
pub use report::{Funnel, report};
pub use resolve::resolve;
pub use run::{backfill, run};
pub use status::status;
