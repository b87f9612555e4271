//! Signing keys, parsed once at load and kept as aws-lc-rs key pairs.
//!
//! Why not let a JWT crate sign: jsonwebtoken re-parses the private key from its
//! DER bytes on every `encode` (measured: RS256 at 513 us per token against
//! 233 us for the bare aws-lc-rs signature). Signing is tokend's hot path, so the
//! key pair is parsed once here and [`SigningKey::sign`] calls aws-lc-rs
//! directly. Verification keys are likewise pre-parsed (`ParsedPublicKey`).
//!
//! A key's `kid` is its RFC 7638 JWK thumbprint, so it is stable across restarts
//! and replicas without configuration.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, bail};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, ParsedPublicKey, RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::sealed::{self, SealKey};

/// JWS algorithms tokend signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
pub enum Algorithm {
    RS256,
    ES256,
    EdDSA,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::ES256 => "ES256",
            Self::EdDSA => "EdDSA",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "RS256" => Some(Self::RS256),
            "ES256" => Some(Self::ES256),
            "EdDSA" | "Ed25519" => Some(Self::EdDSA),
            _ => None,
        }
    }

    pub const ALL: [Algorithm; 3] = [Self::RS256, Self::ES256, Self::EdDSA];
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

enum Pair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

/// A private key ready to sign, with its pre-encoded JWT header.
pub struct SigningKey {
    alg: Algorithm,
    kid: String,
    pair: Pair,
    /// base64url of `{"alg":..,"kid":..,"typ":"at+jwt"}`, computed once.
    header_b64: String,
    verify: VerifyKey,
    rng: SystemRandom,
    /// Seals login challenges (see [`crate::sealed`]), derived from the
    /// private key bytes so every replica loading this key derives it too.
    seal: SealKey,
}

/// A public key ready to verify, plus its JWK.
#[derive(Clone)]
pub struct VerifyKey {
    pub alg: Algorithm,
    pub kid: String,
    key: Arc<ParsedPublicKey>,
    pub jwk: serde_json::Value,
}

