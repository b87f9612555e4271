//! JWT verification: never panics, never accepts anything not signed by the key.
#![no_main]
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use tokend::token::{Algorithm, KeySet, SigningKey, jwt};

static KEYS: LazyLock<KeySet> =
    LazyLock::new(|| KeySet::new(SigningKey::generate(Algorithm::ES256).unwrap(), vec![]));

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        assert!(jwt::verify(&KEYS, s, "https://tokend.test", 0, 30).is_err());
    }
});
