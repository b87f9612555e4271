//! Optional TLS for both listeners (`[tls]`), on rustls with the same
//! aws-lc-rs provider as the rest of tokend. The listeners take their
//! acceptors from a swappable slot: a background task rebuilds them from the
//! files (certificate, key and, for mTLS, the client CA) on SIGHUP and when
//! the files' content changes (see [`crate::watch`]), so a rotated
//! certificate or CA applies to new connections without a restart. A bad new
//! file is logged and the running acceptors stay in use.
//! `client_ca_file` turns on client-certificate verification (mTLS).
//!
//! Client certificates (RFC 8705): `client_auth = "required"` (the default
//! with a client CA: every connection presents a certificate that chains to
//! it) or `"optional"` (a certificate is asked for, not required, so one
//! listener serves secret clients and certificate clients alike).
//! `self_signed_client_certs = true` also admits certificates that do not
//! chain, for `self_signed_tls_client_auth`: the handshake still proves the
//! client holds the certificate's private key (rustls checks the
//! CertificateVerify signature with the certificate's key whatever the
//! chain), and each connection records whether the chain validated
//! ([`peer_certificate`]), so an unvalidated certificate never counts for
//! `tls_client_auth`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokend_core::oauth::mtls::{ClientCertificate, MAX_CERTIFICATE_LEN, MtlsSettings};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use serde::Deserialize;

use crate::watch::FileWatch;

/// `[tls]`: optional TLS on both listeners.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// When set, client certificates are validated against this CA (mTLS).
    pub client_ca_file: Option<PathBuf>,
    /// `"required"` (the default with a client CA or self-signed
    /// certificates: a connection without a valid certificate is refused in
    /// the handshake) or `"optional"` (a certificate is asked for; clients
    /// without one still connect and authenticate with a secret or key).
    pub client_auth: Option<String>,
    /// Also accept client certificates that do not chain to the client CA
    /// (RFC 8705 `self_signed_tls_client_auth`); they authenticate only
    /// clients that registered their key.
    #[serde(deserialize_with = "tokend_core::de::de_bool")]
    pub self_signed_client_certs: bool,
    /// How often the certificate files are checked for changes (SIGHUP
    /// reloads at once).
    #[serde(deserialize_with = "tokend_core::de::de_num")]
    pub reload_check_secs: u64,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            client_auth: None,
            self_signed_client_certs: false,
            reload_check_secs: 5,
        }
    }
}

impl TlsSettings {
    /// Reads the files into acceptors; `Ok(None)` when TLS is off. Problems
    /// name the key at fault.
    pub fn load(&self) -> Result<Option<Tls>, Vec<String>> {
        let certs = self.client_certs().map_err(|e| vec![e])?;
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => Err(vec!["tls.key_file: required with tls.cert_file".into()]),
            (None, Some(_)) => Err(vec!["tls.cert_file: required with tls.key_file".into()]),
            (None, None) if self.client_ca_file.is_some() => Err(vec![
                "tls.client_ca_file: requires tls.cert_file and tls.key_file".into(),
            ]),
            (None, None) if certs.is_some() => Err(vec![
                "tls.self_signed_client_certs: requires tls.cert_file and tls.key_file".into(),
            ]),
            _ => Tls::load(self, certs).map_err(|e| vec![format!("{e:#}")]),
        }
    }

    /// What the listeners do with client certificates; `None` when they ask
    /// for none.
    fn client_certs(&self) -> Result<Option<ClientCertPolicy>, String> {
        let any = self.client_ca_file.is_some() || self.self_signed_client_certs;
        let mandatory = match (self.client_auth.as_deref(), any) {
            (None, false) => return Ok(None),
            (Some(_), false) => {
                return Err(
                    "tls.client_auth: needs tls.client_ca_file or tls.self_signed_client_certs"
                        .into(),
                );
            }
            (None | Some("required"), true) => true,
            (Some("optional"), true) => false,
            (Some(other), true) => {
                return Err(format!(
                    "tls.client_auth: {other:?} is not one of required, optional"
                ));
            }
        };
        Ok(Some(ClientCertPolicy {
            mandatory,
            self_signed: self.self_signed_client_certs,
        }))
    }

    /// Which RFC 8705 client authentication methods the listeners make
    /// possible (for discovery); `endpoint_base` is left to the caller.
    pub fn mtls(&self) -> MtlsSettings {
        let tls_on = self.cert_file.is_some() && self.key_file.is_some();
        MtlsSettings {
            chain_validated: tls_on && self.client_ca_file.is_some(),
            self_signed: tls_on && self.self_signed_client_certs,
            endpoint_base: None,
        }
    }
}

