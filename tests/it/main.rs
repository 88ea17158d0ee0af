//! End-to-end tests of the `tokenledger` binary (one test binary for the root crate).

mod bucket;
mod cli;
mod compaction;
mod corruption;
mod distributed;
mod flight_clients;
mod focus;
mod otlp;
mod peers;
mod precedence;
mod prices;
mod report_page;
mod s3;
mod secrets;
mod server_limits;
mod worker_security;
