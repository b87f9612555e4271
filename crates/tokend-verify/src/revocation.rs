//! The revocations in force, as the `RevocationFeed` describes them, and the
//! one question a resource server asks of them: is this verified token
//! revoked?
//!
//! [`RevocationSet::is_revoked`] mirrors tokend's own rule
//! (`tokend-core`'s `Core::is_revoked`) exactly, so a token is inactive here
//! exactly when introspection would call it inactive:
//! - its `jti`, or the `jti` of any ancestor in its `chain`, was revoked;
//! - its client, or any ancestor's client, is disabled, or has a cut-off mark
//!   later than that token's (or ancestor's) issue time in ms;
//! - its `sid`, or any ancestor's `sid`, is a revoked grant family;
//! - its subject has a session mark later than the earliest issue time of the
//!   token and its ancestors.
//!
//! Issue times come from [`AccessClaims::issued_at_ms`] and
//! [`ChainLink::issued_at_ms`](tokend_token::jwt::ChainLink::issued_at_ms) (an
//! ancestor whose `jti` gives no time counts as issued with its descendant,
//! a later and so safe bound), marks are "not before" Unix ms, and a token
//! issued strictly before a mark is revoked.
//!
//! Nothing grows with history: every entry carries the `expires_at` the feed
//! gave it (when every token it covers has expired) and [`RevocationSet::prune`]
//! drops it once that time plus the verifier's leeway has passed (a token is
//! still accepted `leeway` seconds after its `exp`, so its revocation must
//! outlive it by as much). A disabled client has no expiry.
//!
//! Memory: tokend's `jti`s are version 7 UUIDs, kept as 16-byte integers
//! rather than strings (the measurement is in docs/resource-servers.md).

use std::collections::{HashMap, HashSet};

use tokend_token::AccessClaims;

use crate::proto::{CredentialChange, EventKind, RevocationEvent};

/// A "not before" mark: tokens issued (ms) strictly before it are revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    not_before_ms: i64,
    /// Unix seconds; 0 = never.
    expires_at: i64,
}

impl Mark {
    fn raise(&mut self, not_before_ms: i64, expires_at: i64) {
        self.not_before_ms = self.not_before_ms.max(not_before_ms);
        self.expires_at = later(self.expires_at, expires_at);
    }
}

/// The later of two expiries where 0 means never.
fn later(a: i64, b: i64) -> i64 {
    if a == 0 || b == 0 { 0 } else { a.max(b) }
}

/// See the module documentation.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RevocationSet {
    /// Revoked `jti`s shaped like lowercase UUIDs (every tokend `jti`), as
    /// integers: value = `expires_at` (Unix seconds, 0 = never).
    uuid_jtis: HashMap<u128, i64>,
    /// Any other revoked `jti`.
    other_jtis: HashMap<Box<str>, i64>,
    /// Revoked grant families (`sid`).
    families: HashMap<Box<str>, i64>,
    /// Session marks per subject.
    subjects: HashMap<Box<str>, Mark>,
    /// Cut-off marks per client.
    clients: HashMap<Box<str>, Mark>,
    /// Disabled clients.
    disabled: HashSet<Box<str>>,
}

/// A lowercase 8-4-4-4-12 hex UUID as an integer; `None` for anything else
/// (which is then kept as a string, so two different strings never share
/// an entry).
fn uuid_bits(s: &str) -> Option<u128> {
    let b = s.as_bytes();
    if b.len() != 36 {
        return None;
    }
    let mut v: u128 = 0;
    for (i, &c) in b.iter().enumerate() {
        let d = match (i, c) {
            (8 | 13 | 18 | 23, b'-') => continue,
            (8 | 13 | 18 | 23, _) => return None,
            (_, b'0'..=b'9') => c - b'0',
            (_, b'a'..=b'f') => c - b'a' + 10,
            _ => return None,
        };
        v = v << 4 | u128::from(d);
    }
    Some(v)
}

