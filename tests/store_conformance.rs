//! The store conformance suite: every behaviour of the `Store` trait, written
//! once in `cases` and run against the memory backend, a real `redis-server`
//! and a real 3-node Redis Cluster, so the backends cannot drift apart.
//! After it, Redis-only behaviour: TTLs on every key, take-once across two
//! replicas, a Redis that never answers, and a Redis that is down at first.

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::redis::free_port;
use common::{RedisCluster, RedisServer, eventually};
use tokend::store::{LogAppend, LogId, MemoryStore, RedisStore, SharedStore, StateChange, Store};

/// Makes a store namespaced by the given key prefix. Two calls with the same
/// prefix see the same data where the backend is shared (Redis).
type Factory = dyn Fn(&str) -> SharedStore + Send + Sync;

fn redis_store(url: &str, prefix: &str) -> SharedStore {
    Arc::new(RedisStore::new(url, None, prefix, Duration::from_millis(1000)).expect("store"))
}

/// The cases. Their sleeps are the behaviour under test (TTLs and the rate
/// limit's refill, on the backend's own clock): real time on Redis, while the
/// memory backend runs on tokio's paused clock, where they cost nothing.
mod cases {
    use super::*;

    const SHORT: Duration = Duration::from_millis(150);

    pub async fn put_get_overwrite_delete(make: &Factory) {
        let s = make("t:");
        assert_eq!(s.get("k").await.unwrap(), None);
        s.put("k", b"one", Some(Duration::from_secs(60)))
            .await
            .unwrap();
        assert_eq!(s.get("k").await.unwrap().as_deref(), Some(&b"one"[..]));
        s.put("k", b"two\0bytes", None).await.unwrap();
        assert_eq!(
            s.get("k").await.unwrap().as_deref(),
            Some(&b"two\0bytes"[..])
        );
        s.delete("k").await.unwrap();
        assert_eq!(s.get("k").await.unwrap(), None);
        s.delete("never-existed").await.unwrap();
        s.ping().await.unwrap();
    }

    pub async fn ttl_expiry(make: &Factory) {
        let s = make("t:");
        s.put("a", b"1", Some(SHORT)).await.unwrap();
        assert!(s.put_new("b", b"2", Some(SHORT)).await.unwrap());
        s.put("c", b"3", Some(SHORT)).await.unwrap();
        s.put("forever", b"4", None).await.unwrap();
        assert_eq!(s.get("a").await.unwrap().as_deref(), Some(&b"1"[..]));
        tokio::time::sleep(SHORT * 3).await;
        assert_eq!(s.get("a").await.unwrap(), None);
        assert_eq!(s.get("b").await.unwrap(), None);
        assert_eq!(
            s.take("c").await.unwrap(),
            None,
            "expired entries cannot be taken"
        );
        assert_eq!(s.get("forever").await.unwrap().as_deref(), Some(&b"4"[..]));
        assert!(
            s.put_new("a", b"5", Some(SHORT)).await.unwrap(),
            "an expired key is free again"
        );
        assert_eq!(s.get("a").await.unwrap().as_deref(), Some(&b"5"[..]));
        // Overwriting replaces the TTL too.
        s.put("a", b"6", Some(Duration::from_secs(60)))
            .await
            .unwrap();
        tokio::time::sleep(SHORT * 3).await;
        assert_eq!(s.get("a").await.unwrap().as_deref(), Some(&b"6"[..]));
    }

    pub async fn put_new_only_when_absent(make: &Factory) {
        let s = make("t:");
        let ttl = Some(Duration::from_secs(60));
        assert!(s.put_new("n", b"first", ttl).await.unwrap());
        assert!(!s.put_new("n", b"second", ttl).await.unwrap());
        assert_eq!(s.get("n").await.unwrap().as_deref(), Some(&b"first"[..]));
        s.delete("n").await.unwrap();
        assert!(s.put_new("n", b"third", ttl).await.unwrap());
        assert_eq!(s.get("n").await.unwrap().as_deref(), Some(&b"third"[..]));
    }