impl VerifyKey {
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.key.verify_sig(message, signature).is_ok()
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Parses a PKCS#8 (or, for RSA, PKCS#1) PEM for `alg`.
    pub fn from_pem(alg: Algorithm, pem_text: &[u8]) -> anyhow::Result<Self> {
        let block = pem::parse(pem_text).context("not a PEM file")?;
        let der = block.contents();
        let pair = match alg {
            Algorithm::RS256 => {
                let kp = RsaKeyPair::from_pkcs8(der)
                    .or_else(|_| RsaKeyPair::from_der(der))
                    .map_err(|e| anyhow::anyhow!("not an RSA private key ({e})"))?;
                if kp.public_modulus_len() < 256 {
                    bail!("RSA key is shorter than 2048 bits");
                }
                Pair::Rsa(kp)
            }
            Algorithm::ES256 => Pair::Ec(
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der)
                    .map_err(|e| anyhow::anyhow!("not a P-256 PKCS#8 private key ({e})"))?,
            ),
            Algorithm::EdDSA => Pair::Ed(
                Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                    .map_err(|e| anyhow::anyhow!("not an Ed25519 PKCS#8 private key ({e})"))?,
            ),
        };
        Self::from_pair(alg, pair, der)
    }

    /// Parses a private key PEM of any supported algorithm, which the key
    /// type decides (RSA: RS256, P-256: ES256, Ed25519: EdDSA): previous
    /// keys may be of another algorithm than the active one, so a move from
    /// RS256 to ES256 keeps the old tokens verifying through the overlap.
    pub fn from_pem_any(pem_text: &[u8]) -> anyhow::Result<Self> {
        let mut specific = None;
        for alg in Algorithm::ALL {
            match Self::from_pem(alg, pem_text) {
                Ok(k) => return Ok(k),
                // "not a PEM file" / "not an RSA private key": try the next;
                // anything else (a short RSA key) is this key's own problem.
                Err(e) if e.to_string().starts_with("not a") => {}
                Err(e) => specific = Some(e),
            }
        }
        Err(specific.unwrap_or_else(|| {
            anyhow::anyhow!(
                "not an RSA (PKCS#1 or PKCS#8), P-256 or Ed25519 (PKCS#8) private key PEM"
            )
        }))
    }

    /// A fresh random key (ephemeral keys and `tokend keygen`).
    pub fn generate(alg: Algorithm) -> anyhow::Result<Self> {
        Self::from_pem(alg, generate_pem(alg)?.as_bytes())
    }

    fn from_pair(alg: Algorithm, pair: Pair, secret: &[u8]) -> anyhow::Result<Self> {
        let (jwk_core, public, valg): (
            serde_json::Value,
            Vec<u8>,
            &'static dyn signature::VerificationAlgorithm,
        ) = match &pair {
            Pair::Rsa(kp) => {
                let pk = kp.public_key();
                let n = B64.encode(pk.modulus().big_endian_without_leading_zero());
                let e = B64.encode(pk.exponent().big_endian_without_leading_zero());
                (
                    json!({"e": e, "kty": "RSA", "n": n}),
                    pk.as_ref().to_vec(),
                    &signature::RSA_PKCS1_2048_8192_SHA256,
                )
            }
            Pair::Ec(kp) => {
                let point = kp.public_key().as_ref();
                if point.len() != 65 || point[0] != 4 {
                    bail!("unexpected P-256 public key encoding");
                }
                (
                    json!({"crv": "P-256", "kty": "EC", "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..])}),
                    point.to_vec(),
                    &signature::ECDSA_P256_SHA256_FIXED,
                )
            }
            Pair::Ed(kp) => {
                let x = kp.public_key().as_ref();
                (
                    json!({"crv": "Ed25519", "kty": "OKP", "x": B64.encode(x)}),
                    x.to_vec(),
                    &signature::ED25519,
                )
            }
        };
        let (jwk, kid) = signing_jwk(jwk_core, alg.as_str())?;
        let key = ParsedPublicKey::new(valg, &public)
            .map_err(|e| anyhow::anyhow!("public key rejected ({e})"))?;
        let header = json!({"alg": alg.as_str(), "kid": kid, "typ": "at+jwt"});
        Ok(Self {
            alg,
            header_b64: B64.encode(serde_json::to_vec(&header)?),
            verify: VerifyKey {
                alg,
                kid: kid.clone(),
                key: Arc::new(key),
                jwk,
            },
            seal: SealKey::derive(secret, &kid),
            kid,
            pair,
            rng: SystemRandom::new(),
        })
    }

    pub fn alg(&self) -> Algorithm {
        self.alg
    }
    pub fn kid(&self) -> &str {
        &self.kid
    }
    pub fn header_b64(&self) -> &str {
        &self.header_b64
    }
    pub fn verify_key(&self) -> &VerifyKey {
        &self.verify
    }

    /// Signs `message` (the JWS signing input) and returns the raw signature.
    pub fn sign(&self, message: &[u8]) -> anyhow::Result<Vec<u8>> {
        match &self.pair {
            Pair::Rsa(kp) => {
                let mut sig = vec![0; kp.public_modulus_len()];
                kp.sign(&signature::RSA_PKCS1_SHA256, &self.rng, message, &mut sig)
                    .map_err(|_| anyhow::anyhow!("RSA signing failed"))?;
                Ok(sig)
            }
            Pair::Ec(kp) => Ok(kp
                .sign(&self.rng, message)
                .map_err(|_| anyhow::anyhow!("ECDSA signing failed"))?
                .as_ref()
                .to_vec()),
            Pair::Ed(kp) => Ok(kp.sign(message).as_ref().to_vec()),
        }
    }
}

/// A public JWK from its required members (`jwk_core`): its RFC 7638
/// thumbprint as `kid`, `alg` and `use: sig` added. Returns the JWK and the
/// `kid`.
pub fn signing_jwk(
    jwk_core: serde_json::Value,
    alg: &str,
) -> anyhow::Result<(serde_json::Value, String)> {
    // RFC 7638: SHA-256 over the required members in lexicographic order,
    // no whitespace. serde_json's map is ordered (BTreeMap), which gives
    // exactly that serialisation.
    let kid = B64.encode(Sha256::digest(serde_json::to_vec(&jwk_core)?));
    let mut jwk = jwk_core;
    let obj = jwk
        .as_object_mut()
        .ok_or_else(|| anyhow::anyhow!("a JWK is an object"))?;
    obj.insert("kid".into(), kid.clone().into());
    obj.insert("alg".into(), alg.into());
    obj.insert("use".into(), "sig".into());
    Ok((jwk, kid))
}

/// Generates a PKCS#8 v1 PEM private key for `alg`. Ed25519 keys are written as
/// PKCS#8 v1 (seed only), the form OpenSSL writes and JWT libraries read.
pub fn generate_pem(alg: Algorithm) -> anyhow::Result<String> {
    let der: Vec<u8> = match alg {
        Algorithm::RS256 => {
            let kp = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(|_| anyhow::anyhow!("RSA key generation failed"))?;
            kp.as_der()
                .map_err(|_| anyhow::anyhow!("RSA key encoding failed"))?
                .as_ref()
                .to_vec()
        }
        Algorithm::ES256 => {
            let kp = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
                .map_err(|_| anyhow::anyhow!("P-256 key generation failed"))?;
            kp.to_pkcs8v1()
                .map_err(|_| anyhow::anyhow!("P-256 key encoding failed"))?
                .as_ref()
                .to_vec()
        }
        Algorithm::EdDSA => {
            let kp = Ed25519KeyPair::generate()
                .map_err(|_| anyhow::anyhow!("Ed25519 key generation failed"))?;
            kp.to_pkcs8v1()
                .map_err(|_| anyhow::anyhow!("Ed25519 key encoding failed"))?
                .as_ref()
                .to_vec()
        }
    };
    Ok(pem::encode(&pem::Pem::new("PRIVATE KEY", der)))
}

/// The active signing key plus every key that still verifies (the active one
/// and `previous_key_files`), and the JWKS document they make.
pub struct KeySet {
    active: SigningKey,
    verify: HashMap<String, VerifyKey>,
    jwks: serde_json::Value,
    /// The sealing keys of every key that verifies (the active one first).
    seal: Vec<SealKey>,
}

impl KeySet {
    pub fn new(active: SigningKey, previous: Vec<SigningKey>) -> Self {
        let mut verify = HashMap::new();
        let mut keys = vec![active.verify.jwk.clone()];
        verify.insert(active.kid.clone(), active.verify.clone());
        let mut seal = Vec::new();
        for k in previous {
            if verify.contains_key(&k.kid) {
                continue;
            }
            keys.push(k.verify.jwk.clone());
            verify.insert(k.kid.clone(), k.verify.clone());
            seal.push(k.seal);
        }
        Self {
            active,
            verify,
            jwks: json!({ "keys": keys }),
            seal,
        }
    }

    /// Encrypts and authenticates `plaintext` under the active key (a login
    /// challenge; see [`crate::sealed`]). `None` only if the system's random
    /// source fails.
    pub fn seal(&self, plaintext: &[u8]) -> Option<String> {
        self.active.seal.seal(plaintext)
    }

    /// Opens what [`KeySet::seal`] made under any key of this set; `None` for
    /// anything else (tampered, forged, or sealed under a key since dropped).
    pub fn open(&self, sealed: &str) -> Option<Vec<u8>> {
        sealed::open(std::iter::once(&self.active.seal).chain(&self.seal), sealed)
    }

    pub fn active(&self) -> &SigningKey {
        &self.active
    }

    pub fn verify_key(&self, kid: &str) -> Option<&VerifyKey> {
        self.verify.get(kid)
    }

    /// The RFC 7517 JWK Set served at `/.well-known/jwks.json`.
    pub fn jwks(&self) -> &serde_json::Value {
        &self.jwks
    }

    /// Algorithms of every key that verifies (for discovery metadata).
    pub fn algorithms(&self) -> Vec<&'static str> {
        let mut algs: Vec<_> = self.verify.values().map(|k| k.alg.as_str()).collect();
        algs.sort_unstable();
        algs.dedup();
        algs
    }
}

