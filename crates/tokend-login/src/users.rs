//! Password verification: argon2id on the blocking pool, a bounded number at
//! a time, the same work for unknown users as for known ones.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::config::User;

/// How long a login waits for a free verification slot before "busy".
const QUEUE_WAIT: Duration = Duration::from_secs(5);

pub enum Verdict {
    Ok(User),
    /// Unknown user or wrong password: the caller cannot tell which.
    Wrong,
    /// Every verification slot stayed busy.
    Busy,
}

pub struct Users {
    by_name: HashMap<String, User>,
    /// A hash of a random password with the default parameters of `tokend
    /// hash-secret --argon2`: unknown users are verified against it.
    dummy_hash: String,
    slots: Arc<Semaphore>,
}

impl Users {
    pub fn new(users: Vec<User>, max_concurrent: usize) -> anyhow::Result<Self> {
        use argon2::PasswordHasher;
        let dummy = crate::security::random_token(24);
        let dummy_hash = PasswordHasher::<argon2::password_hash::phc::PasswordHash>::hash_password(
            &argon2::Argon2::default(),
            dummy.as_bytes(),
        )
        .map_err(|e| anyhow::anyhow!("argon2 hashing failed: {e}"))?
        .to_string();
        Ok(Self {
            by_name: users.into_iter().map(|u| (u.username.clone(), u)).collect(),
            dummy_hash,
            slots: Arc::new(Semaphore::new(max_concurrent)),
        })
    }

    pub fn get(&self, username: &str) -> Option<&User> {
        self.by_name.get(username)
    }

    /// Checks `password` for `username`.
    pub async fn verify(&self, username: &str, password: String) -> Verdict {
        let user = self.by_name.get(username).cloned();
        let hash = user
            .as_ref()
            .map_or_else(|| self.dummy_hash.clone(), |u| u.password_hash.clone());
        let Ok(Ok(slot)) =
            tokio::time::timeout(QUEUE_WAIT, self.slots.clone().acquire_owned()).await
        else {
            return Verdict::Busy;
        };
        let matched = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            use argon2::PasswordVerifier;
            PasswordVerifier::<str>::verify_password(
                &argon2::Argon2::default(),
                password.as_bytes(),
                &hash,
            )
            .is_ok()
        })
        .await
        .unwrap_or(false);
        match user {
            Some(u) if matched => Verdict::Ok(u),
            _ => Verdict::Wrong,
        }
    }
}
