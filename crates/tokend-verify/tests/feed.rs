//! The feed client against a scripted RevocationFeed server on a real socket
//! (the test decides every event of every stream): the snapshot before
//! anything is accepted, live events, reconnects that resume from the
//! cursor (after UNAVAILABLE, after the server closed the stream, after a
//! silence of twice the heartbeat), a new snapshot replacing the set,
//! KEYS_CHANGED, fail-closed and fail-open while the feed is down, and
//! refused credentials.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use parking_lot::Mutex;
use tokend_token::keys::{Algorithm, SigningKey};
use tokend_verify::proto::{EventKind, RevocationEvent, WatchRequest};
use tokend_verify::{FeedConfig, FeedPolicy, RejectReason, Verifier, VerifierConfig};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tokio_util::sync::CancellationToken;

#[allow(clippy::all)]
mod pb {
    include!(concat!(env!("OUT_DIR"), "/full/tokend.v1.rs"));
}

use pb::revocation_feed_server::{RevocationFeed, RevocationFeedServer};

type Events = mpsc::UnboundedSender<Result<pb::RevocationEvent, tonic::Status>>;

/// One `Watch` call the server received: its request, and the sender of
/// its stream (dropping it ends the stream).
struct Conn {
    request: WatchRequest,
    events: Events,
}

impl Conn {
    fn send(&self, ev: RevocationEvent) {
        // The library's and the test server's generated types are the same
        // message: convert through the wire format.
        let wire = prost::Message::encode_to_vec(&ev);
        let ev = <pb::RevocationEvent as prost::Message>::decode(&wire[..]).unwrap();
        self.events.send(Ok(ev)).unwrap();
    }
    fn fail(&self, status: tonic::Status) {
        self.events.send(Err(status)).unwrap();
    }
}

struct Script {
    conns: mpsc::UnboundedSender<Conn>,
    refuse: Arc<Mutex<Option<tonic::Code>>>,
}

#[tonic::async_trait]
impl RevocationFeed for Script {
    type WatchStream = UnboundedReceiverStream<Result<pb::RevocationEvent, tonic::Status>>;

    async fn watch(
        &self,
        request: tonic::Request<pb::WatchRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        let r = request.into_inner();
        let request = WatchRequest {
            client_id: r.client_id,
            client_secret: r.client_secret,
            cursor: r.cursor,
            ..Default::default()
        };
        if let Some(code) = *self.refuse.lock() {
            let _ = self.conns.send(Conn {
                request,
                events: mpsc::unbounded_channel().0,
            });
            return Err(tonic::Status::new(code, "refused"));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = self.conns.send(Conn {
            request,
            events: tx,
        });
        Ok(tonic::Response::new(UnboundedReceiverStream::new(rx)))
    }
}

struct Feed {
    url: String,
    conns: mpsc::UnboundedReceiver<Conn>,
    refuse: Arc<Mutex<Option<tonic::Code>>>,
    stop: CancellationToken,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Feed {
    async fn start() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let refuse = Arc::new(Mutex::new(None));
        let (l, a) = bind().await;
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(RevocationFeedServer::new(Script {
                    conns: tx,
                    refuse: refuse.clone(),
                }))
                .serve_with_incoming_shutdown(TcpListenerStream::new(l), async move {
                    s.cancelled().await
                }),
        );
        Self {
            url: format!("http://{a}"),
            conns: rx,
            refuse,
            stop,
        }
    }

    async fn next_conn(&mut self) -> Conn {
        tokio::time::timeout(Duration::from_secs(20), self.conns.recv())
            .await
            .expect("the verifier reconnects")
            .unwrap()
    }
}

fn event(kind: EventKind, f: impl FnOnce(&mut RevocationEvent)) -> RevocationEvent {
    let mut e = RevocationEvent {
        kind: kind as i32,
        at_ms: now() * 1000,
        expires_at: now() + 600,
        ..Default::default()
    };
    f(&mut e);
    e
}

fn revoke(jti: &str, snapshot: bool, cursor: &str) -> RevocationEvent {
    event(EventKind::TokenRevoked, |e| {
        e.jti = jti.into();
        e.snapshot = snapshot;
        e.cursor = cursor.into();
    })
}

