//! bsp-status-loader: a callback line's trip is
//! `source` (list, fetch, decode) → `callback` (parse V2/V3 into events) →
//! `resolve` (one status per message) → `target` (guarded write, bookkeeping).
//! `pipeline` drives the first three into a `batch`, which a target keeps;
//! `commands` wire each subcommand.

pub mod batch;
pub mod callback;
pub mod cli;
pub mod commands;
pub mod config;
pub mod emulator;
pub mod error;
pub mod failpoint;
pub mod logging;
pub mod pipeline;
pub mod resolve;
pub mod source;
pub mod status;
pub mod target;
