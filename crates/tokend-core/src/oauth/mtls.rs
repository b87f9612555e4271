//! RFC 8705 mutual-TLS client authentication and certificate-bound access
//! tokens: the rules, on plain data. The transports hand over the TLS peer's
//! leaf certificate (DER) and whether its chain validated against the
//! listener's client CA ([`ClientCertificate`]); nothing here knows rustls.
//!
//! - `tls_client_auth` (RFC 8705 2.1): the chain validated, and the
//!   certificate carries the one value the client registered under one of
//!   the RFC 8705 metadata names ([`TlsSubject`]): a subject DN (compared in
//!   the normalised form of [`DistinguishedName`]), a SAN dNSName (ASCII
//!   case-insensitive), a SAN URI (exact: SPIFFE IDs are case-sensitive) or
//!   a SAN iPAddress (as an address, so `::1` and `0:0::1` are one).
//! - `self_signed_tls_client_auth` (RFC 8705 2.2): no chain; the
//!   certificate's public key must be one the client registered in `jwks` /
//!   `jwks_file` (a JWK's own key or its `x5c` certificate's).
//!
//! An unvalidated certificate never authenticates a `tls_client_auth`
//! client, whatever it says. A certificate is parsed only for a client that
//! authenticates with one (an unknown id costs a map lookup, as for
//! `private_key_jwt`), and its text never reaches a log.

use std::net::IpAddr;

use tokend_token::assertion::{AssertionAlg, AssertionKeys};
use tokend_token::jwt::Confirmation;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// What the listeners do with TLS client certificates, for discovery (RFC
/// 8705 5 and 3.3): fixed at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MtlsSettings {
    /// Certificates are validated against a client CA: `tls_client_auth`.
    pub chain_validated: bool,
    /// Certificates that do not chain are accepted for
    /// `self_signed_tls_client_auth`.
    pub self_signed: bool,
    /// `[discovery] mtls_endpoint_base_url`: where clients with
    /// certificates should send their requests when that is another host
    /// than the issuer's (`mtls_endpoint_aliases`); `None` when the same
    /// listener serves both.
    pub endpoint_base: Option<String>,
}

impl MtlsSettings {
    /// Whether any client certificate can reach client authentication.
    pub fn enabled(&self) -> bool {
        self.chain_validated || self.self_signed
    }
}

/// Longest leaf certificate tokend looks at (the TLS layer bounds the whole
/// handshake message at 64 KiB; real client certificates are 1 to 2 KiB).
pub const MAX_CERTIFICATE_LEN: usize = 16 * 1024;

/// The TLS client certificate of the caller's connection.
#[derive(Clone)]
pub struct ClientCertificate {
    der: Vec<u8>,
    chain_validated: bool,
}

impl std::fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the certificate: logs must not carry it.
        f.debug_struct("ClientCertificate")
            .field("chain_validated", &self.chain_validated)
            .finish_non_exhaustive()
    }
}

impl ClientCertificate {
    /// `der`: the leaf; `chain_validated`: whether the TLS layer validated
    /// its chain against the client CA (`false` for a certificate accepted
    /// only for `self_signed_tls_client_auth`).
    pub fn new(der: Vec<u8>, chain_validated: bool) -> Self {
        Self {
            der,
            chain_validated,
        }
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }

    pub fn chain_validated(&self) -> bool {
        self.chain_validated
    }

    /// The `cnf` of a token bound to this certificate.
    pub fn confirmation(&self) -> Confirmation {
        Confirmation::of_certificate(&self.der)
    }

    fn parse(&self) -> Option<X509Certificate<'_>> {
        parse(&self.der)
    }
}

/// Parses a DER certificate, nothing after it; `None` for anything else.
pub fn parse(der: &[u8]) -> Option<X509Certificate<'_>> {
    if der.len() > MAX_CERTIFICATE_LEN {
        return None;
    }
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Some(cert),
        _ => None,
    }
}

/// What a `tls_client_auth` client's certificate must carry: exactly one of
/// the RFC 8705 2.1.2 metadata values.
#[derive(Debug, Clone, PartialEq)]
pub enum TlsSubject {
    SubjectDn(DistinguishedName),
    SanDns(String),
    SanUri(String),
    SanIp(IpAddr),
}

impl TlsSubject {
    /// The RFC 8705 metadata names, in the order the config lists them.
    pub const KEYS: [&'static str; 4] = [
        "tls_client_auth_subject_dn",
        "tls_client_auth_san_dns",
        "tls_client_auth_san_uri",
        "tls_client_auth_san_ip",
    ];

