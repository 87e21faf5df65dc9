//! TideSync's cross-crate integration tests, one binary with a module per area:
//!
//! * `conformance`: the recorded RhoConnect 7.8 transcripts replayed against the reference server;
//! * `concurrency`: many clients syncing a large data set at once;
//! * `bad_input`: malformed, oversized and unexpected requests.
#![allow(clippy::unwrap_used)]

mod bad_input;
mod concurrency;
mod conformance;
mod crash;
mod fault_matrix;
mod load;
mod sync_bad_pages;
mod sync_blobs;
mod sync_e2e;
mod sync_search;
mod tls;
