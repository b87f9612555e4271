//! HTTP Basic decoder (base64 + RFC 6749 2.3.1 form-decoding): never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = tokend::transport::http::decode_basic(s);
    }
    use base64::Engine;
    let enc = base64::engine::general_purpose::STANDARD.encode(data);
    let _ = tokend::transport::http::decode_basic(&format!("Basic {enc}"));
});