    pub async fn take_is_once_under_concurrency(make: &Factory) {
        let s = make("t:");
        s.put("code", b"grant", Some(Duration::from_secs(60)))
            .await
            .unwrap();
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move { s.take("code").await.unwrap() })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            if let Some(v) = t.await.unwrap() {
                winners.push(v);
            }
        }
        assert_eq!(winners, vec![b"grant".to_vec()], "exactly one take wins");
        assert_eq!(s.get("code").await.unwrap(), None);
        assert_eq!(s.take("code").await.unwrap(), None);
    }

    pub async fn get_many_keeps_order(make: &Factory) {
        let s = make("t:");
        // Enough keys to land in every slot range of a 3-node cluster.
        let keys: Vec<String> = (0..24).map(|i| format!("rev:jti:{i}")).collect();
        for (i, k) in keys.iter().enumerate() {
            if i % 3 != 1 {
                s.put(k, i.to_string().as_bytes(), Some(Duration::from_secs(60)))
                    .await
                    .unwrap();
            }
        }
        let got = s.get_many(&keys).await.unwrap();
        let want: Vec<Option<Vec<u8>>> = (0..24)
            .map(|i| (i % 3 != 1).then(|| i.to_string().into_bytes()))
            .collect();
        assert_eq!(got, want);
        assert_eq!(
            s.get_many(&[]).await.unwrap(),
            Vec::<Option<Vec<u8>>>::new()
        );
        let one = s.get_many(&["nope".to_string()]).await.unwrap();
        assert_eq!(one, vec![None]);
    }

    pub async fn rate_limit_bursts_then_paces(make: &Factory) {
        let s = make("t:");
        for i in 0..3 {
            assert!(
                s.rate_limit("c", 2.0, 3).await.unwrap().allowed,
                "burst request {i}"
            );
        }
        let refused = s.rate_limit("c", 2.0, 3).await.unwrap();
        assert!(!refused.allowed);
        assert!(
            refused.retry_after > Duration::ZERO
                && refused.retry_after <= Duration::from_millis(500),
            "{refused:?}"
        );
        assert!(
            s.rate_limit("other", 2.0, 3).await.unwrap().allowed,
            "keys are independent"
        );
        tokio::time::sleep(refused.retry_after + Duration::from_millis(30)).await;
        assert!(
            s.rate_limit("c", 2.0, 3).await.unwrap().allowed,
            "one more after retry_after"
        );
        assert!(!s.rate_limit("c", 2.0, 3).await.unwrap().allowed);
    }

    pub async fn incr_counts_atomically_and_expires(make: &Factory) {
        let s = make("t:");
        let ttl = Duration::from_secs(60);
        let tasks: Vec<_> = (0..40)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move { s.incr("n", 1, ttl).await.unwrap() })
            })
            .collect();
        let mut seen: Vec<i64> = futures::future::join_all(tasks)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        seen.sort_unstable();
        assert_eq!(
            seen,
            (1..=40).collect::<Vec<_>>(),
            "each caller sees a distinct count"
        );
        assert_eq!(s.incr("n", -1, ttl).await.unwrap(), 39);
        assert_eq!(s.get("n").await.unwrap().as_deref(), Some(&b"39"[..]));
        // Every increment renews the expiry; the counter then vanishes.
        s.incr("short", 5, Duration::from_millis(200))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(s.get("short").await.unwrap(), None);
        assert_eq!(
            s.incr("short", 1, ttl).await.unwrap(),
            1,
            "starts again from 0"
        );
    }

    fn append<'a>(event: &'a [u8], field: &'a str, change: StateChange<'a>) -> LogAppend<'a> {
        LogAppend {
            event,
            field,
            change,
            max_len: 1000,
            retention: Duration::from_secs(60),
        }
    }

    fn now_ms() -> u64 {
        u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap()
    }

    pub async fn log_appends_reads_and_resumes(make: &Factory) {
        let s = make("log:");
        // Absent: only the very beginning continues.
        let empty = s.log_read(LogId::ZERO, 10).await.unwrap();
        assert!(!empty.exists && empty.entries.is_empty());
        assert!(empty.continues(LogId::ZERO));
        assert!(!empty.continues("1-0".parse().unwrap()));
        let mut ids = Vec::new();
        for i in 0..5u8 {
            let ev = [b'e', i];
            ids.push(
                s.log_append(&append(&ev, "f", StateChange::Nothing))
                    .await
                    .unwrap(),
            );
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        let all = s.log_read(LogId::ZERO, 10).await.unwrap();
        assert!(all.exists && all.continues(LogId::ZERO));
        assert_eq!(all.last, ids[4]);
        let data: Vec<_> = all.entries.iter().map(|e| e.data.clone()).collect();
        assert_eq!(data, (0..5u8).map(|i| vec![b'e', i]).collect::<Vec<_>>());
        // Exactly the entries after a cursor, bounded by `max`.
        let after = s.log_read(ids[1], 2).await.unwrap();
        assert_eq!(
            after.entries.iter().map(|e| e.id).collect::<Vec<_>>(),
            ids[2..4]
        );
        assert!(after.continues(ids[1]));
        assert!(s.log_read(ids[4], 10).await.unwrap().entries.is_empty());
        // A cursor from the future (another incarnation of the log) does not continue.
        let future = LogId {
            ms: ids[4].ms + 1,
            seq: 0,
        };
        assert!(!s.log_read(future, 10).await.unwrap().continues(future));
        // The tail: the newest, oldest first.
        let tail = s.log_tail(2).await.unwrap();
        assert_eq!(
            tail.entries.iter().map(|e| e.id).collect::<Vec<_>>(),
            ids[3..5]
        );
        // Another handle on the same prefix sees the same log where shared.
        if s.backend() != "memory" {
            let other = make("log:");
            assert_eq!(other.log_read(LogId::ZERO, 10).await.unwrap().last, ids[4]);
        }
    }

    pub async fn log_trims_and_reports_the_gap(make: &Factory) {
        let s = make("trim:");
        let mut ids = Vec::new();
        for i in 0..600u32 {
            let ev = i.to_string();
            let mut a = append(ev.as_bytes(), "f", StateChange::Nothing);
            a.max_len = 100;
            ids.push(s.log_append(&a).await.unwrap());
        }
        let view = s.log_read(ids[0], 1000).await.unwrap();
        // Trimmed (approximately on Redis: whole nodes): the oldest are gone
        // and a cursor before the trim point no longer continues.
        assert!(
            view.entries.len() < 600 && view.entries.len() >= 100,
            "{}",
            view.entries.len()
        );
        assert!(!view.continues(ids[0]));
        let newest = s.log_read(ids[598], 10).await.unwrap();
        assert!(newest.continues(ids[598]));
        assert_eq!(newest.entries.len(), 1);
    }

    pub async fn log_state_follows_sets_deletes_and_expiry(make: &Factory) {
        let s = make("state:");
        let later = now_ms() + 60_000;
        let past = now_ms() - 1;
        let set = |v: &'static [u8], exp| StateChange::Set {
            value: v,
            expires_at_ms: exp,
        };
        s.log_append(&append(b"e1", "rev:jti:a", set(b"a", Some(later))))
            .await
            .unwrap();
        s.log_append(&append(b"e2", "client:disabled:c", set(b"c", None)))
            .await
            .unwrap();
        s.log_append(&append(b"e3", "rev:jti:old", set(b"old", Some(past))))
            .await
            .unwrap();
        s.log_append(&append(b"e4", "sub:nbf:s", set(b"s1", Some(later))))
            .await
            .unwrap();
        // A later value for the same field replaces the earlier one.
        s.log_append(&append(b"e5", "sub:nbf:s", set(b"s2", Some(later))))
            .await
            .unwrap();
        let mut state = s.log_state(now_ms(), 100).await.unwrap();
        state.sort();
        assert_eq!(state, [b"a".to_vec(), b"c".to_vec(), b"s2".to_vec()]);
        s.log_append(&append(b"e6", "client:disabled:c", StateChange::Delete))
            .await
            .unwrap();
        let mut state = s.log_state(now_ms(), 100).await.unwrap();
        state.sort();
        assert_eq!(state, [b"a".to_vec(), b"s2".to_vec()]);
        // Bounded: more than `max` in force is an error, not a huge answer.
        assert!(s.log_state(now_ms(), 1).await.is_err());
        // Expiry as seen from a later clock.
        assert_eq!(s.log_state(later + 1, 100).await.unwrap().len(), 0);
    }

    pub async fn prefixes_isolate(make: &Factory) {
        let a = make("deploy-a:");
        let b = make("deploy-b:");
        let ttl = Some(Duration::from_secs(60));
        a.put("k", b"a", ttl).await.unwrap();
        assert_eq!(b.get("k").await.unwrap(), None);
        assert!(b.put_new("k", b"b", ttl).await.unwrap());
        assert_eq!(a.get("k").await.unwrap().as_deref(), Some(&b"a"[..]));
        assert_eq!(b.take("k").await.unwrap().as_deref(), Some(&b"b"[..]));
        assert_eq!(a.get("k").await.unwrap().as_deref(), Some(&b"a"[..]));
        for _ in 0..3 {
            assert!(a.rate_limit("r", 1.0, 3).await.unwrap().allowed);
        }
        assert!(!a.rate_limit("r", 1.0, 3).await.unwrap().allowed);
        assert!(b.rate_limit("r", 1.0, 3).await.unwrap().allowed);
        // The same prefix is the same namespace (where the backend is shared).
        let a2 = make("deploy-a:");
        if a2.backend() != "memory" {
            assert_eq!(a2.get("k").await.unwrap().as_deref(), Some(&b"a"[..]));
        }
    }
}

