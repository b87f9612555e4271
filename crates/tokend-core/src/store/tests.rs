//! Unit tests of the memory backend's expiry bookkeeping (paused tokio time).
//! The behavioural conformance suite shared by every backend lives in
//! `tests/store_conformance.rs`.

use std::time::Duration;

use super::{MemoryStore, Store};

#[tokio::test(start_paused = true)]
async fn expired_entries_vanish_and_are_pruned() {
    let s = MemoryStore::new();
    s.put("a", b"1", Some(Duration::from_secs(10)))
        .await
        .unwrap();
    s.put("b", b"2", None).await.unwrap();
    assert_eq!(s.get("a").await.unwrap().as_deref(), Some(&b"1"[..]));
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(s.get("a").await.unwrap(), None);
    assert!(
        s.put_new("a", b"3", Some(Duration::from_secs(1)))
            .await
            .unwrap()
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(s.prune_expired(), 1);
    assert_eq!(s.len(), 1);
    assert_eq!(s.take("b").await.unwrap().as_deref(), Some(&b"2"[..]));
    assert!(s.is_empty());
}

#[tokio::test(start_paused = true)]
async fn gcra_allows_burst_then_paces() {
    let s = MemoryStore::new();
    for _ in 0..3 {
        assert!(s.rate_limit("c", 2.0, 3).await.unwrap().allowed);
    }
    let refused = s.rate_limit("c", 2.0, 3).await.unwrap();
    assert!(!refused.allowed);
    assert!(
        refused.retry_after > Duration::ZERO && refused.retry_after <= Duration::from_millis(500)
    );
    tokio::time::advance(refused.retry_after).await;
    assert!(s.rate_limit("c", 2.0, 3).await.unwrap().allowed);
    assert!(!s.rate_limit("c", 2.0, 3).await.unwrap().allowed);
    assert!(
        s.rate_limit("other", 2.0, 3).await.unwrap().allowed,
        "keys are independent"
    );
}

/// Issue 7: millions of revocations (one TTL'd mark each, as `Core::revoke`
/// writes) keep the store bounded by live marks, given the server's 30 s
/// prune. 2M marks over 200 s of paused time at 10k/s, 3 s TTL each.
#[tokio::test(start_paused = true)]
async fn millions_of_revocations_stay_bounded() {
    let s = MemoryStore::new();
    let (per_sec, ttl, prune_every) = (10_000u64, 3u64, 30u64);
    let mut peak = 0;
    for sec in 0..200u64 {
        for i in 0..per_sec {
            let key = format!("rev:jti:{sec}-{i}");
            s.put(&key, b"1", Some(Duration::from_secs(ttl)))
                .await
                .unwrap();
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        if sec % prune_every == prune_every - 1 {
            peak = peak.max(s.len());
            s.prune_expired();
        }
    }
    let bound = usize::try_from(per_sec * (ttl + prune_every + 1)).unwrap();
    assert!(peak <= bound, "peak {peak} > bound {bound}");
    tokio::time::advance(Duration::from_secs(ttl + 1)).await;
    s.prune_expired();
    assert!(s.is_empty());
}
