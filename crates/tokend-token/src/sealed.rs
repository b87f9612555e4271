//! Sealed blobs: data tokend hands out and must get back unchanged, such as
//! the pending authorization request inside a login challenge, encrypted and
//! authenticated so that holding one costs the server no storage.
//!
//! Why: an unauthenticated `GET /oauth/authorize` used to park ~2.7 KB in the
//! store for 600 s per call, with no limit; a flood made a Redis with an
//! evicting policy drop revocation keys (issue 14). A sealed challenge carries
//! the request itself, so the authorization endpoint writes nothing.
//!
//! Keys: replicas must open each other's blobs, so the sealing key is derived
//! (HKDF-SHA256) from the private key bytes of each signing key, which every
//! replica already shares, with a fixed label: no new secret to configure or
//! rotate. Every key of the set (the active one and `previous_key_files`)
//! opens; the active one seals, so a rotation does not break blobs in flight.
//!
//! Format, base64url without padding:
//! `version (1) | key id (4) | salt (16) | AES-256-GCM ciphertext | tag (16)`.
//! The key id is the first 4 bytes of SHA-256 over the key's public `kid`
//! (it tells which key to try; it reveals nothing the JWKS does not). Each
//! blob is encrypted under its own key, HKDF-expanded from the signing key's
//! secret and the blob's random salt, so nonces never repeat under one key
//! however many blobs are sealed (a 96-bit random nonce would wear out after
//! about 2^32 blobs); the nonce is then fixed. The header is the AAD.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, Prk, Salt};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use sha2::{Digest, Sha256};

/// Format version (first byte).
const VERSION: u8 = 1;
/// HKDF label: a blob sealed for another purpose or format never opens here.
const LABEL: &[u8] = b"tokend login challenge v1";
const ID_LEN: usize = 4;
const SALT_LEN: usize = 16;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + ID_LEN + SALT_LEN;
/// Longest blob [`SealKey::open`] looks at (base64 characters): anything
/// longer was not made by tokend.
pub const MAX_SEALED_LEN: usize = 8192;

/// The sealing secret of one signing key.
pub struct SealKey {
    id: [u8; ID_LEN],
    prk: Prk,
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl SealKey {
    /// Derives the sealing secret from a signing key's private key bytes
    /// (`secret`) and its public `kid`.
    pub fn derive(secret: &[u8], kid: &str) -> Self {
        let prk = Salt::new(HKDF_SHA256, LABEL).extract(secret);
        let digest = Sha256::digest(kid.as_bytes());
        let mut id = [0u8; ID_LEN];
        id.copy_from_slice(&digest[..ID_LEN]);
        Self { id, prk }
    }

    fn blob_key(&self, salt: &[u8]) -> Option<LessSafeKey> {
        let info = [LABEL, salt];
        let okm = self.prk.expand(&info, &AES_256_GCM).ok()?;
        Some(LessSafeKey::new(UnboundKey::from(okm)))
    }

    /// Encrypts and authenticates `plaintext`; base64url text.
    pub fn seal(&self, plaintext: &[u8]) -> Option<String> {
        let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
        out.push(VERSION);
        out.extend_from_slice(&self.id);
        let mut salt = [0u8; SALT_LEN];
        SystemRandom::new().fill(&mut salt).ok()?;
        out.extend_from_slice(&salt);
        let key = self.blob_key(&salt)?;
        let mut body = plaintext.to_vec();
        let nonce = Nonce::assume_unique_for_key([0u8; NONCE_LEN]);
        key.seal_in_place_append_tag(nonce, Aad::from(&out[..]), &mut body)
            .ok()?;
        out.extend_from_slice(&body);
        Some(B64.encode(out))
    }

    /// The key id a sealed blob names, when it is well formed.
    fn named_id(raw: &[u8]) -> Option<[u8; ID_LEN]> {
        if raw.len() < HEADER_LEN + TAG_LEN || raw[0] != VERSION {
            return None;
        }
        raw[1..=ID_LEN].try_into().ok()
    }

    fn open_raw(&self, raw: &[u8]) -> Option<Vec<u8>> {
        let (header, body) = raw.split_at(HEADER_LEN);
        let key = self.blob_key(&header[1 + ID_LEN..])?;
        let mut body = body.to_vec();
        let nonce = Nonce::assume_unique_for_key([0u8; NONCE_LEN]);
        let len = key
            .open_in_place(nonce, Aad::from(header), &mut body)
            .ok()?
            .len();
        body.truncate(len);
        Some(body)
    }
}

/// Opens `sealed` with whichever of `keys` it names; `None` for anything
/// malformed, tampered with or sealed under a key not in `keys`.
pub fn open<'a>(keys: impl IntoIterator<Item = &'a SealKey>, sealed: &str) -> Option<Vec<u8>> {
    if sealed.len() > MAX_SEALED_LEN {
        return None;
    }
    let raw = B64.decode(sealed).ok()?;
    let id = SealKey::named_id(&raw)?;
    keys.into_iter()
        .filter(|k| k.id == id)
        .find_map(|k| k.open_raw(&raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_open_only_unchanged_and_under_a_known_key() {
        let a = SealKey::derive(b"secret a", "kid-a");
        let b = SealKey::derive(b"secret b", "kid-b");
        let same_kid_other_secret = SealKey::derive(b"secret c", "kid-a");
        let s = a.seal(b"hello").unwrap();
        assert_eq!(open([&a], &s).as_deref(), Some(&b"hello"[..]));
        assert_eq!(open([&b, &a], &s).as_deref(), Some(&b"hello"[..]));
        assert_eq!(open([&b], &s), None);
        assert_eq!(open([&same_kid_other_secret], &s), None);
        // Two seals of the same text differ (fresh salt).
        assert_ne!(a.seal(b"hello").unwrap(), s);
        // Every single-bit flip of the blob is refused.
        let raw = B64.decode(&s).unwrap();
        for i in 0..raw.len() {
            for bit in 0..8 {
                let mut t = raw.clone();
                t[i] ^= 1 << bit;
                assert_eq!(open([&a], &B64.encode(&t)), None, "byte {i} bit {bit}");
            }
        }
        // One blob, one text: no other last character (trailing bits)
        // decodes to it, so the answered-marker's hash of the text is unique.
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for c in alphabet.chars() {
            let t = format!("{}{c}", &s[..s.len() - 1]);
            if t != s {
                assert_eq!(open([&a], &t), None, "{t}");
            }
        }
        assert_eq!(open([&a], "not base64 !"), None);
        assert_eq!(open([&a], ""), None);
        assert_eq!(open([&a], &"A".repeat(MAX_SEALED_LEN + 4)), None);
    }
}
