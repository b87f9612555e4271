//! Optional TLS for both listeners (`[tls]`), on rustls with the same
//! aws-lc-rs provider as the rest of tokend. The certificate sits behind a
//! resolver that can be swapped while listeners keep running: a background
//! task reloads it on SIGHUP and when the files' modification times change.
//! A bad new certificate is logged and the old one stays in use.
//! `client_ca_file` turns on client-certificate verification (mTLS); the CA is
//! read at start.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::listen::Protocols;
use crate::config::TlsSettings;

#[derive(Debug)]
struct Resolver(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// TLS state shared by both listeners.
#[derive(Clone)]
pub struct Tls {
    resolver: Arc<Resolver>,
    h2: TlsAcceptor,
    http: TlsAcceptor,
    cert_file: PathBuf,
    key_file: PathBuf,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn load_cert(cert_file: &Path, key_file: &Path) -> anyhow::Result<CertifiedKey> {
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
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .context("tls.key_file: unsupported private key")?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match()
        .context("tls.key_file: the key does not match tls.cert_file")?;
    Ok(ck)
}

impl Tls {
    /// Loads `[tls]`; `None` when TLS is off.
    pub fn load(s: &TlsSettings) -> anyhow::Result<Option<Self>> {
        let (Some(cert_file), Some(key_file)) = (&s.cert_file, &s.key_file) else {
            return Ok(None);
        };
        let resolver = Arc::new(Resolver(ArcSwap::from_pointee(load_cert(
            cert_file, key_file,
        )?)));
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("tls: protocol versions")?;
        let builder = match &s.client_ca_file {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_file_iter(ca)
                    .with_context(|| format!("tls.client_ca_file: cannot read {}", ca.display()))?
                {
                    roots
                        .add(c.context("tls.client_ca_file: not PEM")?)
                        .context("tls.client_ca_file: bad certificate")?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .context("tls.client_ca_file")?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let base = builder.with_cert_resolver(resolver.clone());
        let mut h2 = base.clone();
        h2.alpn_protocols = vec![b"h2".to_vec()];
        let mut http = base;
        http.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Some(Self {
            resolver,
            h2: TlsAcceptor::from(Arc::new(h2)),
            http: TlsAcceptor::from(Arc::new(http)),
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
        }))
    }

    pub fn acceptor(&self, p: Protocols) -> TlsAcceptor {
        match p {
            Protocols::H2 => self.h2.clone(),
            Protocols::Http => self.http.clone(),
        }
    }

    /// Re-reads the certificate and key; keeps the old pair on error.
    pub fn reload(&self) -> anyhow::Result<()> {
        let ck = load_cert(&self.cert_file, &self.key_file)?;
        self.resolver.0.store(Arc::new(ck));
        tracing::info!("TLS certificate reloaded");
        Ok(())
    }

    fn mtimes(&self) -> (Option<SystemTime>, Option<SystemTime>) {
        let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        (m(&self.cert_file), m(&self.key_file))
    }

    /// Reloads on SIGHUP and when the files change, until `stop`. The SIGHUP
    /// handler is installed before this returns (SIGHUP's default action
    /// would end the process), so call it before serving.
    pub fn watch(
        self,
        every: Duration,
        stop: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        #[cfg(unix)]
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        #[cfg(not(unix))]
        let hup: Option<()> = None;
        self.watch_loop(every, stop, hup)
    }

    async fn watch_loop(
        self,
        every: Duration,
        stop: CancellationToken,
        #[cfg(unix)] mut hup: Option<tokio::signal::unix::Signal>,
        #[cfg(not(unix))] _hup: Option<()>,
    ) {
        let mut seen = self.mtimes();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hup.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<()>();
            let forced = tokio::select! {
                () = stop.cancelled() => return,
                () = hangup => true,
                _ = tick.tick() => false,
            };
            let now = self.mtimes();
            if forced || now != seen {
                // Files are often replaced one after the other; a pair that
                // does not match yet is retried on the next change or tick.
                match self.reload() {
                    Ok(()) => seen = now,
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "TLS reload failed; keeping the current certificate")
                    }
                }
            }
        }
    }
}
