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
    /// Print the TOML block of a new client, for any way of authenticating
    /// (`--auth`): a fresh 256-bit secret (shown once), a key pair for
    /// private_key_jwt (private key shown once, or written with
    /// --private-key-out), a workload identity (federated), or a client
    /// certificate (tls_client_auth, self_signed_tls_client_auth).
    New(Box<NewClient>),
}

/// `tokend client new`.
#[derive(clap::Args, Debug)]
struct NewClient {
    #[arg(long)]
    id: String,
    /// Allowed scopes (repeat or comma-separate).
    #[arg(long, value_delimiter = ',')]
    scope: Vec<String>,
    /// Allowed audiences (repeat or comma-separate).
    #[arg(long, value_delimiter = ',')]
    audience: Vec<String>,
    /// How the client authenticates (default: a secret, sent either way).
    #[arg(long, value_enum)]
    auth: Option<AuthKind>,
    /// private_key_jwt: generate a key pair of this algorithm (the default,
    /// ES256, unless --public-key or --jwks-file is given).
    #[arg(long, value_parser = parse_alg, value_name = "ALG")]
    generate_key: Option<Algorithm>,
    /// private_key_jwt: write the generated private key here (mode 0600,
    /// never overwritten) instead of printing it.
    #[arg(long, value_name = "PATH")]
    private_key_out: Option<PathBuf>,
    /// private_key_jwt: the client's existing public key (PEM `PUBLIC KEY`
    /// or `CERTIFICATE`), registered inline as `jwks`.
    #[arg(long, value_name = "PEM")]
    public_key: Option<PathBuf>,
    /// private_key_jwt: the client's existing JWK Set file, registered as
    /// `jwks_file`.
    #[arg(long, value_name = "PATH")]
    jwks_file: Option<PathBuf>,
    /// federated: the `[[trusted_issuers]]` issuer of the workload's tokens.
    #[arg(long)]
    issuer: Option<String>,
    /// federated: the tokens' `sub` (Kubernetes:
    /// system:serviceaccount:NAMESPACE:NAME).
    #[arg(long)]
    subject: Option<String>,
    /// tls_client_auth: the certificate's URI SAN (a SPIFFE ID).
    #[arg(long)]
    san_uri: Option<String>,
    /// tls_client_auth: the certificate's DNS SAN.
    #[arg(long)]
    san_dns: Option<String>,
    /// tls_client_auth: the certificate's subject DN (RFC 4514).
    #[arg(long)]
    subject_dn: Option<String>,
    /// tls_client_auth: the certificate's IP address SAN.
    #[arg(long)]
    san_ip: Option<std::net::IpAddr>,
    /// self_signed_tls_client_auth: the client's certificate (PEM); its
    /// public key is registered as `jwks`.
    #[arg(long, value_name = "PEM")]
    cert: Option<PathBuf>,
    /// tls_client_auth, self_signed_tls_client_auth: bind the client's
    /// access tokens to its certificate (RFC 8705 `cnf`).
    #[arg(long)]
    bound_tokens: bool,
}

/// `client new --auth`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum AuthKind {
    #[value(name = "client_secret_basic")]
    ClientSecretBasic,
    #[value(name = "client_secret_post")]
    ClientSecretPost,
    #[value(name = "private_key_jwt")]
    PrivateKeyJwt,
    /// A workload identity: a trusted issuer's token (Kubernetes
    /// service-account tokens) as private_key_jwt's client assertion.
    #[value(name = "federated")]
    Federated,
    #[value(name = "tls_client_auth")]
    TlsClientAuth,
    #[value(name = "self_signed_tls_client_auth")]
    SelfSignedTlsClientAuth,
}

/// A TOML string.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// An inline TOML JWK Set of one public JWK (`{ keys = [{ ... }] }`).
fn inline_jwks(jwk: &serde_json::Value) -> anyhow::Result<String> {
    let members: Vec<String> = jwk
        .as_object()
        .context("a JWK is an object")?
        .iter()
        .map(|(k, v)| format!("{k} = {}", toml_str(v.as_str().unwrap_or_default())))
        .collect();
    Ok(format!("{{ keys = [{{ {} }}] }}", members.join(", ")))
}

