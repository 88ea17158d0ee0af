//! One module per command: its arguments (a clap `Args` struct or subcommand enum, whose
//! documentation is the command's help) and what running it does.

pub mod collect;
pub mod compact;
pub mod export;
pub mod functions;
pub mod generate;
pub mod import;
pub mod prices;
pub mod query;
pub mod report;
pub mod serve;
pub mod tables;
pub mod user;
pub mod worker;