/// One test per case for a backend, each with the test attribute `$test`.
macro_rules! conformance {
    ($backend:ident, #[$test:meta], $fixture:expr) => {
        mod $backend {
            use super::*;
            conformance!(@case #[$test] $fixture, put_get_overwrite_delete);
            conformance!(@case #[$test] $fixture, ttl_expiry);
            conformance!(@case #[$test] $fixture, put_new_only_when_absent);
            conformance!(@case #[$test] $fixture, take_is_once_under_concurrency);
            conformance!(@case #[$test] $fixture, get_many_keeps_order);
            conformance!(@case #[$test] $fixture, rate_limit_bursts_then_paces);
            conformance!(@case #[$test] $fixture, incr_counts_atomically_and_expires);
            conformance!(@case #[$test] $fixture, prefixes_isolate);
            conformance!(@case #[$test] $fixture, log_appends_reads_and_resumes);
            conformance!(@case #[$test] $fixture, log_trims_and_reports_the_gap);
            conformance!(@case #[$test] $fixture, log_state_follows_sets_deletes_and_expiry);
        }
    };
    (@case #[$test:meta] $fixture:expr, $case:ident) => {
        #[$test]
        async fn $case() {
            let (_guard, make) = $fixture;
            cases::$case(&*make).await;
        }
    };
}

// The memory store keeps time with tokio's clock: paused, TTLs pass at once.
conformance!(memory, #[tokio::test(start_paused = true)], {
    let make: Box<Factory> = Box::new(|_| Arc::new(MemoryStore::new()));
    ((), make)
});

conformance!(redis, #[tokio::test], {
    let server = RedisServer::start().await;
    let url = server.url();
    let make: Box<Factory> = Box::new(move |p| redis_store(&url, p));
    (server, make)
});

/// The whole suite against one 3-node cluster (starting a cluster takes
/// seconds, so the cases share it, each under its own prefix).
#[tokio::test]
async fn redis_cluster_passes_the_suite() {
    let cluster = RedisCluster::start().await;
    let url = cluster.url();
    let run = |tag: &'static str| {
        let url = url.clone();
        move |p: &str| -> SharedStore { redis_store(&url, &format!("{tag}:{p}")) }
    };
    let s = run("probe")("");
    assert_eq!(s.backend(), "redis-cluster");
    cases::put_get_overwrite_delete(&run("1")).await;
    cases::ttl_expiry(&run("2")).await;
    cases::put_new_only_when_absent(&run("3")).await;
    cases::take_is_once_under_concurrency(&run("4")).await;
    cases::get_many_keeps_order(&run("5")).await;
    cases::rate_limit_bursts_then_paces(&run("6")).await;
    cases::incr_counts_atomically_and_expires(&run("6i")).await;
    cases::prefixes_isolate(&run("7")).await;
    cases::log_appends_reads_and_resumes(&run("8")).await;
    cases::log_trims_and_reports_the_gap(&run("9")).await;
    cases::log_state_follows_sets_deletes_and_expiry(&run("10")).await;
    // The eviction policy is read from every primary: one node changed is
    // named, by its address.
    assert_eq!(s.evictable().await.unwrap(), Vec::<String>::new());
    let port = cluster.ports[1];
    set_policy(&format!("redis://127.0.0.1:{port}/0"), "volatile-ttl").await;
    let named = s.evictable().await.unwrap();
    assert_eq!(named.len(), 1, "{named:?}");
    assert!(
        named[0].contains(&port.to_string()) && named[0].ends_with("maxmemory-policy=volatile-ttl"),
        "{named:?}"
    );
    drop(cluster);
}

async fn set_policy(url: &str, policy: &str) {
    let client = ::redis::Client::open(url).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let () = ::redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg(policy)
        .query_async(&mut con)
        .await
        .unwrap();
}

/// `evictable` names a node whose `maxmemory-policy` is not `noeviction`
/// (read from `INFO memory`); the memory store never evicts.
#[tokio::test]
async fn the_eviction_policy_is_reported() {
    assert!(MemoryStore::new().evictable().await.unwrap().is_empty());
    let server = RedisServer::start().await;
    let s = redis_store(&server.url(), "tokend:");
    assert!(s.evictable().await.unwrap().is_empty());
    for policy in ["volatile-lru", "allkeys-lfu", "volatile-ttl"] {
        set_policy(&server.url(), policy).await;
        assert_eq!(
            s.evictable().await.unwrap(),
            [format!("redis maxmemory-policy={policy}")]
        );
    }
    set_policy(&server.url(), "noeviction").await;
    assert!(s.evictable().await.unwrap().is_empty());
}

// === Redis-only behaviour ===

/// Every key tokend writes carries a TTL unless the caller asked for none.
#[tokio::test]
async fn redis_keys_carry_ttls_and_the_prefix() {
    let server = RedisServer::start().await;
    let s = redis_store(&server.url(), "tokend:");
    s.put("rev:jti:x", b"1", Some(Duration::from_secs(90)))
        .await
        .unwrap();
    assert!(
        s.put_new("code:y", b"1", Some(Duration::from_millis(1500)))
            .await
            .unwrap()
    );
    s.rate_limit("rl:client", 10.0, 5).await.unwrap();
    let client = ::redis::Client::open(server.url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let mut keys: Vec<String> = ::redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut con)
        .await
        .unwrap();
    keys.sort();
    assert_eq!(
        keys,
        ["tokend:code:y", "tokend:rev:jti:x", "tokend:rl:client"]
    );
    for (key, max_ms) in [
        ("tokend:rev:jti:x", 90_000),
        ("tokend:code:y", 1_500),
        ("tokend:rl:client", 100),
    ] {
        let pttl: i64 = ::redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut con)
            .await
            .unwrap();
        assert!(pttl > 0 && pttl <= max_ms, "{key}: PTTL {pttl}");
    }
}

/// Two replicas (two stores, two connections) redeem one code 50 times
/// concurrently: exactly one succeeds.
#[tokio::test]
async fn take_once_across_two_replicas() {
    let server = RedisServer::start().await;
    let replicas = [
        redis_store(&server.url(), "tokend:"),
        redis_store(&server.url(), "tokend:"),
    ];
    replicas[0]
        .put("code:abc", b"grant", Some(Duration::from_secs(60)))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let s = replicas[i % 2].clone();
            tokio::spawn(async move { s.take("code:abc").await.unwrap() })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap().is_some());
    }
    assert_eq!(wins, 1);
}

/// A "Redis" that accepts connections and never answers: every call fails
/// with a StoreError after about the timeout instead of hanging.
#[tokio::test]
async fn silent_redis_times_out_instead_of_hanging() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accept and hold connections open, saying nothing.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming() {
            held.push(c);
        }
    });
    let s: SharedStore = Arc::new(
        RedisStore::new(
            &format!("redis://127.0.0.1:{port}/0"),
            None,
            "t:",
            Duration::from_millis(200),
        )
        .unwrap(),
    );
    let guard = Duration::from_secs(5);
    let key = ["k".to_string()];
    let results = [
        tokio::time::timeout(guard, s.ping()).await.map(|r| r.err()),
        tokio::time::timeout(guard, s.put("k", b"v", None))
            .await
            .map(|r| r.err()),
        tokio::time::timeout(guard, s.get("k"))
            .await
            .map(|r| r.err()),
        tokio::time::timeout(guard, s.get_many(&key))
            .await
            .map(|r| r.err()),
        tokio::time::timeout(guard, s.take("k"))
            .await
            .map(|r| r.err()),
        tokio::time::timeout(guard, s.rate_limit("k", 1.0, 1))
            .await
            .map(|r| r.err()),
    ];
    for r in results {
        let err = r
            .expect("the store call hung")
            .expect("the store call failed");
        assert!(err.to_string().contains("timed out"), "{err}");
    }
}

/// A Redis that is down when tokend starts: the store is created anyway,
/// calls fail fast, and it works once Redis is up, with no restart.
#[tokio::test]
async fn redis_down_at_start_then_up() {
    let port = free_port();
    let s = redis_store(&format!("redis://127.0.0.1:{port}/0"), "t:");
    let err = s.ping().await.unwrap_err();
    assert_eq!(err.op, "ping");
    assert!(s.get("k").await.is_err());
    let _server = RedisServer::start_on(port).await;
    let reconnected = eventually(Duration::from_secs(2), || async { s.ping().await.is_ok() }).await;
    assert!(reconnected, "the store never reconnected");
    s.put("k", b"v", None).await.unwrap();
    assert_eq!(s.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
}

/// `rediss://` builds a TLS client (one rustls provider, aws-lc-rs, is
/// compiled in; none would panic here) and a handshake against a plain-text
/// Redis fails as a StoreError, not a panic or a hang.
#[tokio::test]
async fn rediss_against_plain_redis_is_a_store_error() {
    let server = RedisServer::start().await;
    let s: SharedStore = Arc::new(
        RedisStore::new(
            &format!("rediss://127.0.0.1:{}/0", server.port),
            None,
            "t:",
            Duration::from_millis(500),
        )
        .unwrap(),
    );
    let r = tokio::time::timeout(Duration::from_secs(5), s.ping())
        .await
        .expect("the TLS attempt hung");
    assert!(r.is_err());
}