impl NewClient {
    /// Refuses options of another kind than `--auth`'s.
    fn check_options(&self, kind: Option<AuthKind>) -> anyhow::Result<()> {
        use AuthKind as K;
        let key_kind = kind == Some(K::PrivateKeyJwt);
        let tls = kind == Some(K::TlsClientAuth);
        for (flag, given, ok) in [
            ("--generate-key", self.generate_key.is_some(), key_kind),
            (
                "--private-key-out",
                self.private_key_out.is_some(),
                key_kind,
            ),
            ("--public-key", self.public_key.is_some(), key_kind),
            ("--jwks-file", self.jwks_file.is_some(), key_kind),
            (
                "--issuer",
                self.issuer.is_some(),
                kind == Some(K::Federated),
            ),
            (
                "--subject",
                self.subject.is_some(),
                kind == Some(K::Federated),
            ),
            ("--san-uri", self.san_uri.is_some(), tls),
            ("--san-dns", self.san_dns.is_some(), tls),
            ("--subject-dn", self.subject_dn.is_some(), tls),
            ("--san-ip", self.san_ip.is_some(), tls),
            (
                "--cert",
                self.cert.is_some(),
                kind == Some(K::SelfSignedTlsClientAuth),
            ),
            (
                "--bound-tokens",
                self.bound_tokens,
                tls || kind == Some(K::SelfSignedTlsClientAuth),
            ),
        ] {
            if given && !ok {
                anyhow::bail!("{flag} does not go with --auth {kind:?}");
            }
        }
        Ok(())
    }

