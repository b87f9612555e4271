//! Optional TLS for both listeners (`[tls]`), on rustls with the same
//! aws-lc-rs provider as the rest of tokend. The listeners take their
//! acceptors from a swappable slot: a background task rebuilds them from the
//! files (certificate, key and, for mTLS, the client CA) on SIGHUP and when
//! the files' content changes (see [`crate::watch`]), so a rotated
//! certificate or CA applies to new connections without a restart. A bad new
//! file is logged and the running acceptors stay in use.
//! `client_ca_file` turns on client-certificate verification (mTLS).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
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
    /// When set, clients must present a certificate signed by this CA (mTLS).
    pub client_ca_file: Option<PathBuf>,
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
            reload_check_secs: 5,
        }
    }
}

impl TlsSettings {
    /// Reads the files into acceptors; `Ok(None)` when TLS is off. Problems
    /// name the key at fault.
    pub fn load(&self) -> Result<Option<Tls>, Vec<String>> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => Err(vec!["tls.key_file: required with tls.cert_file".into()]),
            (None, Some(_)) => Err(vec!["tls.cert_file: required with tls.key_file".into()]),
            (None, None) if self.client_ca_file.is_some() => Err(vec![
                "tls.client_ca_file: requires tls.cert_file and tls.key_file".into(),
            ]),
            _ => Tls::load(self).map_err(|e| vec![format!("{e:#}")]),
        }
    }
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
}

/// TLS state shared by both listeners (clones share the slot).
#[derive(Clone)]
pub struct Tls {
    acceptors: Arc<ArcSwap<Acceptors>>,
    cert_file: PathBuf,
    key_file: PathBuf,
    client_ca_file: Option<PathBuf>,
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
) -> anyhow::Result<Acceptors> {
    let (certs, key) = load_cert(cert_file, key_file)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("tls: protocol versions")?;
    let builder = match client_ca_file {
        Some(ca) => builder.with_client_cert_verifier(client_verifier(ca)?),
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
    })
}

impl Tls {
    /// Loads `[tls]`; `None` when TLS is off.
    fn load(s: &TlsSettings) -> anyhow::Result<Option<Self>> {
        let (Some(cert_file), Some(key_file)) = (&s.cert_file, &s.key_file) else {
            return Ok(None);
        };
        let acceptors = build(cert_file, key_file, s.client_ca_file.as_deref())?;
        Ok(Some(Self {
            acceptors: Arc::new(ArcSwap::from_pointee(acceptors)),
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
            client_ca_file: s.client_ca_file.clone(),
        }))
    }

    /// The files a reload reads.
    fn files(&self) -> Vec<PathBuf> {
        let mut f = vec![self.cert_file.clone(), self.key_file.clone()];
        f.extend(self.client_ca_file.clone());
        f
    }

    pub fn acceptor(&self, p: Protocols) -> TlsAcceptor {
        let a = self.acceptors.load();
        match p {
            Protocols::H2 => a.h2.clone(),
            Protocols::Http => a.http.clone(),
        }
    }

    /// Re-reads the certificate, key and client CA; keeps the running
    /// acceptors on error.
    pub fn reload(&self) -> anyhow::Result<()> {
        let a = build(
            &self.cert_file,
            &self.key_file,
            self.client_ca_file.as_deref(),
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
