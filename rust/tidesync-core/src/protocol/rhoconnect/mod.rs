//! The RhoConnect protocol, version 3.

mod blobs;
pub mod bulk;
pub mod client;
pub mod page;
pub mod transport;

pub use client::RhoConnect;
pub use transport::HttpConfig;
