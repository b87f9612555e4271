//! Wiring and lifecycle: build the store, keys and core from parsed
//! [`Settings`],
//! bind both listeners, and run the gRPC server, the HTTP bridge and the
//! background tasks under one cancellation token.
//!
//! [`Server::build`] binds (port 0 allowed) before anything runs, so tests and
//! `main` share one path and tests learn the real ports.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;

use crate::config::{Boot, Config, Settings};
use crate::health::{self, Readiness};
use crate::oauth::{Core, OAuthError};
use crate::pb::authorization_service_server::AuthorizationServiceServer;
use crate::pb::revocation_feed_server::RevocationFeedServer;
use crate::pb::token_service_server::TokenServiceServer;
use crate::reload::{ReloadOptions, Reloader};
use crate::store::{self, SharedStore};
use crate::transport::access::{AccessLayer, RequestLimits, Transport};
use crate::transport::listen::{self, ListenOptions};
use crate::transport::tls::Protocols;
use crate::transport::{grpc, http};

/// A built, bound, not yet running tokend.
pub struct Server {
    core: Arc<Core>,
    store: SharedStore,
    readiness: Readiness,
    health_reporter: tonic_health::server::HealthReporter,
    http_listener: TcpListener,
    grpc_listener: TcpListener,
    admin_listener: Option<TcpListener>,
    reload: Option<ReloadOptions>,
    /// Trusted issuers' JWKS fetchers, kept by the reloader.
    federation: crate::federation::Federation,
    /// The file as written, for the reloader's comparison.
    file: Config,
    boot: Boot,
}

