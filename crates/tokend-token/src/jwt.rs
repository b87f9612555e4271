//! RFC 9068 JWT access tokens: minting (header pre-encoded per key, claims
//! serialised once, one signature) and strict verification.
//!
//! Verification accepts exactly what tokend itself issues: a three-part compact
//! JWS whose header names a known `kid`, the algorithm of that key (so `none`
//! and HMAC-with-the-public-key confusion cannot match), and `typ: at+jwt`;
//! then a valid signature, our `iss`, and `exp`/`nbf` within the leeway.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::keys::{KeyLookup, KeySet, SigningKey};

/// Longest token accepted for verification; tokend's own are far shorter.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The claims of a tokend access token. Registered claims are typed; the
/// client's configured claims and the login app's claims ride in `extra`.
///
/// `Deserialize` is written by hand (below): with `#[serde(flatten)]` serde
/// buffers the whole object into an intermediate tree before picking the
/// fields, which made parsing a token's claims cost several times more than
/// decoding them directly (introspection parses every token it verifies).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    #[serde(serialize_with = "ser_aud", skip_serializing_if = "Vec::is_empty")]
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    pub client_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub scope: String,
    /// The grant this token was issued from (authorization code and refresh
    /// tokens only), as the registered `sid` (session id) claim: revoking the
    /// grant revokes its access tokens, and a resource server can match
    /// session revocations against it. Tokens from before tokend 0.2 call it
    /// `gid`; both parse.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// `iat_ms` of tokens minted before issue times were read from the `jti`
    /// (see [`AccessClaims::issued_at_ms`]); parsed, never written.
    #[serde(skip)]
    pub legacy_iat_ms: Option<i64>,
    /// RFC 8693 4.1 `act`: who acts for `sub` (an exchanged token), nesting
    /// the earlier actors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub act: Option<serde_json::Value>,
    /// The tokens an exchanged token descends from, oldest first (empty for
    /// every other token): revoking any of them, cutting off its client or
    /// ending its grant makes this token inactive too, with no store write
    /// per exchanged token.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<ChainLink>,
    /// RFC 7800 / RFC 8705 3.1 `cnf`: the key the token is bound to (a
    /// certificate-bound token carries `x5t#S256`); `None` for a bearer token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// One ancestor of an exchanged token: what its revocation is checked by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainLink {
    pub jti: String,
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

/// RFC 7800 `cnf`: what a presenter must prove possession of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// RFC 8705 3.1: base64url SHA-256 of the DER of the TLS client
    /// certificate the token is bound to.
    #[serde(rename = "x5t#S256", default, skip_serializing_if = "Option::is_none")]
    pub x5t_s256: Option<String>,
}

impl Confirmation {
    /// The `cnf` of a token bound to the certificate `der` (RFC 8705 3.1).
    pub fn of_certificate(der: &[u8]) -> Self {
        use sha2::Digest;
        Self {
            x5t_s256: Some(B64.encode(sha2::Sha256::digest(der))),
        }
    }