    /// Parses the value registered under `key` (one of [`Self::KEYS`]).
    pub fn parse(key: &str, value: &str) -> Result<Self, String> {
        if value.is_empty() || value.len() > 1024 || value.chars().any(char::is_control) {
            return Err("must be 1 to 1024 characters without control characters".into());
        }
        match key {
            "tls_client_auth_subject_dn" => DistinguishedName::parse(value).map(Self::SubjectDn),
            "tls_client_auth_san_dns" => {
                if value.contains(' ') {
                    return Err(format!("{value:?} is not a DNS name"));
                }
                Ok(Self::SanDns(value.to_owned()))
            }
            "tls_client_auth_san_uri" => {
                if value.contains(' ') || !value.contains(':') {
                    return Err(format!("{value:?} is not an absolute URI"));
                }
                Ok(Self::SanUri(value.to_owned()))
            }
            "tls_client_auth_san_ip" => value
                .parse()
                .map(Self::SanIp)
                .map_err(|_| format!("{value:?} is not an IPv4 or IPv6 address")),
            other => Err(format!("{other} is not an RFC 8705 metadata name")),
        }
    }

    fn matches(&self, cert: &X509Certificate<'_>) -> bool {
        if let Self::SubjectDn(dn) = self {
            return DistinguishedName::of_certificate(cert).is_some_and(|c| &c == dn);
        }
        // A certificate with a malformed or repeated SAN extension matches
        // nothing.
        let Ok(Some(san)) = cert.subject_alternative_name() else {
            return false;
        };
        san.value.general_names.iter().any(|n| match (self, n) {
            (Self::SanDns(want), GeneralName::DNSName(got)) => want.eq_ignore_ascii_case(got),
            (Self::SanUri(want), GeneralName::URI(got)) => want == got,
            (Self::SanIp(want), GeneralName::IPAddress(got)) => match (want, got.len()) {
                (IpAddr::V4(a), 4) => a.octets() == **got,
                (IpAddr::V6(a), 16) => a.octets() == **got,
                _ => false,
            },
            _ => false,
        })
    }
}

/// Which kind of public key (the `subjectPublicKeyInfo` algorithm).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    Ed25519,
}

const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_RSA_PSS: &str = "1.2.840.113549.1.1.10";
const OID_EC: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_ED25519: &str = "1.3.101.112";

/// One public key a `self_signed_tls_client_auth` client registered: the
/// kind and the `subjectPublicKey` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertKey {
    kind: KeyKind,
    key: Vec<u8>,
}

impl CertKey {
    fn of_certificate(cert: &X509Certificate<'_>) -> Option<Self> {
        let spki = cert.public_key();
        let kind = match spki.algorithm.algorithm.to_id_string().as_str() {
            OID_RSA | OID_RSA_PSS => KeyKind::Rsa,
            OID_EC => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())?;
                if curve.to_id_string() != OID_P256 {
                    return None;
                }
                KeyKind::P256
            }
            OID_ED25519 => KeyKind::Ed25519,
            _ => return None,
        };
        Some(Self {
            kind,
            key: spki.subject_public_key.data.to_vec(),
        })
    }

    /// The keys of a JWK Set: each JWK's key (already checked by
    /// [`AssertionKeys::from_jwks`]) and, when it has one, the key of its
    /// `x5c` certificate, which must be the same key.
    pub fn from_jwks(doc: &serde_json::Value, keys: &AssertionKeys) -> Result<Vec<Self>, String> {
        use base64::Engine;
        let jwks = doc
            .get("keys")
            .and_then(serde_json::Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut out = Vec::new();
        for (i, (jwk, k)) in jwks.iter().zip(keys.iter()).enumerate() {
            let kind = match k.alg {
                AssertionAlg::RS256 | AssertionAlg::PS256 => KeyKind::Rsa,
                AssertionAlg::ES256 => KeyKind::P256,
                AssertionAlg::EdDSA => KeyKind::Ed25519,
            };
            let own = Self {
                kind,
                key: k.public_key_bytes().to_vec(),
            };
            if let Some(x5c) = jwk.get("x5c") {
                let first = x5c
                    .as_array()
                    .and_then(|a| a.first())
                    .and_then(serde_json::Value::as_str)
                    .ok_or(format!("keys[{i}].x5c: an array of base64 certificates"))?;
                let der = base64::engine::general_purpose::STANDARD
                    .decode(first)
                    .map_err(|_| format!("keys[{i}].x5c[0]: not base64"))?;
                let cert = parse(&der).ok_or(format!("keys[{i}].x5c[0]: not a certificate"))?;
                let of_cert = Self::of_certificate(&cert).ok_or(format!(
                    "keys[{i}].x5c[0]: an RSA, P-256 or Ed25519 key is required"
                ))?;
                if of_cert != own {
                    return Err(format!(
                        "keys[{i}].x5c[0]: the certificate's key is not the JWK's key"
                    ));
                }
            }
            out.push(own);
        }
        Ok(out)
    }
}

