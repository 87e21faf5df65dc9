//! The reference server's router answering arbitrary requests (method, target, headers, body;
//! up to 8 per input, separated by a `~~~` line) on a fresh state: it must never panic and
//! always answer with a status. `@COOKIE@` and `@CLIENT@` in the input stand for a valid session
//! cookie and client id, so that inputs reach past the authentication checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidesync_server::fuzzing::run_requests;

fuzz_target!(|data: &[u8]| {
    for answer in run_requests(data) {
        assert!((100..600).contains(&answer.status), "status {}", answer.status);
    }
});
