//! The engine's integration tests (one binary: each links all of DataFusion).

mod aggregation;
mod catalog;
pub mod curated;
mod eager_aggregation;
mod footer;
mod generate;
mod integrity;
mod optimizer;
mod readme;
mod reports;
mod slt;
pub mod slt_db;
mod support;
mod topk;
mod udfs;
