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

/// A time-ordered id for a JWT `jti` at `unix_ms`: an RFC 9562 version 7
/// UUID (48-bit Unix milliseconds, then 74 random bits), in its usual
/// hyphenated form. Unique like any random id, and it lets the issuer read a
/// token's issue time to the millisecond back from a standard claim (bulk
/// revocation marks are milliseconds; see [`uuid_v7_ms`]) instead of adding a
/// private one. Written here rather than with the `uuid` crate: the bit layout
/// is ten lines, and the random bits come from the same RNG as every other
/// handle.
pub fn time_ordered_id(unix_ms: i64) -> String {
    let mut b = [0u8; 16];
    SystemRandom::new()
        .fill(&mut b[6..])
        .expect("system RNG failed");
    let ms = u64::try_from(unix_ms).unwrap_or(0) & 0xFFFF_FFFF_FFFF;
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    b[6] = 0x70 | (b[6] & 0x0F); // version 7
    b[8] = 0x80 | (b[8] & 0x3F); // RFC 9562 variant
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The Unix milliseconds of a [`time_ordered_id`], or `None` for anything
/// else (ids minted before tokend used them, or not ours).
pub fn uuid_v7_ms(id: &str) -> Option<i64> {
    let b = id.as_bytes();
    let shaped = b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        });
    if !shaped || b[14] != b'7' || !matches!(b[19], b'8' | b'9' | b'a' | b'b') {
        return None;
    }
    let ms =
        u64::from_str_radix(&id[..8], 16).ok()? << 16 | u64::from_str_radix(&id[9..13], 16).ok()?;
    i64::try_from(ms).ok()
}

/// A new 128-bit random id (grant family ids).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_ordered_ids_carry_their_millisecond() {
        for ms in [0, 1, 1_733_160_000_123, 0xFFFF_FFFF_FFFF] {
            let id = time_ordered_id(ms);
            assert_eq!(id.len(), 36, "{id}");
            assert_eq!(uuid_v7_ms(&id), Some(ms), "{id}");
        }
        assert_ne!(time_ordered_id(5), time_ordered_id(5), "random bits differ");
        // RFC 9562 appendix A.6 example value.
        assert_eq!(
            uuid_v7_ms("017f22e2-79b0-7cc3-98c4-dc0c0c07398f"),
            Some(0x017F22E279B0)
        );
        for other in [
            "",
            "j1",
            &random_id(),
            "017f22e2-79b0-4cc3-98c4-dc0c0c07398f", // version 4
            "017f22e2-79b0-7cc3-c8c4-dc0c0c07398f", // wrong variant
            "017F22E2-79B0-7CC3-98C4-DC0C0C07398F", // not our (lowercase) form
            "017f22e2x79b0-7cc3-98c4-dc0c0c07398f",
        ] {
            assert_eq!(uuid_v7_ms(other), None, "{other}");
        }
    }
}
