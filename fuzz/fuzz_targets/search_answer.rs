//! The client's search-answer parser on arbitrary bytes: never panics, accepts only valid JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidesync_core::protocol::rhoconnect::page::parse_search;

fuzz_target!(|data: &[u8]| {
    if parse_search(data).is_ok() {
        assert!(
            serde_json::from_slice::<serde_json::Value>(data).is_ok(),
            "accepted a search answer that is not valid JSON"
        );
    }
});