/// `client_auth` and `self_signed_client_certs`, checked.
#[derive(Debug, Clone, Copy)]
struct ClientCertPolicy {
    mandatory: bool,
    self_signed: bool,
}

/// The listeners' client-certificate verifier. rustls calls
/// `verify_client_cert` for the chain and `verify_tls1x_signature` for the
/// handshake signature made with the certificate's key; only the first is
/// relaxed for self-signed certificates, never the second.
#[derive(Debug)]
pub struct ClientCerts {
    /// Validation against `client_ca_file`, when there is one.
    webpki: Option<Arc<dyn ClientCertVerifier>>,
    policy: ClientCertPolicy,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
    /// The client CA's names, sent so clients pick the right certificate;
    /// none when self-signed certificates are welcome too (a client must
    /// not leave its self-signed certificate out because it is not named).
    hints: Vec<DistinguishedName>,
}

impl ClientCerts {
    fn new(ca: Option<&Path>, policy: ClientCertPolicy) -> anyhow::Result<Self> {
        let webpki = ca.map(client_verifier).transpose()?;
        let hints = match (&webpki, policy.self_signed) {
            (Some(v), false) => v.root_hint_subjects().to_vec(),
            _ => Vec::new(),
        };
        Ok(Self {
            webpki,
            policy,
            algorithms: provider().signature_verification_algorithms,
            hints,
        })
    }