/// How a client proves itself with its certificate.
#[derive(Debug, Clone, PartialEq)]
pub enum CertificateRule {
    /// `tls_client_auth`.
    Subject(TlsSubject),
    /// `self_signed_tls_client_auth`.
    Keys(Vec<CertKey>),
}

impl CertificateRule {
    /// Whether `cert` authenticates a client with this rule.
    pub fn accepts(&self, cert: &ClientCertificate) -> bool {
        let Some(parsed) = cert.parse() else {
            return false;
        };
        match self {
            // Never an unvalidated chain, whatever it says.
            Self::Subject(s) => cert.chain_validated && s.matches(&parsed),
            Self::Keys(keys) => CertKey::of_certificate(&parsed).is_some_and(|k| keys.contains(&k)),
        }
    }
}

/// A distinguished name in the form tokend compares (RFC 8705 2.1.2 asks
/// for RFC 4517 `distinguishedNameMatch`): RDNs in the certificate's order
/// (an RFC 4514 string lists them the other way round), each a set of
/// (attribute type OID, value). Attribute types are compared by OID (`CN`,
/// `cn` and `2.5.4.3` are one); string values after RFC 4514 unescaping,
/// with leading and trailing spaces removed, inner runs of white space
/// folded to one space, and case folded (`caseIgnoreMatch`, the equality
/// rule of the attributes certificates use); a `#hex` value by its DER
/// encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistinguishedName(Vec<Vec<(String, Value)>>);

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Value {
    Text(String),
    Der(Vec<u8>),
}

/// Attribute type names RFC 4514 (and common practice) know.
const ATTRIBUTE_NAMES: &[(&str, &str)] = &[
    ("CN", "2.5.4.3"),
    ("SN", "2.5.4.4"),
    ("SERIALNUMBER", "2.5.4.5"),
    ("C", "2.5.4.6"),
    ("L", "2.5.4.7"),
    ("ST", "2.5.4.8"),
    ("STREET", "2.5.4.9"),
    ("O", "2.5.4.10"),
    ("OU", "2.5.4.11"),
    ("TITLE", "2.5.4.12"),
    ("GN", "2.5.4.42"),
    ("GIVENNAME", "2.5.4.42"),
    ("DNQUALIFIER", "2.5.4.46"),
    ("DC", "0.9.2342.19200300.100.1.25"),
    ("UID", "0.9.2342.19200300.100.1.1"),
    ("EMAILADDRESS", "1.2.840.113549.1.9.1"),
    ("E", "1.2.840.113549.1.9.1"),
];

