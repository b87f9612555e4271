//! What one caller may hold of a listener, so that one address cannot take
//! the service from everyone else (issue 14, item 3):
//!
//! - [`PeerShares`]: at most `server.max_concurrent_requests_per_peer`
//!   requests in flight per client address, within the listener's global
//!   `server.max_concurrent_requests`. A caller holding streams or
//!   connections open gets its share, and the others are still served.
//! - [`DeadlineBody`]: a request body (an HTTP form or JSON body, a gRPC
//!   request message) must arrive whole within
//!   `server.body_read_timeout_secs` of its headers, so held bodies give
//!   their slots back quickly whatever the request timeout.
//!
//! The third bound, `server.max_concurrent_streams` per HTTP/2 connection,
//! is an HTTP/2 setting applied where the listeners are built.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use parking_lot::Mutex;
use tokio::time::{Instant, Sleep};

/// Shards of the per-address counts (one lock each), to keep the hot path
/// uncontended.
const SHARDS: usize = 16;

/// In-flight requests per client address; see the module docs.
pub struct PeerShares {
    max: usize,
    shards: Vec<Mutex<HashMap<IpAddr, usize>>>,
}

/// One request's place in its address's share, given back on drop.
pub struct PeerSlot {
    shares: Arc<PeerShares>,
    ip: IpAddr,
}

impl PeerShares {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        })
    }

    fn shard(&self, ip: &IpAddr) -> &Mutex<HashMap<IpAddr, usize>> {
        let h = match ip {
            IpAddr::V4(v4) => u32::from(*v4) as usize,
            IpAddr::V6(v6) => u128::from(*v6) as usize,
        };
        &self.shards[h.wrapping_mul(0x9e37_79b9) % SHARDS]
    }

    /// Takes a place for `ip`; `None` when its share is used up.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<PeerSlot> {
        let mut map = self.shard(&ip).lock();
        let n = map.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            shares: self.clone(),
            ip,
        })
    }

    /// Addresses with requests in flight (entries are removed at 0, so the
    /// map is bounded by the requests in flight).
    pub fn addresses(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut map = self.shares.shard(&self.ip).lock();
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// A request body that fails once its deadline passes before its end, and
/// says so through `fired` (the access layer then answers with a clear
/// error instead of whatever the handler made of a broken body).
///
/// The timer is only armed when the body is not all there yet: most
/// request bodies arrive with their headers, and those cost no timer.
pub struct DeadlineBody<B> {
    inner: B,
    deadline: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
    fired: Arc<AtomicBool>,
}

/// The error a [`DeadlineBody`] ends with.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within server.body_read_timeout_secs")]
pub struct BodyDeadline;

impl<B> DeadlineBody<B> {
    pub fn new(inner: B, within: Duration, fired: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            deadline: Instant::now() + within,
            sleep: None,
            fired,
        }
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.as_mut().poll(cx).is_ready() {
            this.fired.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(Box::new(BodyDeadline))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Request bodies the access layer can put a deadline on (an empty body,
/// such as a GET's, is left as it is).
pub trait WithDeadline: Sized {
    fn with_deadline(self, within: Duration, fired: Arc<AtomicBool>) -> Self;
}

impl WithDeadline for axum::body::Body {
    fn with_deadline(self, within: Duration, fired: Arc<AtomicBool>) -> Self {
        if self.is_end_stream() {
            return self;
        }
        axum::body::Body::new(DeadlineBody::new(self, within, fired))
    }
}

impl WithDeadline for tonic::body::Body {
    fn with_deadline(self, within: Duration, fired: Arc<AtomicBool>) -> Self {
        if self.is_end_stream() {
            return self;
        }
        tonic::body::Body::new(DeadlineBody::new(self, within, fired))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_per_address_and_given_back() {
        let shares = PeerShares::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = shares.acquire(a).unwrap();
        let _s2 = shares.acquire(a).unwrap();
        assert!(shares.acquire(a).is_none(), "a's share is used up");
        assert!(shares.acquire(b).is_some(), "b has its own");
        drop(s1);
        assert!(shares.acquire(a).is_some(), "given back on drop");
        assert_eq!(shares.addresses(), 1, "b's entry went at 0");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_never_ends_fails_at_its_deadline() {
        use http_body_util::BodyExt;
        let (_tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(1);
        let fired = Arc::new(AtomicBool::new(false));
        let mut body = DeadlineBody::new(body, Duration::from_secs(5), fired.clone());
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.is::<BodyDeadline>(), "{err}");
        assert!(fired.load(Ordering::Relaxed));
    }
}