fn complete(cursor: &str, heartbeat_ms: i64) -> RevocationEvent {
    event(EventKind::SnapshotComplete, |e| {
        e.cursor = cursor.into();
        e.heartbeat_ms = heartbeat_ms;
    })
}

struct Tokens {
    key: SigningKey,
    jwks: JwksServer,
}

impl Tokens {
    async fn start() -> Self {
        let key = SigningKey::generate(Algorithm::EdDSA).unwrap();
        let jwks = JwksServer::start(&[&key]).await;
        Self { key, jwks }
    }
    /// A fresh token and its jti.
    fn mint(&self) -> (String, String) {
        let c = claims();
        (mint(&self.key, &c), c.jti)
    }
    async fn verifier(&self, feed: FeedConfig) -> Verifier {
        Verifier::start(
            VerifierConfig::new(ISSUER, &self.jwks.url, AUDIENCE)
                .feed(feed)
                .jwks(|j| j.min_refetch_interval(Duration::from_secs(3600))),
        )
        .await
        .unwrap()
    }
}

fn feed_config(url: &str) -> FeedConfig {
    let mut f = FeedConfig::new(url, WATCHER, WATCHER_SECRET);
    f.backoff_initial = Duration::from_millis(10);
    f.backoff_max = Duration::from_millis(100);
    f
}

