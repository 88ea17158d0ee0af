//! End-to-end tests of the `tokenledger` binary (one test binary for the root crate).

mod cli;
mod peers;
mod s3;