    /// Whether a certificate (DER) is the one this confirmation names, in
    /// constant time.
    pub fn matches_certificate(&self, der: &[u8]) -> bool {
        use sha2::Digest;
        let Some(want) = &self.x5t_s256 else {
            return false;
        };
        let Ok(want) = B64.decode(want) else {
            return false;
        };
        let got = sha2::Sha256::digest(der);
        want.len() == got.len()
            && want
                .iter()
                .zip(got.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

impl ChainLink {
    /// Issue time in Unix ms, from the `jti` (a version 7 UUID); `None` for
    /// a jti of another shape.
    pub fn issued_at_ms(&self) -> Option<i64> {
        crate::opaque::uuid_v7_ms(&self.jti)
    }
}

impl AccessClaims {
    /// Issue time in Unix milliseconds. Bulk revocation marks ("not before"
    /// per client or subject) are milliseconds, so that a token minted in the
    /// same second just after a revocation stays valid while one minted just
    /// before it does not. The millisecond comes from the `jti` (a version 7
    /// UUID, [`crate::opaque::time_ordered_id`]) when it agrees with `iat`;
    /// else from a legacy `iat_ms`; else `iat * 1000` (conservative: the
    /// token counts as issued at the start of its second).
    pub fn issued_at_ms(&self) -> i64 {
        let second = self.iat.saturating_mul(1000);
        crate::opaque::uuid_v7_ms(&self.jti)
            .filter(|ms| (second..second.saturating_add(1000)).contains(ms))
            .or(self.legacy_iat_ms)
            .unwrap_or(second)
    }
}

/// Claim names that configuration may not override.
pub const RESERVED_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "nbf",
    "jti",
    "client_id",
    "scope",
    "sid",
    "gid",
    "iat_ms",
    "typ",
    "active",
    "token_type",
    "cnf",
    "act",
    "chain",
];

fn ser_aud<S: Serializer>(aud: &[String], s: S) -> Result<S::Ok, S::Error> {
    // One audience as a string (what most verifiers expect), several as array.
    if aud.len() == 1 {
        s.serialize_str(&aud[0])
    } else {
        aud.serialize(s)
    }
}

/// `aud`: one string or an array of strings.
struct Audience(Vec<String>);

impl<'de> Deserialize<'de> for Audience {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Audience;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Audience, E> {
                Ok(Audience(vec![v.to_owned()]))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Audience, E> {
                Ok(Audience(vec![v]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Audience, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(1).min(16));
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(Audience(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A claim name: one of the typed claims, or another (kept in `extra`).
enum Field {
    Iss,
    Sub,
    Aud,
    Exp,
    Iat,
    Nbf,
    Jti,
    ClientId,
    Scope,
    Sid,
    IatMs,
    Act,
    Chain,
    Cnf,
    Other(String),
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Field;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a claim name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Field, E> {
                Ok(match v {
                    "iss" => Field::Iss,
                    "sub" => Field::Sub,
                    "aud" => Field::Aud,
                    "exp" => Field::Exp,
                    "iat" => Field::Iat,
                    "nbf" => Field::Nbf,
                    "jti" => Field::Jti,
                    "client_id" => Field::ClientId,
                    "scope" => Field::Scope,
                    "sid" | "gid" => Field::Sid,
                    "iat_ms" => Field::IatMs,
                    "act" => Field::Act,
                    "chain" => Field::Chain,
                    "cnf" => Field::Cnf,
                    other => Field::Other(other.to_owned()),
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

impl<'de> Deserialize<'de> for AccessClaims {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = AccessClaims;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JWT claims object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<AccessClaims, A::Error> {
                use serde::de::Error;
                fn once<T, E: Error>(
                    slot: &mut Option<T>,
                    v: T,
                    name: &'static str,
                ) -> Result<(), E> {
                    if slot.replace(v).is_some() {
                        return Err(E::duplicate_field(name));
                    }
                    Ok(())
                }
                let (mut iss, mut sub, mut aud, mut jti, mut client_id) =
                    (None, None, None, None, None);
                let (mut exp, mut iat, mut nbf) = (None, None, None);
                let (mut scope, mut sid, mut iat_ms) = (None, None, None);
                let (mut act, mut chain, mut cnf) = (None, None, None);
                let mut extra = serde_json::Map::new();
                while let Some(field) = map.next_key::<Field>()? {
                    match field {
                        Field::Iss => once(&mut iss, map.next_value::<String>()?, "iss")?,
                        Field::Sub => once(&mut sub, map.next_value::<String>()?, "sub")?,
                        Field::Aud => once(&mut aud, map.next_value::<Audience>()?.0, "aud")?,
                        Field::Exp => once(&mut exp, map.next_value::<i64>()?, "exp")?,
                        Field::Iat => once(&mut iat, map.next_value::<i64>()?, "iat")?,
                        Field::Nbf => once(&mut nbf, map.next_value::<i64>()?, "nbf")?,
                        Field::Jti => once(&mut jti, map.next_value::<String>()?, "jti")?,
                        Field::ClientId => {
                            once(&mut client_id, map.next_value::<String>()?, "client_id")?
                        }
                        Field::Scope => once(&mut scope, map.next_value::<String>()?, "scope")?,
                        Field::Sid => once(&mut sid, map.next_value::<Option<String>>()?, "sid")?,
                        Field::IatMs => {
                            once(&mut iat_ms, map.next_value::<Option<i64>>()?, "iat_ms")?
                        }
                        Field::Act => {
                            once(&mut act, map.next_value::<serde_json::Value>()?, "act")?
                        }
                        Field::Chain => {
                            once(&mut chain, map.next_value::<Vec<ChainLink>>()?, "chain")?
                        }
                        Field::Cnf => once(&mut cnf, map.next_value::<Confirmation>()?, "cnf")?,
                        Field::Other(name) => {
                            let v = map.next_value::<serde_json::Value>()?;
                            extra.insert(name, v);
                        }
                    }
                }
                Ok(AccessClaims {
                    iss: iss.ok_or_else(|| A::Error::missing_field("iss"))?,
                    sub: sub.ok_or_else(|| A::Error::missing_field("sub"))?,
                    aud: aud.unwrap_or_default(),
                    exp: exp.ok_or_else(|| A::Error::missing_field("exp"))?,
                    iat: iat.ok_or_else(|| A::Error::missing_field("iat"))?,
                    nbf: nbf.ok_or_else(|| A::Error::missing_field("nbf"))?,
                    jti: jti.ok_or_else(|| A::Error::missing_field("jti"))?,
                    client_id: client_id.ok_or_else(|| A::Error::missing_field("client_id"))?,
                    scope: scope.unwrap_or_default(),
                    sid: sid.flatten(),
                    legacy_iat_ms: iat_ms.flatten(),
                    act,
                    chain: chain.unwrap_or_default(),
                    cnf,
                    extra,
                })
            }
        }
        d.deserialize_map(V)
    }
}

/// Signs `claims` with `key` into a compact JWS.
pub fn mint(key: &SigningKey, claims: &AccessClaims) -> anyhow::Result<String> {
    let payload = serde_json::to_vec(claims)?;
    let header = key.header_b64();
    let mut token = String::with_capacity(header.len() + payload.len() * 4 / 3 + 400);
    token.push_str(header);
    token.push('.');
    B64.encode_string(&payload, &mut token);
    let sig = key.sign(token.as_bytes())?;
    token.push('.');
    B64.encode_string(&sig, &mut token);
    Ok(token)
}

/// Why a token did not verify. Callers answer `active: false` for all of them;
/// the variants exist for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("malformed token")]
    Malformed,
    #[error("unknown key id")]
    UnknownKey,
    #[error("algorithm does not match the key")]
    WrongAlgorithm,
    #[error("wrong token type")]
    WrongType,
    #[error("bad signature")]
    BadSignature,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("expired")]
    Expired,
    #[error("not yet valid")]
    NotYetValid,
}

/// A JWS header: what access tokens and client assertions are checked by.
#[derive(Deserialize)]
pub(crate) struct Header<'a> {
    #[serde(borrow)]
    pub(crate) alg: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    pub(crate) kid: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(crate) typ: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    pub(crate) crit: Option<serde_json::Value>,
}

/// Verifies signature, header and claims. `now` is unix seconds.
pub fn verify(
    keys: &KeySet,
    token: &str,
    issuer: &str,
    now: i64,
    leeway: i64,
) -> Result<AccessClaims, VerifyError> {
    verify_with(keys, token, issuer, now, leeway)
}

/// [`verify`] against any set of keys: tokend's own [`KeySet`], or a
/// resource server's [`JwkSet`](crate::keys::JwkSet) fetched from the JWKS.
pub fn verify_with<K: KeyLookup + ?Sized>(
    keys: &K,
    token: &str,
    issuer: &str,
    now: i64,
    leeway: i64,
) -> Result<AccessClaims, VerifyError> {
    let claims = verify_signature_with(keys, token)?;
    if claims.iss != issuer {
        return Err(VerifyError::WrongIssuer);
    }
    if now > claims.exp.saturating_add(leeway) {
        return Err(VerifyError::Expired);
    }
    if claims.nbf.saturating_sub(leeway) > now {
        return Err(VerifyError::NotYetValid);
    }
    Ok(claims)
}

/// Verifies header and signature only (revocation accepts expired tokens).
pub fn verify_signature(keys: &KeySet, token: &str) -> Result<AccessClaims, VerifyError> {
    verify_signature_with(keys, token)
}

/// [`verify_signature`] against any set of keys (see [`verify_with`]).
pub fn verify_signature_with<K: KeyLookup + ?Sized>(
    keys: &K,
    token: &str,
) -> Result<AccessClaims, VerifyError> {
    if token.len() > MAX_TOKEN_LEN || token.is_empty() {
        return Err(VerifyError::Malformed);
    }
    let (signing_input, sig_b64) = token.rsplit_once('.').ok_or(VerifyError::Malformed)?;
    let (header_b64, payload_b64) = signing_input
        .split_once('.')
        .ok_or(VerifyError::Malformed)?;
    if payload_b64.contains('.') {
        return Err(VerifyError::Malformed);
    }
    let header_json = B64.decode(header_b64).map_err(|_| VerifyError::Malformed)?;
    let header: Header<'_> =
        serde_json::from_slice(&header_json).map_err(|_| VerifyError::Malformed)?;
    if header.crit.is_some() {
        return Err(VerifyError::Malformed);
    }
    let kid = header.kid.ok_or(VerifyError::UnknownKey)?;
    let key = keys.verify_key(&kid).ok_or(VerifyError::UnknownKey)?;
    if header.alg != key.alg.as_str() {
        return Err(VerifyError::WrongAlgorithm);
    }
    // RFC 9068 section 4: reject anything not typed as an access token.
    match header.typ.as_deref() {
        Some(t)
            if t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt") => {
        }
        _ => return Err(VerifyError::WrongType),
    }
    let sig = B64.decode(sig_b64).map_err(|_| VerifyError::Malformed)?;
    if !key.verify(signing_input.as_bytes(), &sig) {
        return Err(VerifyError::BadSignature);
    }
    let payload = B64
        .decode(payload_b64)
        .map_err(|_| VerifyError::Malformed)?;
    serde_json::from_slice(&payload).map_err(|_| VerifyError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Algorithm, SigningKey};

    fn claims(now: i64) -> AccessClaims {
        AccessClaims {
            iss: "https://issuer".into(),
            sub: "svc".into(),
            aud: vec!["api".into()],
            exp: now + 60,
            iat: now,
            nbf: now,
            jti: "j1".into(),
            client_id: "svc".into(),
            scope: "a b".into(),
            sid: None,
            legacy_iat_ms: None,
            act: None,
            chain: Vec::new(),
            cnf: None,
            extra: serde_json::Map::new(),
        }
    }

    #[test]
    fn mint_then_verify_each_algorithm() {
        for alg in Algorithm::ALL {
            let keys = KeySet::new(SigningKey::generate(alg).unwrap(), vec![]);
            let t = mint(keys.active(), &claims(1000)).unwrap();
            assert_eq!(
                verify(&keys, &t, "https://issuer", 1000, 0).unwrap(),
                claims(1000)
            );
            assert_eq!(
                verify(&keys, &t, "https://other", 1000, 0),
                Err(VerifyError::WrongIssuer)
            );
            assert_eq!(
                verify(&keys, &t, "https://issuer", 1061, 0),
                Err(VerifyError::Expired)
            );
            assert!(verify(&keys, &t, "https://issuer", 1061, 5).is_ok());
            assert_eq!(
                verify(&keys, &t, "https://issuer", 990, 0),
                Err(VerifyError::NotYetValid)
            );
            let mut tampered = t.clone();
            tampered.insert(t.find('.').unwrap() + 3, 'A');
            assert!(verify(&keys, &tampered, "https://issuer", 1000, 0).is_err());
        }
    }

    #[test]
    fn issue_time_comes_from_the_jti_and_legacy_claims_stay_out_of_extra() {
        let mut c = claims(1_733_160_000);
        assert_eq!(
            c.issued_at_ms(),
            1_733_160_000_000,
            "no v7 jti: start of second"
        );
        c.jti = crate::opaque::time_ordered_id(1_733_160_000_123);
        assert_eq!(c.issued_at_ms(), 1_733_160_000_123);
        // A jti whose time disagrees with iat is not trusted.
        c.jti = crate::opaque::time_ordered_id(1_733_160_005_000);
        assert_eq!(c.issued_at_ms(), 1_733_160_000_000);
        let text = serde_json::to_string(&c).unwrap();
        assert!(!text.contains("iat_ms") && !text.contains("gid"), "{text}");

        // A token minted by an earlier tokend: `gid` and `iat_ms`.
        let legacy = r#"{"iss":"i","sub":"s","exp":9,"iat":1,"nbf":1,"jti":"j","client_id":"c","gid":"g1","iat_ms":1500,"org":7}"#;
        let p: AccessClaims = serde_json::from_str(legacy).unwrap();
        assert_eq!(p.sid.as_deref(), Some("g1"));
        assert_eq!(p.issued_at_ms(), 1500);
        assert_eq!(p.extra.keys().collect::<Vec<_>>(), ["org"]);
        let both = r#"{"iss":"i","sub":"s","exp":9,"iat":1,"nbf":1,"jti":"j","client_id":"c","gid":"g1","sid":"g2"}"#;
        assert!(serde_json::from_str::<AccessClaims>(both).is_err());
    }

    #[test]
    fn claims_parse_like_the_derived_form() {
        let mut c = claims(1000);
        c.sid = Some("g".into());
        c.extra
            .insert("organisation_id".into(), serde_json::json!(74));
        c.extra.insert("roles".into(), serde_json::json!(["ADMIN"]));
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<AccessClaims>(&text).unwrap(), c);
        // Several audiences, absent optional claims, and escaped names.
        c.aud = vec!["a".into(), "b".into()];
        c.scope.clear();
        c.sid = None;
        let text = serde_json::to_string(&c)
            .unwrap()
            .replace("\"roles\"", "\"r\\u006fles\"");
        assert_eq!(serde_json::from_str::<AccessClaims>(&text).unwrap(), c);
        for bad in [
            r#"{"iss":"i","sub":"s","exp":1,"iat":1,"nbf":1,"jti":"j"}"#,
            r#"{"iss":"i","iss":"j","sub":"s","exp":1,"iat":1,"nbf":1,"jti":"j","client_id":"c"}"#,
            r#"{"iss":"i","sub":"s","exp":"1","iat":1,"nbf":1,"jti":"j","client_id":"c"}"#,
            r#"{"iss":"i","sub":"s","aud":7,"exp":1,"iat":1,"nbf":1,"jti":"j","client_id":"c"}"#,
            r#"["iss"]"#,
        ] {
            assert!(serde_json::from_str::<AccessClaims>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn alg_none_and_other_keys_are_rejected() {
        let keys = KeySet::new(SigningKey::generate(Algorithm::ES256).unwrap(), vec![]);
        let other = KeySet::new(SigningKey::generate(Algorithm::ES256).unwrap(), vec![]);
        let t = mint(other.active(), &claims(1000)).unwrap();
        assert_eq!(
            verify(&keys, &t, "https://issuer", 1000, 0),
            Err(VerifyError::UnknownKey)
        );
        let header = B64.encode(format!(
            r#"{{"alg":"none","kid":"{}","typ":"at+jwt"}}"#,
            keys.active().kid()
        ));
        let body = B64.encode(serde_json::to_vec(&claims(1000)).unwrap());
        let none = format!("{header}.{body}.");
        assert_eq!(
            verify(&keys, &none, "https://issuer", 1000, 0),
            Err(VerifyError::WrongAlgorithm)
        );
        for junk in ["", ".", "..", "a.b.c", "a.b.c.d", "😀.😀.😀"] {
            assert!(
                verify(&keys, junk, "https://issuer", 1000, 0).is_err(),
                "{junk}"
            );
        }
    }
}