/// Sends a heartbeat every 50 ms until cancelled.
fn heartbeats(conn: &Conn) -> CancellationToken {
    let stop = CancellationToken::new();
    let (s, events) = (stop.clone(), conn.events.clone());
    tokio::spawn(async move {
        while !s.is_cancelled() {
            let ev = Conn {
                request: WatchRequest::default(),
                events: events.clone(),
            };
            ev.send(event(EventKind::Heartbeat, |_| {}));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    stop
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_live_events_and_resuming_from_the_cursor() {
    let tokens = Tokens::start().await;
    let mut feed = Feed::start().await;
    let v = tokens.verifier(feed_config(&feed.url)).await;
    let (a, a_jti) = tokens.mint();
    let (b, b_jti) = tokens.mint();
    let (c, c_jti) = tokens.mint();

    let conn = feed.next_conn().await;
    assert_eq!(
        conn.request.cursor, "",
        "the first watch asks for a snapshot"
    );
    assert_eq!(conn.request.client_id, WATCHER);
    assert_eq!(conn.request.client_secret, WATCHER_SECRET);
    // Fail closed until the snapshot completes.
    assert_eq!(
        v.verify(&b).await.unwrap_err().reason(),
        RejectReason::FeedUnavailable
    );
    assert!(!v.is_ready());
    conn.send(revoke(&a_jti, true, ""));
    conn.send(complete("c1", 60_000));
    until(&v, &b, Ok(())).await;
    assert_eq!(
        v.verify(&a).await.unwrap_err().reason(),
        RejectReason::Revoked
    );
    assert!(v.is_ready());

    // A live revocation applies at once.
    conn.send(revoke(&b_jti, false, "c2"));
    until(&v, &b, Err(RejectReason::Revoked)).await;
    let status = v.feed_status().unwrap();
    assert!(status.connected && status.live);
    assert_eq!((status.revocations, status.cursor.as_str()), (2, "c2"));

    // UNAVAILABLE: reconnect, resuming after c2; nothing is lost.
    conn.fail(tonic::Status::unavailable("store down"));
    let conn = feed.next_conn().await;
    assert_eq!(conn.request.cursor, "c2");
    conn.send(event(EventKind::Heartbeat, |e| e.cursor = "c3".into()));
    assert_eq!(
        v.verify(&a).await.unwrap_err().reason(),
        RejectReason::Revoked
    );

    // The server closes the stream: reconnect from c3, where tokend (say)
    // finds the cursor too old and sends a new snapshot: it replaces the
    // set whole once complete.
    eventually("cursor c3", || async {
        (v.feed_status().unwrap().cursor == "c3").then_some(())
    })
    .await;
    drop(conn);
    let conn = feed.next_conn().await;
    assert_eq!(conn.request.cursor, "c3");
    conn.send(revoke(&c_jti, true, ""));
    conn.send(complete("c9", 300));
    until(&v, &a, Ok(())).await;
    assert_eq!(v.verify(&b).await.map(|_| ()), Ok(()));
    assert_eq!(
        v.verify(&c).await.unwrap_err().reason(),
        RejectReason::Revoked
    );

    // Silence for twice the heartbeat (300 ms): the stream counts as dead
    // and is reopened from c9 although the server never closed it.
    let conn2 = feed.next_conn().await;
    assert_eq!(conn2.request.cursor, "c9");
    drop(conn);

    // KEYS_CHANGED: the JWKS is refetched (no token asked for it).
    let before = tokens.jwks.requests();
    conn2.send(event(EventKind::KeysChanged, |e| e.cursor = "c10".into()));
    eventually("a JWKS refetch", || async {
        (tokens.jwks.requests() > before).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_rejects_while_the_feed_is_stale_and_fail_open_accepts() {
    let tokens = Tokens::start().await;
    let (t, jti) = tokens.mint();
    for policy in [FeedPolicy::FailClosed, FeedPolicy::FailOpen] {
        let mut feed = Feed::start().await;
        let cfg = feed_config(&feed.url)
            .policy(policy)
            .max_staleness(Duration::from_millis(500));
        let v = tokens.verifier(cfg).await;
        let conn = feed.next_conn().await;
        conn.send(revoke(&jti, true, ""));
        // A long announced heartbeat: the stream stays open while the test
        // decides when the server speaks.
        conn.send(complete("c1", 60_000));
        let beating = heartbeats(&conn);
        let (fresh, _) = tokens.mint();
        eventually("live", || async {
            v.feed_status().unwrap().live.then_some(())
        })
        .await;
        until(&v, &fresh, Ok(())).await;
        beating.cancel();
        match policy {
            FeedPolicy::FailClosed => {
                until(&v, &fresh, Err(RejectReason::FeedUnavailable)).await;
                assert!(!v.is_ready());
                // Heartbeats prove it alive again.
                let beating = heartbeats(&conn);
                until(&v, &fresh, Ok(())).await;
                until(&v, &t, Err(RejectReason::Revoked)).await;
                beating.cancel();
            }
            FeedPolicy::FailOpen => {
                eventually("stale", || async {
                    (!v.feed_status().unwrap().live).then_some(())
                })
                .await;
                assert!(v.verify(&fresh).await.is_ok(), "accepted until exp");
                // Known revocations still hold.
                assert_eq!(
                    v.verify(&t).await.unwrap_err().reason(),
                    RejectReason::Revoked
                );
            }
        }
    }

    // A feed that never answers: fail closed rejects, fail open accepts.
    let (closed_l, closed_a) = bind().await;
    drop(closed_l);
    let url = format!("http://{closed_a}");
    let (fresh, _) = tokens.mint();
    let closed = tokens.verifier(feed_config(&url)).await;
    assert_eq!(
        closed.verify(&fresh).await.unwrap_err().reason(),
        RejectReason::FeedUnavailable
    );
    let open = tokens
        .verifier(feed_config(&url).policy(FeedPolicy::FailOpen))
        .await;
    assert!(open.verify(&fresh).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_keep_retrying() {
    let tokens = Tokens::start().await;
    let mut feed = Feed::start().await;
    *feed.refuse.lock() = Some(tonic::Code::PermissionDenied);
    let v = tokens.verifier(feed_config(&feed.url)).await;
    // It keeps asking (at the slowest pace), never accepting meanwhile.
    for _ in 0..3 {
        let conn = feed.next_conn().await;
        assert_eq!(conn.request.cursor, "");
    }
    let (t, _) = tokens.mint();
    assert_eq!(
        v.verify(&t).await.unwrap_err().reason(),
        RejectReason::FeedUnavailable
    );
    // Once the operator fixes the client, it recovers.
    *feed.refuse.lock() = None;
    let conn = loop {
        let conn = feed.next_conn().await;
        if !conn.events.is_closed() {
            break conn;
        }
    };
    conn.send(complete("c1", 60_000));
    until(&v, &t, Ok(())).await;
}