/// Finds the key that verifies a token by the `kid` of its header: the
/// server's own [`KeySet`] and a resource server's [`JwkSet`] alike, so both
/// verify through the one strict path of [`crate::jwt::verify_signature_with`].
pub trait KeyLookup {
    fn verify_key(&self, kid: &str) -> Option<&VerifyKey>;
}

impl KeyLookup for KeySet {
    fn verify_key(&self, kid: &str) -> Option<&VerifyKey> {
        self.verify.get(kid)
    }
}

impl<T: KeyLookup + ?Sized> KeyLookup for Arc<T> {
    fn verify_key(&self, kid: &str) -> Option<&VerifyKey> {
        (**self).verify_key(kid)
    }
}

/// The public keys of an RFC 7517 JWK Set (what a resource server fetches
/// from `/.well-known/jwks.json`), each pre-parsed and pinned to one
/// algorithm.
///
/// Strict by construction, so a verifier cannot be talked into a weaker
/// check: a key's algorithm comes from its type (RSA: RS256, EC P-256: ES256,
/// OKP Ed25519: EdDSA) and an `alg` member that names anything else drops the
/// key; symmetric keys (`kty: oct`) are never accepted, so HMAC with a public
/// key as the secret cannot match; keys whose `use` is not `sig`, keys without
/// a `kid`, RSA keys under 2048 bits, malformed keys and a second key with
/// the same `kid` are skipped (counted in [`JwkSet::skipped`]), so one odd key
/// does not hide the others.
#[derive(Clone, Default)]
pub struct JwkSet {
    keys: HashMap<String, VerifyKey>,
    skipped: Vec<String>,
}