impl Server {
    /// Connects the store and binds the listeners of parsed `settings` (see
    /// [`crate::config::load`]). Errors name the config key at fault.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let Settings { file, boot, live } = settings;
        let keys = match live.keys {
            Some(keys) => keys,
            None => crate::signing::ephemeral(file.signing.algorithm)?,
        };
        let store: SharedStore = Arc::new(
            store::instrumented::Instrumented::new(
                store::connect(&boot.store).await.context("store")?,
            )
            .with_server_address(boot.store.server_address()),
        );
        let federation = crate::federation::Federation::default();
        let clients = live
            .clients
            .with_issuers(federation.issuers(&live.trusted_issuers));
        let core = Arc::new(Core::new(
            boot.oauth.clone(),
            live.limits,
            clients,
            keys,
            store.clone(),
        ));
        // Disabled flags must hold from the first request after a restart.
        if let Err(e) = core.refresh_disabled().await {
            tracing::warn!(error = %e, "cannot read disabled-client flags at start; retrying every second");
        }
        let health_reporter = tonic_health::server::HealthReporter::new();
        health_reporter
            .set_service_status(
                crate::health::LIVENESS_SERVICE,
                tonic_health::ServingStatus::Serving,
            )
            .await;
        let readiness = Readiness::new(health_reporter.clone());
        readiness.set(false, "starting").await;
        let http_listener = bind("http.listen", boot.http_listen).await?;
        let grpc_listener = bind("grpc.listen", boot.grpc_listen).await?;
        let admin_listener = match &boot.admin {
            Some(admin) => Some(bind("admin.listen", admin.listen).await?),
            None => None,
        };
        Ok(Self {
            core,
            store,
            readiness,
            health_reporter,
            http_listener,
            grpc_listener,
            admin_listener,
            reload: None,
            federation,
            file,
            boot,
        })
    }

    /// Enables hot reload of clients and keys (see [`crate::reload`]).
    pub fn with_reload(mut self, opts: ReloadOptions) -> Self {
        self.reload = Some(opts);
        self
    }

    /// The `[admin]` listener's address, when one is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_listener
            .as_ref()
            .map(|l| l.local_addr().expect("bound listener"))
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_listener.local_addr().expect("bound listener")
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_listener.local_addr().expect("bound listener")
    }

    pub fn core(&self) -> Arc<Core> {
        self.core.clone()
    }

    /// Serves until `shutdown` is cancelled, then drains: readiness turns off
    /// at once, listeners stop accepting, and in-flight requests get up to
    /// `[server] shutdown_grace_secs` to finish.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Server {
            core,
            store,
            readiness,
            health_reporter,
            http_listener,
            grpc_listener,
            admin_listener,
            reload,
            federation,
            file,
            boot,
        } = self;
        let boot = &boot;
        let max_message = boot.grpc_max_message_bytes;
        let health_service = tonic_health::pb::health_server::HealthServer::new(
            tonic_health::server::HealthService::from_health_reporter(health_reporter),
        )
        .max_decoding_message_size(max_message);
        let grace = boot.server.shutdown_grace;
        let stop_servers = CancellationToken::new();
        let background = CancellationToken::new();

        // The recorder first: the background tasks below record from their
        // first iteration (tokend_store_up would otherwise be missing for a
        // second after start).
        let metrics_handle = crate::metrics::install();
        crate::metrics::signing_keys(&core.keys());
        tokio::spawn(health::run_checks(
            readiness.clone(),
            store.clone(),
            boot.store.timeout(),
            Duration::from_secs(1),
            boot.store.allow_eviction(),
            background.clone(),
        ));
        tokio::spawn(prune_loop(store.clone(), background.clone()));
        tokio::spawn(crate::oauth::lifecycle::run_disabled_refresh(
            core.clone(),
            Duration::from_secs(1),
            background.clone(),
        ));
        if let Some(opts) = reload {
            let reloader = Reloader::new(core.clone(), file, opts).with_federation(federation);
            tokio::spawn(reloader.run(background.clone()));
        }
        tokio::spawn(crate::metrics::upkeep(
            metrics_handle.clone(),
            background.clone(),
        ));
        let tls = boot.tls.clone();
        if let Some(t) = tls.clone() {
            tokio::spawn(t.watch(boot.tls_reload_check, background.clone()));
        }
        let limits = &boot.server;
        let opts = ListenOptions {
            max_connections: limits.max_connections,
            header_read_timeout: limits.header_read_timeout,
            max_concurrent_streams: limits.max_concurrent_streams,
            tls,
        };
        let request_limits = RequestLimits {
            max_concurrent: limits.max_concurrent_requests,
            max_concurrent_per_peer: limits.max_concurrent_requests_per_peer,
            timeout: limits.request_timeout,
            body_read_timeout: limits.body_read_timeout,
        };
        let label: Arc<dyn Fn(&str) -> String + Send + Sync> = {
            let core = core.clone();
            Arc::new(move |id: &str| core.client_label(id))
        };

        // The login app's bearer secret.
        let login_app = boot
            .login_app_token
            .map(crate::transport::admin::AdminAuth::login_app);
        // The revocation feed's hub follows the store's log until the
        // listeners stop (its watchers' streams end then, so draining does
        // not wait on them).
        let hub = crate::feed::Hub::new(&core, core.settings().feed.clone(), stop_servers.clone());
        tokio::spawn(hub.clone().run());
        let (reflection_v1, reflection_v1alpha) = grpc::reflection(
            &[
                "tokend.v1.TokenService",
                "tokend.v1.AuthorizationService",
                "tokend.v1.RevocationFeed",
            ],
            true,
            max_message,
        )?;
        let grpc_addr = grpc_listener.local_addr()?;
        let grpc_stop = stop_servers.clone();
        let grpc_conns = listen::accept(
            grpc_listener,
            opts.clone(),
            Protocols::H2,
            stop_servers.clone(),
        );
        let grpc_server = tonic::transport::Server::builder()
            // Long-lived HTTP/2 connections would pin clients to one replica
            // behind a ClusterIP Service; recycle them so load spreads.
            .max_connection_age(Duration::from_secs(300))
            .max_concurrent_streams(limits.max_concurrent_streams)
            .layer(AccessLayer::<tonic::body::Body>::new(
                Transport::Grpc,
                label.clone(),
                request_limits,
                |e| grpc::status(e).into_http(),
            ))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(
                TokenServiceServer::new(grpc::TokenService::new(core.clone()))
                    .max_decoding_message_size(max_message)
                    .max_encoding_message_size(max_message),
            )
            .add_service(
                RevocationFeedServer::new(crate::transport::feed::RevocationFeed::new(
                    core.clone(),
                    hub,
                ))
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_message),
            )
            .add_service(InterceptedService::new(
                AuthorizationServiceServer::new(grpc::AuthorizationService::new(core.clone()))
                    .max_decoding_message_size(max_message)
                    .max_encoding_message_size(max_message),
                move |req: tonic::Request<()>| match &login_app {
                    Some(auth) => auth.check(&req).map(|()| req),
                    None => grpc::reply(
                        &crate::transport::access::RequestRecord::of(req.extensions()),
                        Err(OAuthError::AccessDenied(
                            "no login app is configured ([authorization] login_app_token_hash)"
                                .into(),
                        )),
                    ),
                },
            ))
            .serve_with_incoming_shutdown(ReceiverStream::new(grpc_conns), async move {
                grpc_stop.cancelled().await
            });

        let http_addr = http_listener.local_addr()?;
        let mut app = http::router(http::HttpState {
            core: core.clone(),
            readiness: readiness.clone(),
            max_body: boot.max_body_bytes,
        });
        if admin_listener.is_none() {
            app = app.merge(crate::metrics::router(metrics_handle.clone()));
        }
        let app = app.layer(AccessLayer::<axum::body::Body>::new(
            Transport::Http,
            label,
            request_limits,
            http::error_response,
        ));
        // Before routing (so outside the router): the path prefix and a
        // trailing slash are removed.
        let app = axum::Router::new().fallback_service(
            tower::ServiceBuilder::new()
                .map_request(http::canonical_path(boot.oauth.path_prefix.as_str().into()))
                .service(app),
        );
        let http_conns = listen::accept(
            http_listener,
            opts.clone(),
            Protocols::Http,
            stop_servers.clone(),
        );
        let http_server = listen::serve_http(http_conns, app, opts.clone(), stop_servers.clone());
        let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
        let admin_task = match admin_listener {
            Some(l) => {
                // Plain HTTP (h2c for gRPC): operators and scrapers live inside
                // the cluster network; keep this port private.
                let admin_opts = ListenOptions {
                    tls: None,
                    ..opts.clone()
                };
                let app = admin_router(core.clone(), boot, metrics_handle.clone())?
                    .merge(http::probes(readiness.clone()));
                let conns =
                    listen::accept(l, admin_opts.clone(), Protocols::Http, stop_servers.clone());
                Some(tokio::spawn(listen::serve_http(
                    conns,
                    app,
                    admin_opts,
                    stop_servers.clone(),
                )))
            }
            None => None,
        };

        tracing::info!(
            %http_addr,
            %grpc_addr,
            admin_addr = ?admin_addr,
            tls = opts.tls.is_some(),
            store = store.backend(),
            kid = core.keys().active().kid(),
            alg = %core.keys().active().alg(),
            "tokend listening"
        );

        let grpc_task = tokio::spawn(grpc_server);
        let http_task = tokio::spawn(http_server);

        shutdown.cancelled().await;
        tracing::info!(
            grace_secs = grace.as_secs(),
            "shutting down: draining requests"
        );
        readiness.shutting_down().await;
        let drain_delay = boot.server.drain_delay;
        if !drain_delay.is_zero() {
            // Not ready, still serving: endpoint lists catch up before the
            // listeners close, so no new connection is refused meanwhile.
            tracing::info!(
                drain_delay_secs = drain_delay.as_secs(),
                "not ready; still accepting while load balancers catch up"
            );
            tokio::time::sleep(drain_delay).await;
        }
        stop_servers.cancel();
        let drained = tokio::time::timeout(grace, async {
            let g = grpc_task.await;
            let h = http_task.await;
            if let Some(a) = admin_task
                && let Err(e) = a.await
            {
                tracing::warn!(error = %e, "admin server task");
            }
            (g, h)
        })
        .await;
        background.cancel();
        match drained {
            Ok((g, h)) => {
                g.context("gRPC server task")?.context("gRPC server")?;
                h.context("HTTP server task")?;
                tracing::info!("stopped");
            }
            Err(_) => {
                tracing::warn!("shutdown grace period elapsed; exiting with requests in flight")
            }
        }
        Ok(())
    }
}

/// The admin listener's routes: Prometheus `/metrics`, and, when
/// `[admin] token_hash` is set, `tokend.v1.ClientAdmin` (+ reflection) behind
/// its own bearer authentication, on one port (gRPC is h2c, metrics HTTP/1.1).
fn admin_router(
    core: Arc<Core>,
    boot: &Boot,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
) -> anyhow::Result<axum::Router> {
    let app = crate::metrics::router(metrics);
    let Some(expected) = boot.admin.as_ref().and_then(|a| a.token) else {
        tracing::info!(
            "admin listener serves /metrics only: no admin.token_hash, no ClientAdmin API"
        );
        return Ok(app);
    };
    let admin = crate::transport::admin::router(
        core,
        crate::transport::admin::AdminAuth::new(expected),
        boot.grpc_max_message_bytes,
    )?;
    tracing::info!("admin API enabled (tokend.v1.ClientAdmin) on the admin listener");
    Ok(app.merge(admin))
}

async fn bind(key: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("{key}: cannot bind {addr}"))
}

async fn prune_loop(store: SharedStore, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {
                let removed = store.prune();
                if removed > 0 {
                    tracing::debug!(removed, "pruned expired store entries");
                }
            }
        }
    }
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
