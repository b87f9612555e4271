//! Accepting connections for both listeners: the connection limit, optional
//! TLS (with the handshake bounded by the header timeout, so a slow-loris
//! cannot hold a handshake open), and the HTTP server loop (hyper with a
//! header read timeout and graceful draining). gRPC gets the same accepted
//! connections as tonic's incoming stream.
//!
//! A TLS client certificate (RFC 8705) travels with its connection: as the
//! [`ClientCert`] request extension on HTTP, in the [`ConnInfo`] tonic puts
//! in each request's extensions on gRPC; `access.rs` puts it in the
//! request's record, where the handlers take it for client authentication.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokend_core::oauth::mtls::ClientCertificate;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;
use tower::ServiceExt;

use super::access::PeerAddr;
use super::tls::{Protocols, Tls, peer_certificate};

/// Listener options from `[server]` and `[tls]`.
#[derive(Clone)]
pub struct ListenOptions {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS` per connection.
    pub max_concurrent_streams: u32,
    pub tls: Option<Tls>,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// An accepted (and, with TLS, handshaken) connection. It holds a slot of
/// the connection limit until dropped.
pub struct Conn {
    io: Io,
    local: Option<SocketAddr>,
    peer: SocketAddr,
    /// The TLS client certificate, when the client presented one.
    cert: Option<Arc<ClientCertificate>>,
    _slot: OwnedSemaphorePermit,
}

/// The TLS client certificate of the request's connection (HTTP request
/// extension).
#[derive(Clone, Debug)]
pub struct ClientCert(pub Arc<ClientCertificate>);

/// What tonic learns of a connection (`Connected::ConnectInfo`, in every
/// gRPC request's extensions): the addresses and the client certificate.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub local: Option<SocketAddr>,
    pub remote: SocketAddr,
    pub cert: Option<Arc<ClientCertificate>>,
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        ConnInfo {
            local: self.local,
            remote: self.peer,
            cert: self.cert.clone(),
        }
    }
}

/// Accepts connections until `stop` is cancelled; yields them (handshaken
/// when TLS is on) on the returned channel.
pub fn accept(
    listener: TcpListener,
    opts: ListenOptions,
    protocols: Protocols,
    stop: CancellationToken,
) -> mpsc::Receiver<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(opts.max_connections));
    tokio::spawn(async move {
        let local = listener.local_addr().ok();
        loop {
            // At the limit, stop accepting: new connections wait in the
            // kernel's backlog instead of being reset.
            let slot = tokio::select! {
                () = stop.cancelled() => break,
                s = slots.clone().acquire_owned() => match s { Ok(s) => s, Err(_) => break },
            };
            let (tcp, peer) = tokio::select! {
                () = stop.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            match &opts.tls {
                None => {
                    let conn = Conn {
                        io: Io::Plain(tcp),
                        local,
                        peer,
                        cert: None,
                        _slot: slot,
                    };
                    if tx.send(Ok(conn)).await.is_err() {
                        break;
                    }
                }
                Some(tls) => {
                    let (acceptor, certs) = tls.acceptor(protocols);
                    let tx = tx.clone();
                    let limit = opts.header_read_timeout;
                    tokio::spawn(async move {
                        match tokio::time::timeout(limit, acceptor.accept(tcp)).await {
                            Ok(Ok(s)) => {
                                let cert = peer_certificate(
                                    certs.as_deref(),
                                    s.get_ref().1.peer_certificates(),
                                );
                                let conn = Conn {
                                    io: Io::Tls(Box::new(s)),
                                    local,
                                    peer,
                                    cert,
                                    _slot: slot,
                                };
                                let _ = tx.send(Ok(conn)).await;
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed")
                            }
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    });
                }
            }
        }
    });
    rx
}

/// Serves the HTTP router on accepted connections until `stop`, then drains:
/// in-flight requests finish, idle keep-alive connections close. The caller
/// bounds the drain with the shutdown grace.
pub async fn serve_http(
    mut conns: mpsc::Receiver<io::Result<Conn>>,
    app: Router,
    opts: ListenOptions,
    stop: CancellationToken,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(opts.max_concurrent_streams)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    loop {
        let conn = tokio::select! {
            () = stop.cancelled() => break,
            c = conns.recv() => match c {
                Some(Ok(c)) => c,
                Some(Err(_)) => continue,
                None => break,
            },
        };
        let peer = conn.peer;
        let cert = conn.cert.clone().map(ClientCert);
        let app = app.clone();
        let svc =
            hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(PeerAddr(peer));
                if let Some(c) = &cert {
                    req.extensions_mut().insert(c.clone());
                }
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                app.clone().oneshot(req.map(axum::body::Body::new))
            });
        let fut = graceful.watch(
            builder
                .serve_connection(TokioIo::new(conn), svc)
                .into_owned(),
        );
        tokio::spawn(async move {
            if let Err(e) = fut.await {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(conns);
    graceful.shutdown().await;
}