impl std::fmt::Debug for JwkSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kids: Vec<_> = self.keys.keys().collect();
        kids.sort();
        f.debug_struct("JwkSet")
            .field("kids", &kids)
            .field("skipped", &self.skipped)
            .finish()
    }
}

impl KeyLookup for JwkSet {
    fn verify_key(&self, kid: &str) -> Option<&VerifyKey> {
        self.keys.get(kid)
    }
}

impl JwkSet {
    /// Parses a JWK Set document. Fails only when the document is not a JSON
    /// object with a `keys` array; individual keys that do not qualify are
    /// skipped (see the type's documentation).
    pub fn from_json(doc: &[u8]) -> anyhow::Result<Self> {
        let doc: serde_json::Value = serde_json::from_slice(doc).context("JWKS is not JSON")?;
        let keys = doc
            .get("keys")
            .and_then(serde_json::Value::as_array)
            .context("JWKS has no \"keys\" array")?;
        let mut set = Self::default();
        for jwk in keys {
            match VerifyKey::from_jwk(jwk) {
                Ok(k) if set.keys.contains_key(&k.kid) => {
                    set.skipped.push(format!("{}: duplicate kid", k.kid))
                }
                Ok(k) => {
                    set.keys.insert(k.kid.clone(), k);
                }
                Err(e) => {
                    let kid = jwk.get("kid").and_then(|v| v.as_str()).unwrap_or("?");
                    set.skipped.push(format!("{kid}: {e}"));
                }
            }
        }
        Ok(set)
    }

    /// The key ids that verify.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Why keys of the document were left out (`"kid: reason"`).
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }
}

impl VerifyKey {
    /// One public JWK, pinned to its algorithm (see [`JwkSet`]).
    pub fn from_jwk(jwk: &serde_json::Value) -> anyhow::Result<Self> {
        let member = |name: &str| jwk.get(name).and_then(serde_json::Value::as_str);
        let b64 = |name: &str| -> anyhow::Result<Vec<u8>> {
            B64.decode(member(name).with_context(|| format!("no \"{name}\""))?)
                .with_context(|| format!("\"{name}\" is not base64url"))
        };
        let kid = member("kid").context("no kid")?.to_owned();
        if let Some(u) = jwk.get("use")
            && u.as_str() != Some("sig")
        {
            bail!("not a signing key (use {u})");
        }
        let kty = member("kty").context("no kty")?;
        let alg = match kty {
            "RSA" => Algorithm::RS256,
            "EC" if member("crv") == Some("P-256") => Algorithm::ES256,
            "OKP" if member("crv") == Some("Ed25519") => Algorithm::EdDSA,
            "oct" => bail!("symmetric keys are never accepted"),
            other => bail!("unsupported key type {other} (crv {:?})", member("crv")),
        };
        if let Some(a) = jwk.get("alg")
            && a.as_str().and_then(Algorithm::parse) != Some(alg)
        {
            bail!("alg {a} is not {alg} for a {kty} key");
        }
        let (valg, kind): (&'static dyn signature::VerificationAlgorithm, _) = match alg {
            Algorithm::RS256 => (&signature::RSA_PKCS1_2048_8192_SHA256, JwkKind::Rsa),
            Algorithm::ES256 => (&signature::ECDSA_P256_SHA256_FIXED, JwkKind::P256),
            Algorithm::EdDSA => (&signature::ED25519, JwkKind::Ed25519),
        };
        Ok(Self {
            alg,
            kid,
            key: Arc::new(jwk_public(kind, valg, &b64)?),
            jwk: jwk.clone(),
        })
    }
}

