//! `[signing]`: the signing key files, read into a [`KeySet`] once per load
//! (start and each reload), or an ephemeral key when no file is named.
//!
//! Key parsing lives in `tokend-token`, which does no I/O; reading the files
//! and naming the config key in errors is this component's job.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Deserializer};
use tokend_token::{Algorithm, KeySet, SigningKey};

/// `[signing]` as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigningSettings {
    #[serde(deserialize_with = "de_alg")]
    pub algorithm: Algorithm,
    pub key_file: Option<PathBuf>,
    pub previous_key_files: Vec<PathBuf>,
}

impl Default for SigningSettings {
    fn default() -> Self {
        Self {
            algorithm: Algorithm::RS256,
            key_file: None,
            previous_key_files: Vec::new(),
        }
    }
}

fn de_alg<'de, D: Deserializer<'de>>(d: D) -> Result<Algorithm, D::Error> {
    let s = String::deserialize(d)?;
    Algorithm::parse(&s).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "unknown algorithm {s:?}; expected RS256, ES256 or EdDSA"
        ))
    })
}

/// Reads and parses a key file; errors name the file.
pub fn key_from_file(alg: Algorithm, path: &Path) -> anyhow::Result<SigningKey> {
    let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    SigningKey::from_pem(alg, &text)
        .with_context(|| format!("{}: invalid {alg} key", path.display()))
}

/// Reads a previous key, of whatever supported algorithm its type says.
pub fn previous_key_from_file(path: &Path) -> anyhow::Result<SigningKey> {
    let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    SigningKey::from_pem_any(&text).with_context(|| format!("{}: invalid key", path.display()))
}

impl SigningSettings {
    /// The key set the files name; `Ok(None)` without `key_file` (the server
    /// then makes an ephemeral key). Problems name the key at fault.
    pub fn load(&self) -> Result<Option<KeySet>, Vec<String>> {
        let alg = self.algorithm;
        let mut problems = Vec::new();
        let active = self.key_file.as_deref().and_then(|k| {
            key_from_file(alg, k)
                .map_err(|e| problems.push(format!("signing.key_file: {e:#}")))
                .ok()
        });
        let previous: Vec<SigningKey> = self
            .previous_key_files
            .iter()
            .enumerate()
            .filter_map(|(i, k)| {
                previous_key_from_file(k)
                    .map_err(|e| problems.push(format!("signing.previous_key_files[{i}]: {e:#}")))
                    .ok()
            })
            .collect();
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(active.map(|a| KeySet::new(a, previous)))
    }
}

/// An ephemeral key set, loudly: tokens die with the process and replicas
/// cannot verify each other's tokens.
pub fn ephemeral(alg: Algorithm) -> anyhow::Result<KeySet> {
    tracing::warn!(
        %alg,
        "no signing.key_file: using an EPHEMERAL key; tokens die with this process and \
         replicas cannot verify each other's tokens. Development only: run `tokend keygen`."
    );
    Ok(KeySet::new(SigningKey::generate(alg)?, Vec::new()))
}

/// The `[signing]` keys a reload cannot apply. Key files are reloaded (their
/// content too), except between an ephemeral key and a file: replacing an
/// ephemeral key would orphan every token issued so far.
pub fn restart_only_changes(old: &SigningSettings, new: &SigningSettings) -> Vec<&'static str> {
    let SigningSettings {
        algorithm,
        key_file,
        previous_key_files: _, // live
    } = new;
    let mut out = Vec::new();
    if old.algorithm != *algorithm {
        out.push("signing.algorithm");
    }
    if old.key_file.is_none() != key_file.is_none() {
        out.push("signing.key_file");
    }
    out
}
