#![no_main]
//! The authorization endpoint's strict query parser (issue 14): never a
//! panic, and every refusal is `invalid_request`.
use libfuzzer_sys::fuzz_target;
use tokend::oauth::params::parse_query;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data)
        && let Err(e) = parse_query(s)
    {
        assert_eq!(e.code(), "invalid_request");
    }
});
