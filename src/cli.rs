//! The `tokend` command line: `serve`, `check-config`, `keygen`,
//! `hash-secret`, `client new`, and `admin ...` (thin calls to the
//! `tokend.v1.ClientAdmin` API on the admin listener).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::oauth::client::{SecretHash, argon2_hash};
use crate::token::{Algorithm, keys};

#[derive(Parser, Debug)]
#[command(
    name = "tokend",
    version,
    about = "OAuth 2.0 token service (gRPC + HTTP)"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the service. Without --config, runs on built-in defaults (memory
    /// store, ephemeral key, no clients).
    Serve {
        #[arg(long, short, env = "TOKEND_CONFIG")]
        config: Option<PathBuf>,
        /// Once the listeners are bound, write a JSON object with their
        /// addresses and the process id here (`{"pid":..,"http":..,"grpc":..,
        /// "admin":..}`): a machine-readable readiness signal for scripts and
        /// tests. Written whole (temporary file, then rename).
        #[arg(long, value_name = "PATH")]
        ready_file: Option<PathBuf>,
    },
    /// Validate a config file (keys readable, clients well-formed); exit 0 or
    /// list every problem and exit 1.
    CheckConfig {
        #[arg(long, short, env = "TOKEND_CONFIG")]
        config: PathBuf,
    },
    /// Generate a signing key as a PKCS#8 PEM.
    Keygen {
        #[arg(long, default_value = "RS256", value_parser = parse_alg)]
        alg: Algorithm,
        /// Write here (mode 0600) instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Read a secret on standard input and print its hash for `secret_hashes`.
    HashSecret {
        /// Use argon2id (for human-chosen secrets) instead of SHA-256.
        #[arg(long)]
        argon2: bool,
    },
    /// Client helpers.
    Client {
        #[command(subcommand)]
        command: ClientCommand,
    },
    /// Operator commands over the admin API (`[admin] listen`).
    Admin {
        /// Admin listener address (host:port or http://host:port).
        #[arg(long, env = "TOKEND_ADMIN_ADDR", default_value = "127.0.0.1:9090")]
        addr: String,
        /// The admin bearer secret (prefer the environment variable: command
        /// lines are visible to other users).
        #[arg(long, env = "TOKEND_ADMIN_TOKEN", hide_env_values = true)]
        token: String,
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Make every token issued to the client until now inactive.
    RevokeClient { client_id: String },
    /// Refuse the client's authentication and make its tokens inactive.
    DisableClient { client_id: String },
    /// Undo disable-client.
    EnableClient { client_id: String },
    /// Print the effective clients (JSON, one per line).
    ListClients,
    /// Print one effective client (JSON).
    GetClient { client_id: String },
    /// Make every token issued for the subject until now inactive.
    RevokeSubject { subject: String },
}

#[derive(Subcommand, Debug)]
enum ClientCommand {
    /// Generate a 256-bit secret for a new client; print it once, with the
    /// TOML block to paste into the config.
    New {
        #[arg(long)]
        id: String,
        /// Allowed scopes (repeat or comma-separate).
        #[arg(long, value_delimiter = ',')]
        scope: Vec<String>,
        /// Allowed audiences (repeat or comma-separate).
        #[arg(long, value_delimiter = ',')]
        audience: Vec<String>,
    },
}

fn parse_alg(s: &str) -> Result<Algorithm, String> {
    Algorithm::parse(s).ok_or_else(|| format!("unknown algorithm {s:?}: use RS256, ES256 or EdDSA"))
}

/// Entry point used by `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tokend: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// See `serve --ready-file`.
fn write_ready_file(path: &std::path::Path, server: &crate::server::Server) -> anyhow::Result<()> {
    let body = serde_json::json!({
        "pid": std::process::id(),
        "http": server.http_addr().to_string(),
        "grpc": server.grpc_addr().to_string(),
        "admin": server.admin_addr().map(|a| a.to_string()),
    });
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body.to_string())
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("--ready-file: cannot write {}", path.display()))
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config, ready_file } => {
            let settings = Config::load(config.as_deref(), std::env::vars())?.parse()?;
            let reload_poll = settings.boot.server.reload_poll;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            // The trace exporter's channel lives on the runtime.
            let traces = {
                let _rt = rt.enter();
                crate::telemetry::init(&settings.boot.log, settings.boot.telemetry.as_ref())?
            };
            // The flush at exit shares the shutdown budget: what is left of
            // drain_delay_secs + shutdown_grace_secs after the drain, at
            // least a second.
            let budget = settings.boot.server.drain_delay + settings.boot.server.shutdown_grace;
            let stopping = Arc::new(std::sync::OnceLock::new());
            let stopping_at = stopping.clone();
            let served = rt.block_on(async move {
                let server = crate::server::Server::build(settings).await?.with_reload(
                    crate::reload::ReloadOptions {
                        config_path: config.clone(),
                        sighup: true,
                        poll: reload_poll,
                    },
                );
                eprintln!(
                    "tokend: HTTP on http://{}  gRPC on {}{}",
                    server.http_addr(),
                    server.grpc_addr(),
                    server
                        .admin_addr()
                        .map(|a| format!("  admin on {a}"))
                        .unwrap_or_default()
                );
                if let Some(path) = &ready_file {
                    write_ready_file(path, &server)?;
                }
                let shutdown = CancellationToken::new();
                let trigger = shutdown.clone();
                tokio::spawn(async move {
                    crate::server::shutdown_signal().await;
                    let _ = stopping_at.set(std::time::Instant::now());
                    trigger.cancel();
                });
                server.run(shutdown).await
            });
            if let Some(traces) = traces {
                // Blocking, on this thread: the runtime's workers still run
                // the exporter's connection meanwhile.
                let left = stopping.get().map_or(budget, |at: &std::time::Instant| {
                    budget.saturating_sub(at.elapsed())
                });
                traces.shutdown(left.max(std::time::Duration::from_secs(1)));
            }
            served?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Admin {
            addr,
            token,
            command,
        } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            rt.block_on(admin(addr, token, command))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { config } => {
            let cfg = match Config::load(Some(&config), std::env::vars()) {
                Ok(c) => c,
                Err(e) => {
                    // The error names the file already.
                    eprintln!("{e:#}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            match cfg.parse() {
                Ok(settings) => {
                    let n = settings.live.clients.all().count();
                    println!("{}: ok ({n} clients)", config.display());
                    Ok(ExitCode::SUCCESS)
                }
                Err(problems) => {
                    for p in &problems.0 {
                        eprintln!("{}: {p}", config.display());
                    }
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Keygen { alg, out } => {
            let pem = keys::generate_pem(alg)?;
            match out {
                Some(path) => write_private(&path, pem.as_bytes())?,
                None => std::io::stdout().write_all(pem.as_bytes())?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::HashSecret { argon2 } => {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            let secret = line.trim_end_matches(['\r', '\n']);
            if secret.is_empty() {
                anyhow::bail!("no secret on standard input");
            }
            let hash = if argon2 {
                argon2_hash(secret)?
            } else {
                SecretHash::sha256_of(secret)
            };
            println!("{hash}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Client {
            command:
                ClientCommand::New {
                    id,
                    scope,
                    audience,
                },
        } => {
            let secret = crate::token::opaque::generate("");
            let hash = SecretHash::sha256_of(&secret);
            let list = |v: &[String]| {
                v.iter()
                    .map(|s| format!("{s:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            println!("# client_secret (shown once; give it to the client, then forget it):");
            println!("# {secret}");
            println!();
            println!("[[clients]]");
            println!("client_id = {id:?}");
            println!("secret_hashes = [{hash:?}]");
            println!("grant_types = [\"client_credentials\"]");
            println!("scopes = [{}]", list(&scope));
            println!("default_scopes = []");
            println!("audience = [{}]", list(&audience));
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn admin(addr: String, token: String, command: AdminCommand) -> anyhow::Result<()> {
    use crate::pb;
    use crate::pb::client_admin_client::ClientAdminClient;

    let url = if addr.contains("://") {
        addr.clone()
    } else {
        format!("http://{addr}")
    };
    let channel = tonic::transport::Endpoint::from_shared(url)
        .with_context(|| format!("--addr {addr:?} is not a valid address"))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot connect to the admin API at {addr}"))?;
    let bearer: tonic::metadata::MetadataValue<tonic::metadata::Ascii> = format!("Bearer {token}")
        .parse()
        .map_err(|_| anyhow::anyhow!("--token: not a valid header value"))?;
    let mut c = ClientAdminClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
        r.metadata_mut().insert("authorization", bearer.clone());
        Ok(r)
    });
    let fail = |s: tonic::Status| anyhow::anyhow!("{:?}: {}", s.code(), s.message());
    match command {
        AdminCommand::RevokeClient { client_id } => {
            let r = c
                .revoke_client_tokens(pb::RevokeClientTokensRequest {
                    client_id: client_id.clone(),
                })
                .await
                .map_err(fail)?
                .into_inner();
            println!(
                "revoked every token of client {client_id} issued before {} (unix ms)",
                r.not_before_ms
            );
        }
        AdminCommand::RevokeSubject { subject } => {
            let r = c
                .revoke_subject_tokens(pb::RevokeSubjectTokensRequest {
                    subject: subject.clone(),
                })
                .await
                .map_err(fail)?
                .into_inner();
            println!(
                "revoked every token for subject {subject} issued before {} (unix ms)",
                r.not_before_ms
            );
        }
        AdminCommand::DisableClient { client_id } => {
            let r = c
                .disable_client(pb::ClientRef { client_id })
                .await
                .map_err(fail)?
                .into_inner();
            println!("{}", client_json(&r));
        }
        AdminCommand::EnableClient { client_id } => {
            let r = c
                .enable_client(pb::ClientRef { client_id })
                .await
                .map_err(fail)?
                .into_inner();
            println!("{}", client_json(&r));
        }
        AdminCommand::GetClient { client_id } => {
            let r = c
                .get_client(pb::ClientRef { client_id })
                .await
                .map_err(fail)?
                .into_inner();
            println!("{}", client_json(&r));
        }
        AdminCommand::ListClients => {
            let r = c
                .list_clients(pb::ListClientsRequest {})
                .await
                .map_err(fail)?
                .into_inner();
            for client in &r.clients {
                println!("{}", client_json(client));
            }
        }
    }
    Ok(())
}

/// One client as a JSON line for scripts (`jq`).
fn client_json(c: &crate::pb::ClientInfo) -> String {
    serde_json::json!({
        "client_id": c.client_id,
        "disabled": c.disabled,
        "tokens_not_before_ms": (c.tokens_not_before_ms != 0).then_some(c.tokens_not_before_ms),
        "secret_count": c.secret_count,
        "token_endpoint_auth_method": c.token_endpoint_auth_method,
        "grant_types": c.grant_types,
        "scopes": c.scopes,
        "default_scopes": c.default_scopes,
        "audience": c.audience,
        "access_ttl_secs": (c.access_ttl_secs != 0).then_some(c.access_ttl_secs),
        "redirect_uris": c.redirect_uris,
        "claims": c.claims.clone().map(crate::transport::grpc::struct_to_json),
        "claims_in_response": c.claims_in_response,
    })
    .to_string()
}

fn write_private(path: &std::path::Path, data: &[u8]) -> anyhow::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?;
    f.write_all(data)?;
    Ok(())
}
