//! JWT client assertions (RFC 7523 2.2, RFC 7521): the keys a client
//! registers (a JWK Set) and the strict verification of what it signs.
//!
//! Deliberately separate from [`crate::jwt`] (tokend's own access tokens):
//! an assertion is signed by someone else, often carries no `kid`, and may
//! use PS256. What stays the same is the strictness. The algorithm is pinned
//! by the registered key (an RSA key is RS256 unless its JWK says PS256), so
//! `none` and HMAC-with-the-public-key cannot match; `typ`, when present,
//! must be `JWT` (an access token, `at+jwt`, is not an assertion); at most
//! [`MAX_KEYS_TRIED`] signature checks per assertion; and the assertion is at
//! most [`MAX_ASSERTION_LEN`] bytes.
//!
//! [`verify_assertion`] checks signature and claims against [`Expected`]
//! (issuer, subject, audiences, clock, lifetime). It does no I/O: single use
//! of the `jti` is the caller's job (tokend-core records it in the store), so
//! the same function serves any caller that verifies an assertion against a
//! key set: client authentication today, a trusted issuer's JWKS tomorrow.

use std::sync::Arc;

use anyhow::{Context, bail};
use aws_lc_rs::signature::{self, ParsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Deserializer};

use crate::keys::{JwkKind, jwk_public, jwk_public_bytes};

/// Longest assertion accepted (authlib's RS256 assertions are under 1 KiB).
pub const MAX_ASSERTION_LEN: usize = 8 * 1024;

/// Most signature checks one assertion may cost (keys without a matching
/// `kid` are tried in turn).
pub const MAX_KEYS_TRIED: usize = 8;

/// Most keys one client may register.
pub const MAX_KEYS: usize = 16;

/// Most keys kept from a trusted issuer's fetched JWK Set.
pub const MAX_FETCHED_KEYS: usize = 32;

/// Longest `jti` accepted.
pub const MAX_JTI_LEN: usize = 256;

/// RFC 7523 2.2's `client_assertion_type`.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// JWS algorithms an assertion may use (discovery lists them in this order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AssertionAlg {
    RS256,
    ES256,
    EdDSA,
    PS256,
}

impl AssertionAlg {
    pub const ALL: [AssertionAlg; 4] = [Self::RS256, Self::ES256, Self::EdDSA, Self::PS256];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::ES256 => "ES256",
            Self::EdDSA => "EdDSA",
            Self::PS256 => "PS256",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// One registered public key, pinned to one algorithm.
#[derive(Clone)]
pub struct AssertionKey {
    pub alg: AssertionAlg,
    pub kid: Option<String>,
    key: Arc<ParsedPublicKey>,
    /// The public key as an X.509 `subjectPublicKey` holds it: PKCS#1
    /// `RSAPublicKey` DER, the uncompressed P-256 point, or the 32 Ed25519
    /// bytes (RFC 8705 `self_signed_tls_client_auth` compares these).
    public: Arc<[u8]>,
}

impl std::fmt::Debug for AssertionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssertionKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl AssertionKey {
    /// One public JWK. Strict: anything tokend would not verify with is an
    /// error (the operator registered it, so check-config says why).
    pub fn from_jwk(jwk: &serde_json::Value) -> anyhow::Result<Self> {
        let obj = jwk.as_object().context("a key must be a JSON object")?;
        let member = |name: &str| obj.get(name).and_then(serde_json::Value::as_str);
        let b64 = |name: &str| -> anyhow::Result<Vec<u8>> {
            B64.decode(member(name).with_context(|| format!("no \"{name}\""))?)
                .with_context(|| format!("\"{name}\" is not base64url"))
        };
        let kid = match obj.get("kid") {
            None => None,
            Some(serde_json::Value::String(k)) if !k.is_empty() && k.len() <= 256 => {
                Some(k.clone())
            }
            Some(_) => bail!("kid must be a non-empty string"),
        };
        if obj.contains_key("d") {
            bail!("this is a private key: register only the public key");
        }
        if let Some(u) = obj.get("use")
            && u.as_str() != Some("sig")
        {
            bail!("not a signing key (use {u})");
        }
        let alg_member = match obj.get("alg") {
            None => None,
            Some(serde_json::Value::String(a)) => Some(a.as_str()),
            Some(_) => bail!("alg must be a string"),
        };
        let kty = member("kty").context("no kty")?;
        let alg = match (kty, alg_member) {
            ("RSA", None | Some("RS256")) => AssertionAlg::RS256,
            ("RSA", Some("PS256")) => AssertionAlg::PS256,
            ("EC", None | Some("ES256")) if member("crv") == Some("P-256") => AssertionAlg::ES256,
            ("OKP", None | Some("EdDSA")) if member("crv") == Some("Ed25519") => {
                AssertionAlg::EdDSA
            }
            ("oct", _) => bail!("symmetric keys are never accepted"),
            (kty, Some(a)) => bail!(
                "alg {a} is not accepted for a {kty} key (RS256, PS256, ES256 with P-256, EdDSA with Ed25519)"
            ),
            (kty, None) => bail!("unsupported key type {kty} (crv {:?})", member("crv")),
        };
        let (valg, kind): (&'static dyn signature::VerificationAlgorithm, _) = match alg {
            AssertionAlg::RS256 => (&signature::RSA_PKCS1_2048_8192_SHA256, JwkKind::Rsa),
            AssertionAlg::PS256 => (&signature::RSA_PSS_2048_8192_SHA256, JwkKind::Rsa),
            AssertionAlg::ES256 => (&signature::ECDSA_P256_SHA256_FIXED, JwkKind::P256),
            AssertionAlg::EdDSA => (&signature::ED25519, JwkKind::Ed25519),
        };
        Ok(Self {
            alg,
            kid,
            key: Arc::new(jwk_public(kind, valg, &b64)?),
            public: jwk_public_bytes(kind, &b64)?.into(),
        })
    }