impl RevocationSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one feed event (idempotent: applying it twice changes
    /// nothing). Kinds that carry no revocation (heartbeats, snapshot
    /// completion, key changes) are ignored here.
    pub fn apply(&mut self, ev: &RevocationEvent) {
        match ev.kind() {
            EventKind::TokenRevoked if !ev.jti.is_empty() => {
                self.revoke_jti(&ev.jti, ev.expires_at)
            }
            EventKind::FamilyRevoked if !ev.sid.is_empty() => {
                let e = self
                    .families
                    .entry(ev.sid.as_str().into())
                    .or_insert(ev.expires_at);
                *e = later(*e, ev.expires_at);
            }
            EventKind::SessionRevoked if !ev.subject.is_empty() => raise(
                &mut self.subjects,
                &ev.subject,
                ev.not_before_ms,
                ev.expires_at,
            ),
            EventKind::CredentialChange if !ev.client_id.is_empty() => match ev.change() {
                CredentialChange::CutOff => raise(
                    &mut self.clients,
                    &ev.client_id,
                    ev.not_before_ms,
                    ev.expires_at,
                ),
                CredentialChange::Disabled => {
                    self.disabled.insert(ev.client_id.as_str().into());
                }
                CredentialChange::Enabled => {
                    self.disabled.remove(ev.client_id.as_str());
                }
                CredentialChange::Unspecified => {}
            },
            _ => {}
        }
    }

    fn revoke_jti(&mut self, jti: &str, expires_at: i64) {
        let e = match uuid_bits(jti) {
            Some(bits) => self.uuid_jtis.entry(bits).or_insert(expires_at),
            None => self.other_jtis.entry(jti.into()).or_insert(expires_at),
        };
        *e = later(*e, expires_at);
    }

    fn jti_revoked(&self, jti: &str) -> bool {
        match uuid_bits(jti) {
            Some(bits) => self.uuid_jtis.contains_key(&bits),
            None => self.other_jtis.contains_key(jti),
        }
    }

    fn client_revoked(&self, client_id: &str, issued_ms: i64) -> bool {
        self.disabled.contains(client_id)
            || self
                .clients
                .get(client_id)
                .is_some_and(|m| issued_ms < m.not_before_ms)
    }

    fn family_revoked(&self, sid: Option<&String>) -> bool {
        sid.is_some_and(|s| self.families.contains_key(s.as_str()))
    }

    /// Whether a verified token is revoked (see the module documentation).
    pub fn is_revoked(&self, claims: &AccessClaims) -> bool {
        if self.is_empty() {
            return false;
        }
        let issued = claims.issued_at_ms();
        if self.jti_revoked(&claims.jti)
            || self.client_revoked(&claims.client_id, issued)
            || self.family_revoked(claims.sid.as_ref())
        {
            return true;
        }
        let mut first_issued = issued;
        for link in &claims.chain {
            let link_issued = link.issued_at_ms().unwrap_or(issued);
            first_issued = first_issued.min(link_issued);
            if self.jti_revoked(&link.jti)
                || self.client_revoked(&link.client_id, link_issued)
                || self.family_revoked(link.sid.as_ref())
            {
                return true;
            }
        }
        self.subjects
            .get(claims.sub.as_str())
            .is_some_and(|m| first_issued < m.not_before_ms)
    }

    /// Drops every entry whose `expires_at` plus `leeway` seconds lies
    /// before `now` (Unix seconds): no token it covers can still verify.
    pub fn prune(&mut self, now: i64, leeway: i64) {
        let live = |expires_at: i64| expires_at == 0 || expires_at.saturating_add(leeway) >= now;
        self.uuid_jtis.retain(|_, e| live(*e));
        self.other_jtis.retain(|_, e| live(*e));
        self.families.retain(|_, e| live(*e));
        self.subjects.retain(|_, m| live(m.expires_at));
        self.clients.retain(|_, m| live(m.expires_at));
    }

    /// Entries held, of every kind.
    pub fn len(&self) -> usize {
        self.uuid_jtis.len()
            + self.other_jtis.len()
            + self.families.len()
            + self.subjects.len()
            + self.clients.len()
            + self.disabled.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An estimate of the heap bytes held, from the maps' capacities
    /// (hashbrown: one entry plus one control byte per bucket, buckets = the
    /// next power of two above capacity * 8/7) and the strings' lengths. An
    /// estimate, not an allocator's count: the bench measures the real
    /// figure next to it.
    pub fn approx_heap_bytes(&self) -> usize {
        fn table<K, V>(cap: usize) -> usize {
            if cap == 0 {
                return 0;
            }
            let buckets = (cap * 8 / 7).next_power_of_two();
            buckets * (std::mem::size_of::<(K, V)>() + 1)
        }
        let strs = |it: &mut dyn Iterator<Item = &Box<str>>| it.map(|s| s.len()).sum::<usize>();
        table::<u128, i64>(self.uuid_jtis.capacity())
            + table::<Box<str>, i64>(self.other_jtis.capacity())
            + strs(&mut self.other_jtis.keys())
            + table::<Box<str>, i64>(self.families.capacity())
            + strs(&mut self.families.keys())
            + table::<Box<str>, Mark>(self.subjects.capacity())
            + strs(&mut self.subjects.keys())
            + table::<Box<str>, Mark>(self.clients.capacity())
            + strs(&mut self.clients.keys())
            + table::<Box<str>, ()>(self.disabled.capacity())
            + strs(&mut self.disabled.iter())
    }
}

fn raise(map: &mut HashMap<Box<str>, Mark>, key: &str, not_before_ms: i64, expires_at: i64) {
    match map.get_mut(key) {
        Some(m) => m.raise(not_before_ms, expires_at),
        None => {
            map.insert(
                key.into(),
                Mark {
                    not_before_ms,
                    expires_at,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokend_token::jwt::ChainLink;
    use tokend_token::opaque::time_ordered_id;

    const T: i64 = 1_760_000_000_000; // issue time of the test token, ms

    fn claims() -> AccessClaims {
        AccessClaims {
            iss: "https://issuer".into(),
            sub: "alice".into(),
            aud: vec!["api".into()],
            exp: T / 1000 + 300,
            iat: T / 1000,
            nbf: T / 1000,
            jti: time_ordered_id(T),
            client_id: "shop".into(),
            scope: "read".into(),
            sid: Some("grant-1".into()),
            legacy_iat_ms: None,
            act: None,
            chain: Vec::new(),
            cnf: None,
            extra: serde_json::Map::new(),
        }
    }

    fn ev(kind: EventKind) -> RevocationEvent {
        RevocationEvent {
            kind: kind as i32,
            expires_at: T / 1000 + 300,
            ..Default::default()
        }
    }

    fn token(jti: &str) -> RevocationEvent {
        RevocationEvent {
            jti: jti.into(),
            ..ev(EventKind::TokenRevoked)
        }
    }

    fn family(sid: &str) -> RevocationEvent {
        RevocationEvent {
            sid: sid.into(),
            ..ev(EventKind::FamilyRevoked)
        }
    }

    fn session(sub: &str, not_before_ms: i64) -> RevocationEvent {
        RevocationEvent {
            subject: sub.into(),
            not_before_ms,
            ..ev(EventKind::SessionRevoked)
        }
    }

    fn credential(client: &str, change: CredentialChange, not_before_ms: i64) -> RevocationEvent {
        RevocationEvent {
            client_id: client.into(),
            change: change as i32,
            not_before_ms,
            expires_at: if change == CredentialChange::CutOff {
                T / 1000 + 300
            } else {
                0
            },
            ..ev(EventKind::CredentialChange)
        }
    }

    fn with(events: &[RevocationEvent]) -> RevocationSet {
        let mut s = RevocationSet::new();
        for e in events {
            s.apply(e);
            s.apply(e); // idempotent
        }
        s
    }

    #[test]
    fn each_event_kind_revokes_what_it_names_and_nothing_else() {
        let c = claims();
        assert!(!with(&[]).is_revoked(&c));
        // One token.
        assert!(with(&[token(&c.jti)]).is_revoked(&c));
        assert!(!with(&[token(&time_ordered_id(T))]).is_revoked(&c));
        assert!(with(&[token("opaque-jti")]).is_revoked(&AccessClaims {
            jti: "opaque-jti".into(),
            ..claims()
        }));
        // An upper-case spelling is another jti (tokend compares strings).
        assert!(!with(&[token(&c.jti.to_uppercase())]).is_revoked(&c));
        // The grant family.
        assert!(with(&[family("grant-1")]).is_revoked(&c));
        assert!(!with(&[family("grant-2")]).is_revoked(&c));
        // Subject marks: strictly before the mark is revoked.
        assert!(with(&[session("alice", T + 1)]).is_revoked(&c));
        assert!(!with(&[session("alice", T)]).is_revoked(&c));
        assert!(!with(&[session("bob", T + 1)]).is_revoked(&c));
        // Client cut-off, disabled, enabled again.
        assert!(with(&[credential("shop", CredentialChange::CutOff, T + 1)]).is_revoked(&c));
        assert!(!with(&[credential("shop", CredentialChange::CutOff, T)]).is_revoked(&c));
        assert!(!with(&[credential("other", CredentialChange::CutOff, T + 1)]).is_revoked(&c));
        let disabled = credential("shop", CredentialChange::Disabled, 0);
        let enabled = credential("shop", CredentialChange::Enabled, 0);
        assert!(with(std::slice::from_ref(&disabled)).is_revoked(&c));
        assert!(!with(&[disabled.clone(), enabled.clone()]).is_revoked(&c));
        // Enabling again does not lift a cut-off.
        let cut = credential("shop", CredentialChange::CutOff, T + 1);
        assert!(with(&[cut, disabled, enabled]).is_revoked(&c));
        // Kinds without a revocation change nothing.
        let quiet = with(&[
            ev(EventKind::Heartbeat),
            ev(EventKind::KeysChanged),
            ev(EventKind::SnapshotComplete),
            ev(EventKind::Unspecified),
        ]);
        assert!(quiet.is_empty());
    }

    #[test]
    fn marks_only_move_forward() {
        let c = claims();
        let s = with(&[session("alice", T + 5), session("alice", T - 5)]);
        assert!(s.is_revoked(&c), "an older mark must not lower a newer one");
        let s = with(&[
            credential("shop", CredentialChange::CutOff, T + 5),
            credential("shop", CredentialChange::CutOff, T - 5),
        ]);
        assert!(s.is_revoked(&c));
    }

    #[test]
    fn the_chain_carries_every_ancestor_revocation() {
        // An exchanged token issued at T for "gateway", descending from a
        // token of "shop" (grant-1) issued 10 s earlier.
        let parent_ms = T - 10_000;
        let parent = ChainLink {
            jti: time_ordered_id(parent_ms),
            client_id: "shop".into(),
            sid: Some("grant-1".into()),
        };
        let c = AccessClaims {
            client_id: "gateway".into(),
            sid: None,
            chain: vec![parent.clone()],
            ..claims()
        };
        assert!(!with(&[]).is_revoked(&c));
        assert!(with(&[token(&parent.jti)]).is_revoked(&c), "ancestor jti");
        assert!(with(&[family("grant-1")]).is_revoked(&c), "ancestor sid");
        let disabled = credential("shop", CredentialChange::Disabled, 0);
        assert!(with(&[disabled]).is_revoked(&c), "ancestor client disabled");
        // The ancestor's cut-off is judged by the ancestor's issue time.
        let cut = |ms| credential("shop", CredentialChange::CutOff, ms);
        assert!(with(&[cut(parent_ms + 1)]).is_revoked(&c));
        assert!(!with(&[cut(parent_ms)]).is_revoked(&c));
        // The descendant's own client is judged by the descendant's time.
        let own = |ms| credential("gateway", CredentialChange::CutOff, ms);
        assert!(!with(&[own(parent_ms + 1)]).is_revoked(&c));
        assert!(with(&[own(T + 1)]).is_revoked(&c));
        // The subject mark is judged by the earliest issue time: a log-out
        // after the ancestor was minted revokes the whole chain.
        assert!(with(&[session("alice", parent_ms + 1)]).is_revoked(&c));
        assert!(!with(&[session("alice", parent_ms)]).is_revoked(&c));
        // An ancestor whose jti gives no time counts as issued with the
        // descendant.
        let c = AccessClaims {
            chain: vec![ChainLink {
                jti: "legacy".into(),
                ..parent
            }],
            ..c
        };
        assert!(with(&[cut(T + 1)]).is_revoked(&c));
        assert!(!with(&[cut(T)]).is_revoked(&c));
    }

    #[test]
    fn pruning_waits_for_expiry_plus_leeway_and_keeps_disabled_clients() {
        let exp = T / 1000 + 300;
        let mut s = with(&[
            token(&claims().jti),
            token("opaque"),
            family("grant-1"),
            session("alice", T + 1),
            credential("shop", CredentialChange::CutOff, T + 1),
            credential("old", CredentialChange::Disabled, 0),
        ]);
        assert_eq!(s.len(), 6);
        s.prune(exp + 30, 30);
        assert_eq!(s.len(), 6, "a token may still verify within the leeway");
        s.prune(exp + 31, 30);
        assert_eq!(s.len(), 1, "{s:?}");
        assert!(s.is_revoked(&AccessClaims {
            client_id: "old".into(),
            ..claims()
        }));
        // A later expiry of the same entry extends it; 0 never expires.
        let mut s = with(&[
            token("j"),
            RevocationEvent {
                expires_at: exp + 100,
                ..token("j")
            },
        ]);
        s.prune(exp + 50, 0);
        assert_eq!(s.len(), 1);
        let mut s = with(&[
            session("alice", T),
            RevocationEvent {
                expires_at: 0,
                ..session("alice", T)
            },
        ]);
        s.prune(i64::MAX, 0);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn uuid_jtis_are_integers_and_nothing_else_is() {
        let id = time_ordered_id(T);
        assert!(uuid_bits(&id).is_some());
        assert_ne!(uuid_bits(&id), uuid_bits(&time_ordered_id(T)));
        assert!(uuid_bits(&id.to_uppercase()).is_none());
        assert!(uuid_bits(&id.replace('-', "x")).is_none());
        assert!(uuid_bits("short").is_none());
    }
}
