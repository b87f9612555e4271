//! Client lifecycle state that lives in the store, shared by every replica and
//! surviving restarts: a client's "disabled" flag, and the bulk-revocation
//! "not before" marks per client and per subject. The admin API
//! (`transport/admin.rs`) drives the operations here; introspection and client
//! authentication read the state.
//!
//! Store keys (the backend adds the deployment prefix):
//! - `client:disabled:<client_id>` = `1`, no TTL: the operator's decision
//!   overrides the file until `EnableClient`.
//! - `client:nbf:<client_id>` / `sub:nbf:<subject>` = Unix milliseconds as
//!   ASCII. A token whose issue time in milliseconds (read back from its `jti`, see
//!   [`AccessClaims::issued_at_ms`](tokend_token::AccessClaims::issued_at_ms))
//!   is strictly below the mark is inactive; one minted in the revocation's
//!   millisecond or later stays valid. The marks expire once every token they
//!   could cover has expired (the longest token lifetime any client has, plus
//!   the leeway), so nothing grows with history.
//!
//! Propagation: introspection reads all of this in its one store round trip,
//! so revocation and disabling take effect at once on every replica. The
//! token endpoint does not touch the store; it checks a per-replica copy of
//! the disabled flags ([`DisabledClients`]), refreshed from the store every
//! second, and updated at once on the replica that served the admin call. So
//! another replica may keep issuing to a just-disabled client for up to about
//! a second; those tokens introspect inactive anyway.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use super::client::{Client, GrantType};
use super::{Core, now_unix_ms};
use crate::feed::{ClientChange, FeedEvent};
use crate::store::StoreError;

pub fn client_disabled_key(client_id: &str) -> String {
    format!("client:disabled:{client_id}")
}

pub fn client_not_before_key(client_id: &str) -> String {
    format!("client:nbf:{client_id}")
}

pub fn subject_not_before_key(subject: &str) -> String {
    format!("sub:nbf:{subject}")
}

/// Whether a token issued at `issued_ms` falls before the stored mark. An
/// unreadable mark fails closed: the token counts as revoked.
pub fn issued_before(mark: Option<&[u8]>, issued_ms: i64) -> bool {
    let Some(raw) = mark else { return false };
    match std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
    {
        Some(mark_ms) => issued_ms < mark_ms,
        None => {
            tracing::error!(
                "unreadable revocation mark in the store; treating the token as revoked"
            );
            true
        }
    }
}

/// Per-replica copy of the store's disabled flags, read on the token path
/// without a store round trip.
#[derive(Default)]
pub struct DisabledClients {
    ids: RwLock<HashSet<String>>,
}

impl DisabledClients {
    pub fn contains(&self, client_id: &str) -> bool {
        self.ids.read().contains(client_id)
    }

    fn set(&self, client_id: &str, disabled: bool) {
        let mut ids = self.ids.write();
        if disabled {
            ids.insert(client_id.to_string());
        } else {
            ids.remove(client_id);
        }
    }

    fn replace(&self, ids: HashSet<String>) {
        *self.ids.write() = ids;
    }
}