/// The public-key shapes a JWK may have.
#[derive(Clone, Copy)]
pub(crate) enum JwkKind {
    Rsa,
    P256,
    Ed25519,
}

/// A JWK's public key, parsed for `valg`: from the DER of `n`/`e` for RSA
/// (at least 2048 bits), the uncompressed point of `x`/`y` for P-256, `x`
/// for Ed25519. `b64` reads one base64url member.
pub(crate) fn jwk_public(
    kind: JwkKind,
    valg: &'static dyn signature::VerificationAlgorithm,
    b64: &dyn Fn(&str) -> anyhow::Result<Vec<u8>>,
) -> anyhow::Result<ParsedPublicKey> {
    let public = jwk_public_bytes(kind, b64)?;
    ParsedPublicKey::new(valg, &public).map_err(|e| anyhow::anyhow!("public key rejected ({e})"))
}

pub(crate) fn jwk_public_bytes(
    kind: JwkKind,
    b64: &dyn Fn(&str) -> anyhow::Result<Vec<u8>>,
) -> anyhow::Result<Vec<u8>> {
    match kind {
        JwkKind::Rsa => {
            let (n, e) = (b64("n")?, b64("e")?);
            if strip_zeros(&n).len() < 256 {
                bail!("RSA key is shorter than 2048 bits");
            }
            Ok(rsa_public_der(&n, &e))
        }
        JwkKind::P256 => {
            let (x, y) = (b64("x")?, b64("y")?);
            if x.len() != 32 || y.len() != 32 {
                bail!("P-256 coordinates are not 32 bytes");
            }
            let mut point = vec![4];
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            Ok(point)
        }
        JwkKind::Ed25519 => {
            let x = b64("x")?;
            if x.len() != 32 {
                bail!("Ed25519 key is not 32 bytes");
            }
            Ok(x)
        }
    }
}

pub(crate) fn strip_zeros(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[start..]
}