    /// The key's `subjectPublicKey` bytes (see the field).
    pub fn public_key_bytes(&self) -> &[u8] {
        &self.public
    }

    fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        self.key.verify_sig(message, sig).is_ok()
    }
}

/// The keys one client (or, later, one trusted issuer) signs with.
#[derive(Clone, Debug, Default)]
pub struct AssertionKeys {
    keys: Vec<AssertionKey>,
}

impl AssertionKeys {
    /// Parses a JWK Set (`{"keys": [...]}`). Every key must qualify; the
    /// errors name each key that does not.
    pub fn from_jwks(doc: &serde_json::Value) -> Result<Self, Vec<String>> {
        let Some(keys) = doc.get("keys").and_then(serde_json::Value::as_array) else {
            return Err(vec!["a JWK Set is an object with a \"keys\" array".into()]);
        };
        if keys.is_empty() {
            return Err(vec!["the JWK Set has no keys".into()]);
        }
        if keys.len() > MAX_KEYS {
            return Err(vec![format!("at most {MAX_KEYS} keys per client")]);
        }
        let mut out = Vec::new();
        let mut errs = Vec::new();
        for (i, jwk) in keys.iter().enumerate() {
            match AssertionKey::from_jwk(jwk) {
                Ok(k) => {
                    if k.kid.is_some() && out.iter().any(|o: &AssertionKey| o.kid == k.kid) {
                        errs.push(format!("keys[{i}]: duplicate kid"));
                    }
                    out.push(k);
                }
                Err(e) => errs.push(format!("keys[{i}]: {e}")),
            }
        }
        if errs.is_empty() {
            Ok(Self { keys: out })
        } else {
            Err(errs)
        }
    }

