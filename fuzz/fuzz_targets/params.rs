//! Form and JSON body parsers: never panic; errors are invalid_request.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tokend::oauth::params::Params;

fuzz_target!(|data: &[u8]| {
    for r in [Params::from_form(data), Params::from_json(data)] {
        if let Err(e) = r {
            assert_eq!(e.code(), "invalid_request");
        }
    }
});