/// PKCS#1 `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`
/// in DER: what aws-lc-rs parses for RSA verification.
pub(crate) fn rsa_public_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    fn push_len(out: &mut Vec<u8>, len: usize) {
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|&&b| b == 0).count();
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend_from_slice(&bytes[skip..]);
        }
    }
    fn integer(out: &mut Vec<u8>, v: &[u8]) {
        let v = strip_zeros(v);
        let pad = v.first().is_none_or(|&b| b & 0x80 != 0);
        out.push(0x02);
        push_len(out, v.len() + usize::from(pad));
        if pad {
            out.push(0);
        }
        out.extend_from_slice(v);
    }
    let mut body = Vec::with_capacity(n.len() + e.len() + 16);
    integer(&mut body, n);
    integer(&mut body, e);
    let mut out = Vec::with_capacity(body.len() + 4);
    out.push(0x30);
    push_len(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip_and_kid_is_stable() {
        for alg in Algorithm::ALL {
            let pem_text = generate_pem(alg).unwrap();
            let a = SigningKey::from_pem(alg, pem_text.as_bytes()).unwrap();
            let b = SigningKey::from_pem(alg, pem_text.as_bytes()).unwrap();
            assert_eq!(a.kid(), b.kid(), "{alg}");
            let sig = a.sign(b"hello").unwrap();
            assert!(b.verify_key().verify(b"hello", &sig), "{alg}");
            assert!(!b.verify_key().verify(b"hellp", &sig), "{alg}");
        }
    }

    #[test]
    fn sealed_blobs_survive_a_rotation_and_need_the_same_key_material() {
        let old_pem = generate_pem(Algorithm::ES256).unwrap();
        let new_pem = generate_pem(Algorithm::EdDSA).unwrap();
        let key = |pem: &str, alg| SigningKey::from_pem(alg, pem.as_bytes()).unwrap();
        let before = KeySet::new(key(&old_pem, Algorithm::ES256), vec![]);
        let sealed = before.seal(b"pending").unwrap();
        // Another replica loading the same file opens it.
        let replica = KeySet::new(key(&old_pem, Algorithm::ES256), vec![]);
        assert_eq!(replica.open(&sealed).as_deref(), Some(&b"pending"[..]));
        // Rotated: the old key is previous, still opens; new blobs use the new key.
        let rotated = KeySet::new(
            key(&new_pem, Algorithm::EdDSA),
            vec![key(&old_pem, Algorithm::ES256)],
        );
        assert_eq!(rotated.open(&sealed).as_deref(), Some(&b"pending"[..]));
        assert_eq!(before.open(&rotated.seal(b"x").unwrap()), None);
        // Dropped: refused.
        let dropped = KeySet::new(key(&new_pem, Algorithm::EdDSA), vec![]);
        assert_eq!(dropped.open(&sealed), None);
        // Another deployment's key of the same algorithm: refused.
        let other = KeySet::new(SigningKey::generate(Algorithm::ES256).unwrap(), vec![]);
        assert_eq!(other.open(&sealed), None);
    }

    #[test]
    fn any_algorithm_is_detected_from_the_key() {
        for alg in Algorithm::ALL {
            let pem_text = generate_pem(alg).unwrap();
            let k = SigningKey::from_pem_any(pem_text.as_bytes()).unwrap();
            assert_eq!(k.alg(), alg);
        }
        let err = SigningKey::from_pem_any(b"garbage")
            .unwrap_err()
            .to_string();
        assert!(err.contains("private key PEM"), "{err}");
    }

    #[test]
    fn wrong_algorithm_for_key_is_rejected() {
        let ed = generate_pem(Algorithm::EdDSA).unwrap();
        assert!(SigningKey::from_pem(Algorithm::RS256, ed.as_bytes()).is_err());
        assert!(SigningKey::from_pem(Algorithm::ES256, ed.as_bytes()).is_err());
        assert!(SigningKey::from_pem(Algorithm::EdDSA, b"garbage").is_err());
    }

    #[test]
    fn a_jwks_verifies_what_its_keys_signed_and_nothing_else() {
        let signers: Vec<SigningKey> = Algorithm::ALL
            .iter()
            .map(|a| SigningKey::generate(*a).unwrap())
            .collect();
        let mut jwks =
            json!({"keys": signers.iter().map(|k| k.verify_key().jwk.clone()).collect::<Vec<_>>()});
        let set = JwkSet::from_json(jwks.to_string().as_bytes()).unwrap();
        assert_eq!(set.len(), 3, "{set:?}");
        for k in &signers {
            let sig = k.sign(b"message").unwrap();
            let vk = set.verify_key(k.kid()).unwrap();
            assert_eq!(vk.alg, k.alg());
            assert!(vk.verify(b"message", &sig), "{}", k.alg());
            assert!(!vk.verify(b"messagf", &sig), "{}", k.alg());
        }
        // Keys that must never verify, or that are not ours to judge.
        let keys = jwks["keys"].as_array_mut().unwrap();
        let rsa = keys[0].clone();
        let mut hs = json!({"kty": "oct", "kid": "h", "k": "c2VjcmV0", "alg": "HS256"});
        keys.push(hs.take());
        let mut enc = rsa.clone();
        enc["kid"] = "enc".into();
        enc["use"] = "enc".into();
        keys.push(enc);
        let mut ps = rsa.clone();
        ps["kid"] = "ps".into();
        ps["alg"] = "PS256".into();
        keys.push(ps);
        let mut mislabeled = keys[1].clone();
        mislabeled["kid"] = "ec-as-rsa".into();
        mislabeled["alg"] = "RS256".into();
        keys.push(mislabeled);
        let mut dup = keys[1].clone();
        dup["kid"] = rsa["kid"].clone();
        keys.push(dup);
        let mut short = rsa.clone();
        short["kid"] = "short".into();
        short["n"] = B64.encode([0xC5u8; 128]).into();
        keys.push(short);
        let mut no_kid = rsa.clone();
        no_kid.as_object_mut().unwrap().remove("kid");
        keys.push(no_kid);
        let set = JwkSet::from_json(jwks.to_string().as_bytes()).unwrap();
        assert_eq!(set.len(), 3, "{set:?}");
        assert_eq!(set.skipped().len(), 7, "{set:?}");
        assert_eq!(
            set.verify_key(signers[0].kid()).unwrap().alg,
            Algorithm::RS256
        );
        assert!(JwkSet::from_json(b"{}").is_err());
        assert!(JwkSet::from_json(b"[").is_err());
    }

    #[test]
    fn rsa_der_pads_an_integer_with_its_top_bit_set() {
        // A short integer with the top bit set gets its 0x00 pad.
        let der = rsa_public_der(&[0x80], &[1, 0, 1]);
        assert_eq!(
            der,
            [0x30, 0x09, 0x02, 0x02, 0x00, 0x80, 0x02, 0x03, 1, 0, 1]
        );
    }
}