/// Why an admin operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no client with this id is configured")]
    UnknownClient,
    #[error("{0}")]
    InvalidRequest(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A configured client with its store-held state (the effective client).
#[derive(Debug, Clone)]
pub struct ClientState {
    pub client: Arc<Client>,
    pub disabled: bool,
    /// Tokens issued before this instant (Unix ms) are inactive.
    pub tokens_not_before_ms: Option<i64>,
}

impl Core {
    /// How long a mark must live to outlast every token it can cover: the
    /// longest access or refresh lifetime of any client, plus the leeway.
    /// `None` when some refresh token never expires.
    fn mark_ttl(&self) -> Option<Duration> {
        let s = &self.settings;
        let mut longest = s.access_ttl;
        for c in self.clients().all() {
            if let Some(t) = c.access_ttl_secs {
                longest = longest.max(Duration::from_secs(t));
            }
            if c.allows(GrantType::RefreshToken) {
                longest = longest.max(s.refresh_ttl?);
            }
        }
        let leeway = Duration::from_secs(u64::try_from(s.leeway_secs).unwrap_or(0));
        Some(longest + leeway + Duration::from_secs(1))
    }

    fn configured(&self, client_id: &str) -> Result<Arc<Client>, AdminError> {
        if client_id.is_empty() {
            return Err(AdminError::InvalidRequest("client_id is required"));
        }
        self.clients()
            .get(client_id)
            .cloned()
            .ok_or(AdminError::UnknownClient)
    }

    /// Makes every token issued to `client_id` before now inactive; returns
    /// the mark (Unix ms).
    pub async fn revoke_client_tokens(&self, client_id: &str) -> Result<i64, AdminError> {
        self.configured(client_id)?;
        let mark = now_unix_ms();
        let key = client_not_before_key(client_id);
        let ttl = self.mark_ttl();
        let event = FeedEvent::client_changed(client_id, ClientChange::CutOff, mark).expiring(ttl);
        self.publish(&key, &event, true).await?;
        self.store
            .put(&key, mark.to_string().as_bytes(), ttl)
            .await?;
        Ok(mark)
    }

    /// Makes every token issued for `subject` before now inactive; returns
    /// the mark (Unix ms).
    pub async fn revoke_subject_tokens(&self, subject: &str) -> Result<i64, AdminError> {
        if subject.is_empty() {
            return Err(AdminError::InvalidRequest("subject is required"));
        }
        if subject.len() > 1024 || subject.chars().any(char::is_control) {
            return Err(AdminError::InvalidRequest(
                "subject must be at most 1024 characters without control characters",
            ));
        }
        let mark = now_unix_ms();
        let key = subject_not_before_key(subject);
        let ttl = self.mark_ttl();
        self.publish(&key, &FeedEvent::session_revoked(subject, mark, ttl), true)
            .await?;
        self.store
            .put(&key, mark.to_string().as_bytes(), ttl)
            .await?;
        Ok(mark)
    }

    /// Disables or re-enables a client in the store (every replica, across
    /// restarts) and in this replica's copy at once.
    pub async fn set_client_disabled(
        &self,
        client_id: &str,
        disabled: bool,
    ) -> Result<(), AdminError> {
        self.configured(client_id)?;
        let key = client_disabled_key(client_id);
        let change = if disabled {
            ClientChange::Disabled
        } else {
            ClientChange::Enabled
        };
        let event = FeedEvent::client_changed(client_id, change, 0);
        self.publish(&key, &event, disabled).await?;
        if disabled {
            self.store.put(&key, b"1", None).await?;
        } else {
            self.store.delete(&key).await?;
        }
        self.disabled.set(client_id, disabled);
        Ok(())
    }

    /// The effective clients (configuration plus store state), sorted by id;
    /// only `client_id` when given. One store round trip.
    pub async fn client_states(&self, only: Option<&str>) -> Result<Vec<ClientState>, AdminError> {
        let clients: Vec<Arc<Client>> = match only {
            Some(id) => vec![self.configured(id)?],
            None => {
                let mut v: Vec<_> = self.clients().all().cloned().collect();
                v.sort_by(|a, b| a.id.cmp(&b.id));
                v
            }
        };
        if clients.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = clients
            .iter()
            .flat_map(|c| [client_disabled_key(&c.id), client_not_before_key(&c.id)])
            .collect();
        let found = self.store.get_many(&keys).await?;
        Ok(clients
            .into_iter()
            .zip(found.chunks(2))
            .map(|(client, pair)| ClientState {
                client,
                disabled: pair.first().is_some_and(Option::is_some),
                tokens_not_before_ms: pair
                    .get(1)
                    .and_then(|v| v.as_deref())
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|s| s.trim().parse().ok()),
            })
            .collect())
    }

    /// Re-reads every configured client's disabled flag into this replica's
    /// copy (one round trip). On a store error the previous copy stays.
    pub async fn refresh_disabled(&self) -> Result<(), StoreError> {
        let ids: Vec<String> = self.clients().all().map(|c| c.id.clone()).collect();
        if ids.is_empty() {
            self.disabled.replace(HashSet::new());
            return Ok(());
        }
        let keys: Vec<String> = ids.iter().map(|id| client_disabled_key(id)).collect();
        let found = self.store.get_many(&keys).await?;
        let disabled = ids
            .into_iter()
            .zip(found)
            .filter_map(|(id, v)| v.map(|_| id))
            .collect();
        self.disabled.replace(disabled);
        Ok(())
    }
}

/// Keeps this replica's disabled flags in step with the store, every
/// `every`, until `stop`.
pub async fn run_disabled_refresh(
    core: Arc<Core>,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {
                match core.refresh_disabled().await {
                    Ok(()) => {
                        if failing {
                            tracing::info!("disabled-client flags readable again");
                        }
                        failing = false;
                    }
                    Err(e) => {
                        if !failing {
                            tracing::warn!(error = %e, "cannot refresh disabled-client flags; keeping the last known ones");
                        }
                        failing = true;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::issued_before;

    #[test]
    fn marks_compare_in_milliseconds() {
        assert!(!issued_before(None, 5));
        assert!(issued_before(Some(b"1000"), 999));
        // Minted in the revocation's millisecond or later: still valid.
        assert!(!issued_before(Some(b"1000"), 1000));
        assert!(!issued_before(Some(b"1000"), 1001));
        // Unreadable marks fail closed.
        assert!(issued_before(Some(b"garbage"), 1_000_000));
    }
}