    /// The lines that say how the client authenticates, and what to print
    /// once before the block (a secret, a private key).
    fn auth_lines(&self) -> anyhow::Result<(Vec<String>, Option<String>)> {
        use AuthKind as K;
        self.check_options(self.auth)?;
        let method = |m: &str| format!("token_endpoint_auth_method = {}", toml_str(m));
        let secret = || {
            let secret = crate::token::opaque::generate("");
            let hash = SecretHash::sha256_of(&secret);
            let once = format!(
                "# client_secret (shown once; give it to the client, then forget it):\n# {secret}\n"
            );
            (format!("secret_hashes = [{}]", toml_str(&hash)), once)
        };
        Ok(match self.auth {
            None => {
                let (line, once) = secret();
                (vec![line], Some(once))
            }
            Some(k @ (K::ClientSecretBasic | K::ClientSecretPost)) => {
                let (line, once) = secret();
                let name = match k {
                    K::ClientSecretBasic => "client_secret_basic",
                    _ => "client_secret_post",
                };
                (vec![line, method(name)], Some(once))
            }
            Some(K::PrivateKeyJwt) => self.key_lines(&method("private_key_jwt"))?,
            Some(K::Federated) => {
                let (Some(issuer), Some(subject)) = (&self.issuer, &self.subject) else {
                    anyhow::bail!("--auth federated needs --issuer and --subject");
                };
                let lines = vec![
                    method("private_key_jwt"),
                    format!(
                        "federated_identities = [{{ issuer = {}, subject = {} }}]",
                        toml_str(issuer),
                        toml_str(subject)
                    ),
                ];
                let note = format!(
                    "# The issuer must be a [[trusted_issuers]] entry (docs/client-authentication.md):\n# [[trusted_issuers]]\n# issuer = {}\n# jwks_uri = \"...\"\n",
                    toml_str(issuer)
                );
                (lines, Some(note))
            }
            Some(K::TlsClientAuth) => {
                let names: Vec<String> = [
                    ("tls_client_auth_san_uri", self.san_uri.clone()),
                    ("tls_client_auth_san_dns", self.san_dns.clone()),
                    ("tls_client_auth_subject_dn", self.subject_dn.clone()),
                    (
                        "tls_client_auth_san_ip",
                        self.san_ip.map(|ip| ip.to_string()),
                    ),
                ]
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| format!("{k} = {}", toml_str(&v))))
                .collect();
                if names.len() != 1 {
                    anyhow::bail!(
                        "--auth tls_client_auth needs exactly one of --san-uri, --san-dns, --subject-dn, --san-ip (RFC 8705 2.1.2)"
                    );
                }
                let mut lines = vec![method("tls_client_auth")];
                lines.extend(names);
                lines.push(self.bound_line());
                (lines, None)
            }
            Some(K::SelfSignedTlsClientAuth) => {
                let Some(cert) = &self.cert else {
                    anyhow::bail!("--auth self_signed_tls_client_auth needs --cert");
                };
                let pem = std::fs::read(cert)
                    .with_context(|| format!("cannot read {}", cert.display()))?;
                let jwk = crate::token::spki::pem_public_jwk(&pem)
                    .with_context(|| cert.display().to_string())?;
                let lines = vec![
                    method("self_signed_tls_client_auth"),
                    format!("jwks = {}", inline_jwks(&jwk)?),
                    self.bound_line(),
                ];
                (lines, None)
            }
        })
    }

    fn bound_line(&self) -> String {
        format!(
            "tls_client_certificate_bound_access_tokens = {}",
            self.bound_tokens
        )
    }

    /// private_key_jwt: a generated key pair (the private key printed once
    /// or written to --private-key-out), an existing public key, or an
    /// existing JWK Set file.
    fn key_lines(&self, method: &str) -> anyhow::Result<(Vec<String>, Option<String>)> {
        let given = [
            self.generate_key.is_some(),
            self.public_key.is_some(),
            self.jwks_file.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            anyhow::bail!("give one of --generate-key, --public-key, --jwks-file");
        }
        if self.private_key_out.is_some() && (self.public_key.is_some() || self.jwks_file.is_some())
        {
            anyhow::bail!("--private-key-out is for a generated key");
        }
        if let Some(path) = &self.jwks_file {
            let text =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let doc: serde_json::Value = serde_json::from_slice(&text)
                .with_context(|| format!("{}: not JSON", path.display()))?;
            crate::token::assertion::AssertionKeys::from_jwks(&doc)
                .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.join("; ")))?;
            let line = format!("jwks_file = {}", toml_str(&path.display().to_string()));
            return Ok((vec![method.to_owned(), line], None));
        }
        if let Some(path) = &self.public_key {
            let pem =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let jwk = crate::token::spki::pem_public_jwk(&pem)
                .with_context(|| path.display().to_string())?;
            return Ok((
                vec![method.to_owned(), format!("jwks = {}", inline_jwks(&jwk)?)],
                None,
            ));
        }
        let alg = self.generate_key.unwrap_or(Algorithm::ES256);
        let pem = keys::generate_pem(alg)?;
        let key = keys::SigningKey::from_pem(alg, pem.as_bytes())?;
        let jwks = format!("jwks = {}", inline_jwks(&key.verify_key().jwk)?);
        let once = match &self.private_key_out {
            Some(path) => {
                write_private(path, pem.as_bytes())?;
                format!(
                    "# private key ({alg:?}) written to {} (mode 0600); give it to the client\n",
                    path.display()
                )
            }
            None => format!(
                "# private key ({alg:?}; shown once: give it to the client, then forget it):\n{pem}"
            ),
        };
        Ok((vec![method.to_owned(), jwks], Some(once)))
    }

    /// The whole output: what is shown once, then the block.
    fn render(&self) -> anyhow::Result<String> {
        let (auth, once) = self.auth_lines()?;
        let list = |v: &[String]| v.iter().map(|s| toml_str(s)).collect::<Vec<_>>().join(", ");
        let mut out = String::new();
        if let Some(once) = once {
            out.push_str(&once);
            out.push('\n');
        }
        out.push_str("[[clients]]\n");
        out.push_str(&format!("client_id = {}\n", toml_str(&self.id)));
        for line in auth {
            out.push_str(&line);
            out.push('\n');
        }
        out.push_str("grant_types = [\"client_credentials\"]\n");
        out.push_str(&format!("scopes = [{}]\n", list(&self.scope)));
        out.push_str("default_scopes = []\n");
        out.push_str(&format!("audience = [{}]\n", list(&self.audience)));
        Ok(out)
    }
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
            command: ClientCommand::New(new),
        } => {
            print!("{}", new.render()?);
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
