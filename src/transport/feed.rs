//! gRPC adapter for `tokend.v1.RevocationFeed`: authenticates the watcher
//! like `Introspect`, checks its `revocation_feed` permission, and turns the
//! core hub's items ([`crate::feed`]) into `RevocationEvent`s and its end
//! reasons into statuses (UNAVAILABLE, ABORTED) with ErrorInfo.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::Stream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::access::RequestRecord;
use super::grpc::{ERROR_DOMAIN, credentials, reply, rpc_credentials};
use crate::feed::{ClientChange, EventKind, FeedEvent, Hub, WatchEnd, WatchItem, WatchRefused};
use crate::oauth::{Core, OAuthError};
use crate::pb;

/// The `RevocationFeed` implementation.
#[derive(Clone)]
pub struct RevocationFeed {
    core: Arc<Core>,
    hub: Arc<Hub>,
}

impl RevocationFeed {
    pub fn new(core: Arc<Core>, hub: Arc<Hub>) -> Self {
        Self { core, hub }
    }
}

fn ended(code: Code, reason: &str, message: String) -> Status {
    let details =
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::<String, String>::new());
    Status::with_error_details(code, message, details)
}

fn event(cursor: String, e: &FeedEvent, snapshot: bool) -> pb::RevocationEvent {
    pb::RevocationEvent {
        cursor,
        kind: match e.kind {
            EventKind::TokenRevoked => pb::EventKind::TokenRevoked,
            EventKind::FamilyRevoked => pb::EventKind::FamilyRevoked,
            EventKind::SessionRevoked => pb::EventKind::SessionRevoked,
            EventKind::CredentialChange => pb::EventKind::CredentialChange,
            EventKind::KeysChanged => pb::EventKind::KeysChanged,
        } as i32,
        at_ms: e.at_ms,
        snapshot,
        jti: e.jti.clone(),
        sid: e.sid.clone(),
        client_id: e.client_id.clone(),
        subject: e.subject.clone(),
        not_before_ms: e.not_before_ms,
        change: match e.change {
            None => pb::CredentialChange::Unspecified,
            Some(ClientChange::CutOff) => pb::CredentialChange::CutOff,
            Some(ClientChange::Disabled) => pb::CredentialChange::Disabled,
            Some(ClientChange::Enabled) => pb::CredentialChange::Enabled,
        } as i32,
        expires_at: e.expires_at,
        heartbeat_ms: 0,
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::RevocationEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::revocation_feed_server::RevocationFeed for RevocationFeed {
    type WatchStream = EventStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let rec = RequestRecord::of(request.extensions());
        let mut r = request.into_inner();
        let creds = reply(&rec, credentials(rpc_credentials!(r), &rec))?;
        let client = reply(&rec, self.core.authenticate(&creds).await)?;
        if !client.revocation_feed {
            return reply(
                &rec,
                Err(OAuthError::unauthorized_client(
                    "this client may not watch the revocation feed (revocation_feed = true)",
                )),
            );
        }
        if r.cursor.len() > 64 {
            return reply(
                &rec,
                Err(OAuthError::invalid_request("cursor is malformed")),
            );
        }
        let rx = match self.hub.watch(&client.id, &r.cursor).await {
            Ok(rx) => rx,
            Err(WatchRefused::Busy(why)) => {
                rec.outcome::<()>(&Err(OAuthError::RateLimited {
                    retry_after: std::time::Duration::from_secs(5),
                }));
                return Err(ended(
                    Code::ResourceExhausted,
                    "too_many_watchers",
                    why.into(),
                ));
            }
            Err(WatchRefused::Unavailable(why)) => {
                return reply(&rec, Err(OAuthError::TemporarilyUnavailable(why.into())));
            }
        };
        rec.outcome::<()>(&Ok(()));
        let heartbeat_ms =
            i64::try_from(self.hub.settings().heartbeat.as_millis()).unwrap_or(i64::MAX);
        let items = ReceiverStream::new(rx).map(move |item| match item {
            Ok(WatchItem::Event { cursor, event: e }) => Ok(event(
                cursor.map(|c| c.to_string()).unwrap_or_default(),
                &e,
                cursor.is_none(),
            )),
            Ok(WatchItem::SnapshotComplete { cursor }) => Ok(pb::RevocationEvent {
                cursor: cursor.to_string(),
                kind: pb::EventKind::SnapshotComplete as i32,
                at_ms: crate::oauth::now_unix_ms(),
                heartbeat_ms,
                ..Default::default()
            }),
            Ok(WatchItem::Heartbeat { cursor }) => Ok(pb::RevocationEvent {
                cursor: cursor.to_string(),
                kind: pb::EventKind::Heartbeat as i32,
                at_ms: crate::oauth::now_unix_ms(),
                heartbeat_ms,
                ..Default::default()
            }),
            Err(WatchEnd::Unavailable(why)) => {
                Err(ended(Code::Unavailable, "temporarily_unavailable", why))
            }
            Err(WatchEnd::TooSlow) => Err(too_slow()),
        });
        // A hub that ended the watch without a final item (its stream would
        // not take one) still ends it with a status the client can act on.
        let stream = end_once(items.chain(tokio_stream::once(Err(too_slow()))));
        Ok(Response::new(Box::pin(stream)))
    }
}

fn too_slow() -> Status {
    ended(
        Code::Aborted,
        "slow_consumer",
        "this watcher fell too far behind; resume from your last cursor".into(),
    )
}

/// Ends the stream after its first error (tonic sends that error as the
/// final status).
fn end_once(
    s: impl Stream<Item = Result<pb::RevocationEvent, Status>> + Send + 'static,
) -> impl Stream<Item = Result<pb::RevocationEvent, Status>> + Send + 'static {
    let mut done = false;
    s.take_while(move |i| {
        if done {
            return false;
        }
        done = i.is_err();
        true
    })
}
