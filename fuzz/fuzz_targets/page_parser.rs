//! The client's page parser on arbitrary bytes: never panics, and accepts only valid JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidesync_core::protocol::rhoconnect::page::parse_page;

fuzz_target!(|data: &[u8]| {
    if let Ok(page) = parse_page(data) {
        assert!(
            serde_json::from_slice::<serde_json::Value>(data).is_ok(),
            "accepted a page that is not valid JSON"
        );
        // Owning the borrowed strings changes nothing.
        let owned = page.clone().into_owned();
        assert_eq!(owned, page);
    }
});
