//! Subcommands of the `gateway` binary, one per file: what it does instead
//! of serving, with the same flags (and so the same keys) as the server.

pub mod token;