    /// Whether `chain` (leaf first) validates against the client CA.
    fn validates(&self, chain: &[CertificateDer<'_>]) -> bool {
        let (Some(v), Some((leaf, rest))) = (&self.webpki, chain.split_first()) else {
            return false;
        };
        v.verify_client_cert(leaf, rest, UnixTime::now()).is_ok()
    }
}

impl ClientCertVerifier for ClientCerts {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.policy.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let chained = match &self.webpki {
            Some(v) => v.verify_client_cert(end_entity, intermediates, now),
            None => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )),
        };
        match chained {
            Ok(ok) => Ok(ok),
            Err(e) if !self.policy.self_signed => Err(e),
            // RFC 8705 2.2: no chain, only a key the client registered. It
            // must still be one well-formed certificate (of bounded size);
            // possession of its key is proven by the handshake signature.
            Err(_) => {
                if end_entity.len() > MAX_CERTIFICATE_LEN
                    || tokend_core::oauth::mtls::parse(end_entity).is_none()
                {
                    return Err(rustls::Error::InvalidCertificate(
                        rustls::CertificateError::BadEncoding,
                    ));
                }
                Ok(ClientCertVerified::assertion())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The client certificate of a handshaken connection (leaf first), with
/// whether its chain validated against the client CA, as client
/// authentication takes it. `None` without a certificate.
pub fn peer_certificate(
    certs: Option<&ClientCerts>,
    chain: Option<&[CertificateDer<'_>]>,
) -> Option<Arc<ClientCertificate>> {
    let (certs, chain) = (certs?, chain?);
    let leaf = chain.first()?;
    // Without self-signed certificates, whatever passed the handshake
    // chained; with them, ask again (rustls keeps no verdict per
    // connection).
    let validated = if certs.policy.self_signed {
        certs.validates(chain)
    } else {
        true
    };
    Some(Arc::new(ClientCertificate::new(leaf.to_vec(), validated)))
}

/// Which ALPN protocols a listener offers.
#[derive(Clone, Copy)]
pub enum Protocols {
    /// HTTP/2 only (gRPC).
    H2,
    /// HTTP/1.1 and HTTP/2.
    Http,
}

/// The acceptors built from one reading of the files.
struct Acceptors {
    h2: TlsAcceptor,
    http: TlsAcceptor,
    /// The client-certificate verifier both acceptors use.
    certs: Option<Arc<ClientCerts>>,
}

/// TLS state shared by both listeners (clones share the slot).
#[derive(Clone)]
pub struct Tls {
    acceptors: Arc<ArcSwap<Acceptors>>,
    cert_file: PathBuf,
    key_file: PathBuf,
    client_ca_file: Option<PathBuf>,
    client_certs: Option<ClientCertPolicy>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn load_cert(
    cert_file: &Path,
    key_file: &Path,
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .with_context(|| format!("tls.cert_file: cannot read {}", cert_file.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("tls.cert_file: {} is not PEM", cert_file.display()))?;
    if certs.is_empty() {
        anyhow::bail!(
            "tls.cert_file: {} holds no certificate",
            cert_file.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(key_file).with_context(|| {
        format!(
            "tls.key_file: cannot read a private key from {}",
            key_file.display()
        )
    })?;
    Ok((certs, key))
}

fn client_verifier(
    ca: &Path,
) -> anyhow::Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("tls.client_ca_file: cannot read {}", ca.display()))?
    {
        roots
            .add(c.context("tls.client_ca_file: not PEM")?)
            .context("tls.client_ca_file: bad certificate")?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .context("tls.client_ca_file")
}

/// Reads the files and builds both acceptors.
fn build(
    cert_file: &Path,
    key_file: &Path,
    client_ca_file: Option<&Path>,
    client_certs: Option<ClientCertPolicy>,
) -> anyhow::Result<Acceptors> {
    let (certs, key) = load_cert(cert_file, key_file)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("tls: protocol versions")?;
    let verifier = client_certs
        .map(|policy| ClientCerts::new(client_ca_file, policy).map(Arc::new))
        .transpose()?;
    let builder = match &verifier {
        Some(v) => builder.with_client_cert_verifier(v.clone()),
        None => builder.with_no_client_auth(),
    };
    let base = builder.with_single_cert(certs, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            anyhow::anyhow!("tls.key_file: the key does not match tls.cert_file")
        }
        e => anyhow::anyhow!("tls.key_file: unsupported private key ({e})"),
    })?;
    let mut h2 = base.clone();
    h2.alpn_protocols = vec![b"h2".to_vec()];
    let mut http = base;
    http.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Acceptors {
        h2: TlsAcceptor::from(Arc::new(h2)),
        http: TlsAcceptor::from(Arc::new(http)),
        certs: verifier,
    })
}

impl Tls {
    /// Loads `[tls]`; `None` when TLS is off.
    fn load(
        s: &TlsSettings,
        client_certs: Option<ClientCertPolicy>,
    ) -> anyhow::Result<Option<Self>> {
        let (Some(cert_file), Some(key_file)) = (&s.cert_file, &s.key_file) else {
            return Ok(None);
        };
        let acceptors = build(
            cert_file,
            key_file,
            s.client_ca_file.as_deref(),
            client_certs,
        )?;
        Ok(Some(Self {
            acceptors: Arc::new(ArcSwap::from_pointee(acceptors)),
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
            client_ca_file: s.client_ca_file.clone(),
            client_certs,
        }))
    }

    /// The files a reload reads.
    fn files(&self) -> Vec<PathBuf> {
        let mut f = vec![self.cert_file.clone(), self.key_file.clone()];
        f.extend(self.client_ca_file.clone());
        f
    }

    /// The acceptor for new connections, with the client-certificate
    /// verifier it uses (taken together, so a reload between the two cannot
    /// mix an old acceptor with a new client CA).
    pub fn acceptor(&self, p: Protocols) -> (TlsAcceptor, Option<Arc<ClientCerts>>) {
        let a = self.acceptors.load();
        let acceptor = match p {
            Protocols::H2 => a.h2.clone(),
            Protocols::Http => a.http.clone(),
        };
        (acceptor, a.certs.clone())
    }

    /// Re-reads the certificate, key and client CA; keeps the running
    /// acceptors on error.
    pub fn reload(&self) -> anyhow::Result<()> {
        let a = build(
            &self.cert_file,
            &self.key_file,
            self.client_ca_file.as_deref(),
            self.client_certs,
        )?;
        self.acceptors.store(Arc::new(a));
        tracing::info!("TLS certificate reloaded");
        Ok(())
    }

    /// Reloads on SIGHUP and when the files change, until `stop`. The SIGHUP
    /// handler is installed before this returns (SIGHUP's default action
    /// would end the process), so call it before serving.
    pub fn watch(
        self,
        every: Duration,
        stop: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let files = self.files();
        let mut watch = FileWatch::new(true, Some(every), &files);
        async move {
            while watch.next(&stop, &files).await.is_some() {
                // Files are often replaced one after the other; a pair that
                // does not match yet is tried again when the next one lands.
                if let Err(e) = self.reload() {
                    tracing::warn!(error = %format!("{e:#}"), "TLS reload failed; keeping the current certificate");
                }
                watch.mark_seen(&files);
            }
        }
    }
}
