//! Public keys as DER (an X.509 certificate's or a `PUBLIC KEY` PEM's
//! SubjectPublicKeyInfo) turned into the public JWK a client registers:
//! what `tokend client new` prints for a partner's existing key or for a
//! `self_signed_tls_client_auth` certificate. A minimal DER reader, enough
//! for the three key types tokend verifies (RSA, P-256, Ed25519); anything
//! else is an error, never a guess.

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::json;

const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// One DER element: (tag, contents, the rest after it).
fn tlv(input: &[u8]) -> anyhow::Result<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first().context("truncated DER")?;
    let (&first, rest) = rest.split_first().context("truncated DER")?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            bail!("unsupported DER length");
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        bail!("truncated DER");
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

fn expect(input: &[u8], tag: u8) -> anyhow::Result<(&[u8], &[u8])> {
    let (t, body, rest) = tlv(input)?;
    if t != tag {
        bail!("unexpected DER tag {t:#x} (wanted {tag:#x})");
    }
    Ok((body, rest))
}

/// The SubjectPublicKeyInfo of a DER X.509 certificate.
pub fn certificate_spki(cert: &[u8]) -> anyhow::Result<&[u8]> {
    let (certificate, _) = expect(cert, 0x30).context("not a certificate")?;
    let (tbs, _) = expect(certificate, 0x30).context("not a certificate")?;
    let mut rest = tbs;
    // [0] version, optional.
    if rest.first() == Some(&0xa0) {
        rest = tlv(rest)?.2;
    }
    // serialNumber, signature, issuer, validity, subject.
    for _ in 0..5 {
        rest = tlv(rest)?.2;
    }
    let (_, _, after) = tlv(rest)?;
    Ok(&rest[..rest.len() - after.len()])
}

fn unsigned(int: &[u8]) -> &[u8] {
    let mut i = int;
    while i.len() > 1 && i[0] == 0 {
        i = &i[1..];
    }
    i
}

/// The public JWK (with its RFC 7638 thumbprint as `kid`, and `alg`) of a
/// DER SubjectPublicKeyInfo: RSA (at least 2048 bits; RS256), EC P-256
/// (ES256) or Ed25519 (EdDSA).
pub fn spki_jwk(spki: &[u8]) -> anyhow::Result<serde_json::Value> {
    let (body, _) = expect(spki, 0x30).context("not a SubjectPublicKeyInfo")?;
    let (alg_id, rest) = expect(body, 0x30)?;
    let (bits, _) = expect(rest, 0x03)?;
    let (&unused, key) = bits.split_first().context("empty public key")?;
    if unused != 0 {
        bail!("malformed public key bits");
    }
    let (oid, params) = expect(alg_id, 0x06)?;
    let (core, alg) = match oid {
        OID_RSA => {
            let (seq, _) = expect(key, 0x30)?;
            let (n, rest) = expect(seq, 0x02)?;
            let (e, _) = expect(rest, 0x02)?;
            let n = unsigned(n);
            if n.len() * 8 < 2048 {
                bail!("RSA keys must have at least 2048 bits");
            }
            (
                json!({"e": B64.encode(unsigned(e)), "kty": "RSA", "n": B64.encode(n)}),
                "RS256",
            )
        }
        OID_EC => {
            let (curve, _) = expect(params, 0x06)?;
            if curve != OID_P256 {
                bail!("only the P-256 curve is supported");
            }
            if key.len() != 65 || key[0] != 4 {
                bail!("unexpected P-256 public key encoding");
            }
            (
                json!({"crv": "P-256", "kty": "EC", "x": B64.encode(&key[1..33]), "y": B64.encode(&key[33..])}),
                "ES256",
            )
        }
        OID_ED25519 => {
            if key.len() != 32 {
                bail!("unexpected Ed25519 public key length");
            }
            (
                json!({"crv": "Ed25519", "kty": "OKP", "x": B64.encode(key)}),
                "EdDSA",
            )
        }
        _ => bail!("unsupported key type (RSA, EC P-256 or Ed25519)"),
    };
    Ok(crate::keys::signing_jwk(core, alg)?.0)
}

/// The public JWK of a PEM: a `PUBLIC KEY` (SubjectPublicKeyInfo) or a
/// `CERTIFICATE` (its key).
pub fn pem_public_jwk(pem_text: &[u8]) -> anyhow::Result<serde_json::Value> {
    let block = pem::parse(pem_text).context("not a PEM file")?;
    match block.tag() {
        "PUBLIC KEY" => spki_jwk(block.contents()),
        "CERTIFICATE" => spki_jwk(certificate_spki(block.contents())?),
        other => bail!("a {other} PEM: give a PUBLIC KEY or a CERTIFICATE"),
    }
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
    use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};

    use super::*;
    use crate::Algorithm;
    use crate::keys::{SigningKey, generate_pem};

    /// The SubjectPublicKeyInfo of a key tokend generates, by aws-lc-rs.
    fn spki_of(alg: Algorithm, pkcs8: &[u8]) -> Vec<u8> {
        let der: PublicKeyX509Der<'static> = match alg {
            Algorithm::RS256 => RsaKeyPair::from_pkcs8(pkcs8).unwrap().public_key().as_der(),
            Algorithm::ES256 => {
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
                    .unwrap()
                    .public_key()
                    .as_der()
            }
            Algorithm::EdDSA => Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
                .unwrap()
                .public_key()
                .as_der(),
        }
        .unwrap();
        der.as_ref().to_vec()
    }

    #[test]
    fn a_public_key_pem_gives_the_jwk_of_its_private_key() {
        for alg in Algorithm::ALL {
            let pem_text = generate_pem(alg).unwrap();
            let pkcs8 = pem::parse(&pem_text).unwrap();
            let public = pem::encode(&pem::Pem::new("PUBLIC KEY", spki_of(alg, pkcs8.contents())));
            let ours = pem_public_jwk(public.as_bytes()).unwrap();
            let expected = SigningKey::from_pem(alg, pem_text.as_bytes()).unwrap();
            assert_eq!(ours, expected.verify_key().jwk, "{alg:?}");
        }
    }

    #[test]
    fn anything_else_is_an_error() {
        for bad in [
            &b""[..],
            b"\x30",
            b"\x30\x03\x02\x01\x00",
            b"\x30\x82\xff\xff",
        ] {
            assert!(spki_jwk(bad).is_err());
            assert!(certificate_spki(bad).is_err());
        }
        assert!(
            pem_public_jwk(b"-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n")
                .is_err()
        );
    }
}
