//! Opaque handles (authorization codes, refresh tokens, login challenges):
//! 256 random bits, base64url, stored only as their SHA-256 so a store dump
//! reveals nothing redeemable.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use sha2::{Digest, Sha256};

/// A new random handle: `prefix` followed by 43 base64url characters.
pub fn generate(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("system RNG failed");
    let mut s = String::with_capacity(prefix.len() + 43);
    s.push_str(prefix);
    B64.encode_string(bytes, &mut s);
    s
}

/// A new 128-bit random id (JWT `jti`, grant family ids).
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("system RNG failed");
    B64.encode(bytes)
}

/// The store key material for a handle: hex SHA-256.
pub fn digest(handle: &str) -> String {
    hex(&Sha256::digest(handle.as_bytes()))
}

pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}