fn normalise(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() || !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl DistinguishedName {
    /// Parses an RFC 4514 string (`CN=orders,O=Example\, Inc.,C=DE`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut rdns: Vec<Vec<(String, Value)>> = vec![Vec::new()];
        let mut chars = s.chars().peekable();
        loop {
            // attributeType "=" attributeValue
            let mut ty = String::new();
            for c in chars.by_ref() {
                if c == '=' {
                    break;
                }
                ty.push(c);
            }
            let ty = ty.trim();
            let oid = if !ty.is_empty() && ty.chars().all(|c| c.is_ascii_digit() || c == '.') {
                ty.to_owned()
            } else {
                ATTRIBUTE_NAMES
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(ty))
                    .map(|(_, o)| (*o).to_owned())
                    .ok_or(format!("unknown attribute type {ty:?} (use its OID)"))?
            };
            let mut raw = Vec::<u8>::new();
            // RFC 4514 2.4: a value starting with an unescaped `#` is hex.
            let mut hex_form = false;
            let mut end = None;
            while let Some(c) = chars.next() {
                match c {
                    ',' | '+' => {
                        end = Some(c);
                        break;
                    }
                    '\\' => {
                        let a = chars.next().ok_or("a trailing backslash")?;
                        if a.is_ascii_hexdigit() {
                            let b = chars.next().filter(char::is_ascii_hexdigit);
                            let b = b.ok_or("a backslash with one hex digit")?;
                            let byte = u8::from_str_radix(&format!("{a}{b}"), 16)
                                .map_err(|_| "bad hex escape")?;
                            raw.push(byte);
                        } else {
                            let mut buf = [0; 4];
                            raw.extend_from_slice(a.encode_utf8(&mut buf).as_bytes());
                        }
                    }
                    '#' if raw.iter().all(|b| *b == b' ') => {
                        hex_form = true;
                        raw.push(b'#');
                    }
                    c => {
                        let mut buf = [0; 4];
                        raw.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    }
                }
            }
            let text = String::from_utf8(raw).map_err(|_| "escapes that are not UTF-8")?;
            let value = match text.trim_start().strip_prefix('#') {
                Some(hex) if hex_form => {
                    Value::Der(decode_hex(hex.trim()).ok_or(format!("{ty}: #{hex} is not hex"))?)
                }
                _ => Value::Text(normalise(&text)),
            };
            if matches!(&value, Value::Text(t) if t.is_empty()) {
                return Err(format!("{ty}: empty value"));
            }
            rdns.last_mut().expect("one RDN").push((oid, value));
            match end {
                None => break,
                Some(',') => rdns.push(Vec::new()),
                Some(_) => {}
            }
        }
        rdns.reverse();
        for rdn in &mut rdns {
            rdn.sort();
        }
        Ok(Self(rdns))
    }

    /// The subject of a certificate in the same form; `None` when a value
    /// cannot be read.
    fn of_certificate(cert: &X509Certificate<'_>) -> Option<Self> {
        use x509_parser::der_parser::asn1_rs::{Tag, ToDer};
        let mut rdns = Vec::new();
        for rdn in cert.subject().iter() {
            let mut attrs = Vec::new();
            for atv in rdn.iter() {
                let v = atv.attr_value();
                let data: &[u8] = v.data;
                let text = match v.tag() {
                    Tag::Utf8String
                    | Tag::PrintableString
                    | Tag::Ia5String
                    | Tag::NumericString
                    | Tag::VisibleString => std::str::from_utf8(data).ok().map(str::to_owned),
                    // T.61: read as Latin-1, as most software does.
                    Tag::TeletexString => Some(data.iter().map(|&b| char::from(b)).collect()),
                    Tag::BmpString => {
                        let units: Vec<u16> = data
                            .chunks_exact(2)
                            .map(|c| u16::from_be_bytes([c[0], c[1]]))
                            .collect();
                        String::from_utf16(&units).ok()
                    }
                    Tag::UniversalString => data
                        .chunks_exact(4)
                        .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                        .collect(),
                    _ => None,
                };
                let value = match text {
                    Some(t) => Value::Text(normalise(&t)),
                    None => Value::Der(v.to_der_vec().ok()?),
                };
                attrs.push((atv.attr_type().to_id_string(), value));
            }
            attrs.sort();
            rdns.push(attrs);
        }
        Some(Self(rdns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dn_strings_compare_in_normal_form() {
        let a = DistinguishedName::parse("CN=Orders  Service,O=Example\\, Inc.,C=DE").unwrap();
        let b =
            DistinguishedName::parse("cn=orders service, o=EXAMPLE\\2C INC. ,2.5.4.6=de").unwrap();
        assert_eq!(a, b);
        let other = DistinguishedName::parse("CN=Orders Service,O=Example,C=DE").unwrap();
        assert_ne!(a, other);
        // Order matters, multi-valued RDNs do not.
        let c = DistinguishedName::parse("O=Example\\, Inc.,CN=Orders Service,C=DE").unwrap();
        assert_ne!(a, c);
        assert_eq!(
            DistinguishedName::parse("CN=a+OU=b,O=x").unwrap(),
            DistinguishedName::parse("OU=b+CN=a,O=x").unwrap()
        );
        for bad in ["", "CN", "XX=1", "CN=", "CN=a\\", "CN=a\\4", "CN=#zz"] {
            assert!(DistinguishedName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn certificates_that_do_not_parse_match_nothing() {
        let rule = CertificateRule::Subject(TlsSubject::SanDns("a".into()));
        for garbage in [&b""[..], b"\x30\x03\x02\x01\x00", &[0x30; 20000]] {
            assert!(!rule.accepts(&ClientCertificate::new(garbage.to_vec(), true)));
        }
        assert!(TlsSubject::parse("tls_client_auth_san_ip", "10.0.0.300").is_err());
        assert!(TlsSubject::parse("tls_client_auth_san_uri", "no-scheme").is_err());
    }
}
