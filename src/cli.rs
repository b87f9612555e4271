//! The `tokend` command line: `serve`, `check-config`, `keygen`,
//! `hash-secret`, `client new`.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

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

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config } => {
            let cfg = Config::load(config.as_deref(), std::env::vars())?;
            crate::telemetry::init(&cfg.log);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            rt.block_on(async move {
                let server = crate::server::Server::build(cfg).await?;
                eprintln!(
                    "tokend: HTTP on http://{}  gRPC on {}",
                    server.http_addr(),
                    server.grpc_addr()
                );
                let shutdown = CancellationToken::new();
                let trigger = shutdown.clone();
                tokio::spawn(async move {
                    crate::server::shutdown_signal().await;
                    trigger.cancel();
                });
                server.run(shutdown).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { config } => {
            let cfg = match Config::load(Some(&config), std::env::vars()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{}: {e:#}", config.display());
                    return Ok(ExitCode::FAILURE);
                }
            };
            let problems = cfg.validate();
            if problems.is_empty() {
                println!("{}: ok ({} clients)", config.display(), cfg.clients.len());
                Ok(ExitCode::SUCCESS)
            } else {
                for p in &problems {
                    eprintln!("{}: {p}", config.display());
                }
                Ok(ExitCode::FAILURE)
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