    /// A JWK Set fetched from a trusted issuer (its `jwks_uri`): lenient
    /// where [`AssertionKeys::from_jwks`] is strict, since the operator does
    /// not choose what an issuer publishes. Keys tokend cannot verify with
    /// (encryption keys, other curves) are skipped and named in the second
    /// value; at most [`MAX_FETCHED_KEYS`] keys are kept. An error when no
    /// usable key is left.
    pub fn from_fetched_jwks(doc: &serde_json::Value) -> Result<(Self, Vec<String>), String> {
        let Some(keys) = doc.get("keys").and_then(serde_json::Value::as_array) else {
            return Err("a JWK Set is an object with a \"keys\" array".into());
        };
        let mut out: Vec<AssertionKey> = Vec::new();
        let mut skipped = Vec::new();
        for (i, jwk) in keys.iter().enumerate() {
            match AssertionKey::from_jwk(jwk) {
                Ok(_) if out.len() >= MAX_FETCHED_KEYS => {
                    skipped.push(format!("keys[{i}]: more than {MAX_FETCHED_KEYS} keys"));
                }
                Ok(k) if k.kid.is_some() && out.iter().any(|o| o.kid == k.kid) => {
                    skipped.push(format!("keys[{i}]: duplicate kid"));
                }
                Ok(k) => out.push(k),
                Err(e) => skipped.push(format!("keys[{i}]: {e}")),
            }
        }
        if out.is_empty() {
            return Err("the JWK Set has no usable signing key".into());
        }
        Ok((Self { keys: out }, skipped))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether a key has this `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// The key ids, in order (logs of a JWKS change).
    pub fn kids(&self) -> Vec<&str> {
        self.keys.iter().filter_map(|k| k.kid.as_deref()).collect()
    }

    /// The registered keys, in order.
    pub fn iter(&self) -> impl Iterator<Item = &AssertionKey> {
        self.keys.iter()
    }

    /// The keys to try for a header's `alg` and `kid`: the key with that
    /// `kid` when there is one, else every key of that algorithm (clients
    /// such as authlib send no `kid`), at most [`MAX_KEYS_TRIED`].
    fn candidates(&self, alg: AssertionAlg, kid: Option<&str>) -> Vec<&AssertionKey> {
        let of_alg = || self.keys.iter().filter(move |k| k.alg == alg);
        if let Some(kid) = kid {
            let named: Vec<_> = of_alg().filter(|k| k.kid.as_deref() == Some(kid)).collect();
            if !named.is_empty() {
                return named;
            }
        }
        of_alg().take(MAX_KEYS_TRIED).collect()
    }
}

/// What a verified assertion must say.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    /// `iss` (for client authentication: the client_id).
    pub issuer: &'a str,
    /// `sub` (for client authentication: the client_id).
    pub subject: &'a str,
    /// `aud` must name one of these.
    pub audiences: &'a [String],
    /// Unix seconds.
    pub now: i64,
    pub leeway: i64,
    /// Longest lifetime (`exp - iat`, or `exp - now` without `iat`).
    pub max_lifetime: i64,
    /// Whether a `jti` is required: the caller records it for single use
    /// (client assertions, RFC 7523 3). A federated workload token that is
    /// presented many times (a Kubernetes projected token) need not carry
    /// one; a `jti` it does carry is still checked for size.
    pub require_jti: bool,
}

/// The claims of a verified assertion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssertionClaims {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: Option<i64>,
    pub nbf: Option<i64>,
    /// Always `Some` when [`Expected::require_jti`].
    pub jti: Option<String>,
}

/// Why an assertion was refused. Callers answer `invalid_client` for all of
/// them; the variants exist for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    #[error("assertion too large")]
    TooLarge,
    #[error("malformed assertion")]
    Malformed,
    #[error("algorithm not accepted")]
    Algorithm,
    #[error("wrong typ")]
    WrongType,
    #[error("no registered key for the algorithm")]
    NoKey,
    #[error("bad signature")]
    BadSignature,
    #[error("wrong issuer or subject")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
    #[error("no exp")]
    NoExpiry,
    #[error("expired")]
    Expired,
    #[error("lifetime above the maximum")]
    TooLong,
    #[error("not yet valid")]
    NotYetValid,
    #[error("missing or oversized jti")]
    BadJti,
}

impl AssertionError {
    /// A short reason for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooLarge => "too large",
            Self::Malformed => "malformed",
            Self::Algorithm => "algorithm not accepted",
            Self::WrongType => "wrong typ",
            Self::NoKey => "no registered key for the algorithm",
            Self::BadSignature => "bad signature",
            Self::WrongIssuer => "wrong iss or sub",
            Self::WrongAudience => "wrong aud",
            Self::NoExpiry => "no exp",
            Self::Expired => "expired",
            Self::TooLong => "lifetime above the maximum",
            Self::NotYetValid => "not yet valid",
            Self::BadJti => "missing or oversized jti",
        }
    }
}

#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default, deserialize_with = "de_aud")]
    aud: Vec<String>,
    #[serde(default, deserialize_with = "de_time")]
    exp: Option<i64>,
    #[serde(default, deserialize_with = "de_time")]
    iat: Option<i64>,
    #[serde(default, deserialize_with = "de_time")]
    nbf: Option<i64>,
    #[serde(default)]
    jti: Option<String>,
}

fn de_aud<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Aud {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Aud::deserialize(d)? {
        Aud::One(s) => vec![s],
        Aud::Many(v) => v,
    })
}

/// NumericDate: an integer or a float (RFC 7519 allows fractions).
fn de_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    n.as_i64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && f.abs() < 1e15)
                .map(|f| f.floor() as i64)
        })
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom("not a NumericDate"))
}

/// The three parts of a compact JWS, checked for shape and size.
fn split(token: &str) -> Result<(&str, &str, &str), AssertionError> {
    if token.len() > MAX_ASSERTION_LEN {
        return Err(AssertionError::TooLarge);
    }
    let (signing_input, sig) = token.rsplit_once('.').ok_or(AssertionError::Malformed)?;
    let (header, payload) = signing_input
        .split_once('.')
        .ok_or(AssertionError::Malformed)?;
    if payload.contains('.') || header.is_empty() || payload.is_empty() {
        return Err(AssertionError::Malformed);
    }
    Ok((header, payload, sig))
}

fn claims_of(payload_b64: &str) -> Result<RawClaims, AssertionError> {
    let payload = B64
        .decode(payload_b64)
        .map_err(|_| AssertionError::Malformed)?;
    serde_json::from_slice(&payload).map_err(|_| AssertionError::Malformed)
}

/// The `iss` and `sub` of an assertion, **unverified**: only to find which
/// client's keys to verify it with (the assertion names its client; RFC 7523
/// 3 makes `client_id` optional). `None` for anything malformed or too large.
pub fn peek_issuer_subject(token: &str) -> Option<(String, String)> {
    let (_, payload, _) = split(token).ok()?;
    let c = claims_of(payload).ok()?;
    Some((c.iss?, c.sub?))
}

/// The `kid` of an assertion's header, **unverified**: whether the keys
/// in hand know it decides if a trusted issuer's JWKS is worth refetching.
pub fn peek_kid(token: &str) -> Option<String> {
    let (header_b64, _, _) = split(token).ok()?;
    let json = B64.decode(header_b64).ok()?;
    let header: crate::jwt::Header<'_> = serde_json::from_slice(&json).ok()?;
    header.kid.map(|k| k.into_owned())
}

/// Verifies an assertion's header, signature (with `keys`) and claims
/// (against `expected`). Does not record the `jti`: the caller must, and
/// refuse a second use (see the module docs).
pub fn verify_assertion(
    keys: &AssertionKeys,
    token: &str,
    expected: &Expected<'_>,
) -> Result<AssertionClaims, AssertionError> {
    let (header_b64, payload_b64, sig_b64) = split(token)?;
    let header_json = B64
        .decode(header_b64)
        .map_err(|_| AssertionError::Malformed)?;
    let header: crate::jwt::Header<'_> =
        serde_json::from_slice(&header_json).map_err(|_| AssertionError::Malformed)?;
    if header.crit.is_some() {
        return Err(AssertionError::Malformed);
    }
    // `none`, HS256 and everything else never reach a key.
    let alg = AssertionAlg::parse(&header.alg).ok_or(AssertionError::Algorithm)?;
    match header.typ.as_deref() {
        None => {}
        Some(t) if t.eq_ignore_ascii_case("JWT") || t.eq_ignore_ascii_case("application/jwt") => {}
        Some(_) => return Err(AssertionError::WrongType),
    }
    // Cheap claim checks before any signature check.
    let c = claims_of(payload_b64)?;
    let sig = B64.decode(sig_b64).map_err(|_| AssertionError::Malformed)?;
    let candidates = keys.candidates(alg, header.kid.as_deref());
    if candidates.is_empty() {
        return Err(AssertionError::NoKey);
    }
    let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
    if !candidates
        .iter()
        .any(|k| k.verify(signing_input.as_bytes(), &sig))
    {
        return Err(AssertionError::BadSignature);
    }
    check_claims(c, expected)
}

fn check_claims(c: RawClaims, e: &Expected<'_>) -> Result<AssertionClaims, AssertionError> {
    let (Some(iss), Some(sub)) = (c.iss, c.sub) else {
        return Err(AssertionError::WrongIssuer);
    };
    if iss != e.issuer || sub != e.subject {
        return Err(AssertionError::WrongIssuer);
    }
    if !c.aud.iter().any(|a| e.audiences.contains(a)) {
        return Err(AssertionError::WrongAudience);
    }
    let exp = c.exp.ok_or(AssertionError::NoExpiry)?;
    if e.now > exp.saturating_add(e.leeway) {
        return Err(AssertionError::Expired);
    }
    for t in [c.nbf, c.iat].into_iter().flatten() {
        if t.saturating_sub(e.leeway) > e.now {
            return Err(AssertionError::NotYetValid);
        }
    }
    let start = c.iat.unwrap_or(e.now);
    if exp.saturating_sub(start) > e.max_lifetime.saturating_add(e.leeway) {
        return Err(AssertionError::TooLong);
    }
    let jti = match c.jti {
        Some(j) if !j.is_empty() && j.len() <= MAX_JTI_LEN => Some(j),
        None if !e.require_jti => None,
        _ => return Err(AssertionError::BadJti),
    };
    Ok(AssertionClaims {
        iss,
        sub,
        aud: c.aud,
        exp,
        iat: c.iat,
        nbf: c.nbf,
        jti,
    })
}
