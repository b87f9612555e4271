//! Issue 14, item 3: one caller holding streams or connections open with
//! unfinished bodies must not take the service from everyone else. Each
//! HTTP/2 connection gets a bounded number of streams, bodies have a
//! deadline of their own, and one address gets a share of the global
//! concurrency budget. Over real sockets, gRPC and HTTP/1.1 alike.

use std::time::{Duration, Instant};

use crate::common::grpc::issue_request as issue;
use crate::common::http::{client_from, held_token_request, token_from};
use crate::common::{ConfigBuilder, SECRET, TestApp, eventually};

/// Small numbers so the test stays quick: 12 streams per connection, 8
/// requests per address, 32 in all, 2 s for a body.
fn bounded() -> ConfigBuilder {
    ConfigBuilder::memory()
        .set("server.max_concurrent_streams", 12)
        .set("server.max_concurrent_requests_per_peer", 8)
        .set("server.max_concurrent_requests", 32)
        .set("server.body_read_timeout_secs", 2)
        .set("server.request_timeout_secs", 30)
}

/// Opens an HTTP/2 connection from 127.0.0.1 and as many Issue streams as
/// the server lets it, each announcing a 100-byte message and sending 5.
async fn hold_grpc_streams(
    app: &TestApp,
) -> (
    u32,
    Vec<h2::client::ResponseFuture>,
    Vec<h2::SendStream<bytes::Bytes>>,
) {
    let tcp = tokio::net::TcpStream::connect(app.grpc).await.unwrap();
    let (h2, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut h2 = h2.ready().await.unwrap();
    let announced = announced_streams(&h2).await;
    let (mut held, mut bodies) = (Vec::new(), Vec::new());
    // As many as the server allows: beyond its SETTINGS the client would
    // only queue streams locally.
    for _ in 0..announced {
        let Ok(Ok(ready)) =
            tokio::time::timeout(Duration::from_millis(200), h2.clone().ready()).await
        else {
            break;
        };
        h2 = ready;
        let req = http::Request::post(format!("http://{}/tokend.v1.TokenService/Issue", app.grpc))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let Ok((res, mut body)) = h2.send_request(req, false) else {
            break;
        };
        body.send_data(
            bytes::Bytes::from_static(&[0, 0, 0, 0, 100, 1, 2, 3, 4, 5]),
            false,
        )
        .unwrap();
        held.push(res);
        bodies.push(body);
    }
    (announced, held, bodies)
}

/// The server's SETTINGS_MAX_CONCURRENT_STREAMS, once its SETTINGS frame
/// has arrived (until then the client assumes no limit).
async fn announced_streams(h2: &h2::client::SendRequest<bytes::Bytes>) -> u32 {
    let settled = eventually(Duration::from_secs(5), || async {
        h2.current_max_send_streams() != usize::MAX
    })
    .await;
    assert!(settled, "no SETTINGS from the server");
    h2.current_max_send_streams() as u32
}

#[tokio::test]
async fn held_grpc_streams_take_one_share_and_end_at_the_body_deadline() {
    let app = TestApp::start(&bounded()).await;
    let started = Instant::now();
    let (announced, held, _bodies) = hold_grpc_streams(&app).await;
    assert_eq!(announced, 12, "SETTINGS_MAX_CONCURRENT_STREAMS");
    let (_, more, _more_bodies) = hold_grpc_streams(&app).await;
    let (_, yet_more, _yet_more_bodies) = hold_grpc_streams(&app).await;
    // 36 held streams from one address: more than the global budget of 32.

    // Another address is still served, on both transports.
    let other = client_from("127.0.0.2");
    assert_eq!(
        token_from(&app, &other, "partner", SECRET).await.status(),
        200
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.grpc))
        .unwrap()
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .connect()
        .await
        .unwrap();
    let mut grpc = tokend::pb::token_service_client::TokenServiceClient::new(channel);
    grpc.issue(issue("partner", SECRET)).await.unwrap();

    // The attacker's streams beyond its share were refused at once, and the
    // ones holding a slot end at the body deadline, not the request timeout.
    let mut statuses = Vec::new();
    for res in held.into_iter().chain(more).chain(yet_more) {
        let res = tokio::time::timeout(Duration::from_secs(10), res)
            .await
            .expect("every held stream is answered")
            .unwrap();
        statuses.push(res.headers()["grpc-status"].to_str().unwrap().to_owned());
    }
    let invalid = statuses.iter().filter(|s| *s == "3").count();
    let unavailable = statuses.iter().filter(|s| *s == "14").count();
    assert_eq!(
        invalid, 8,
        "the share held slots until the deadline: {statuses:?}"
    );
    assert_eq!(unavailable, 28, "{statuses:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_grpc_message_that_never_completes_is_invalid_argument_after_the_body_deadline() {
    let app = TestApp::start(&bounded()).await;
    let (_, mut held, _bodies) = hold_grpc_streams(&app).await;
    let res = tokio::time::timeout(Duration::from_secs(10), held.remove(0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(res.headers()["grpc-status"], "3");
    let message = res.headers()["grpc-message"].to_str().unwrap();
    assert!(message.contains("body_read_timeout_secs"), "{message}");
}

#[tokio::test]
async fn held_http1_bodies_take_one_share_and_end_at_the_body_deadline() {
    let app = TestApp::start(&bounded()).await;
    let started = Instant::now();
    // 8 held requests fill 127.0.0.1's share (each is in its handler, the
    // server asked for the body)...
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(held_token_request(app.http, None).await);
    }
    // ...so a ninth from there is refused at once...
    let r = token_from(&app, &client_from("127.0.0.1"), "partner", SECRET).await;
    assert_eq!(r.status(), 503);
    // ...while another address is served.
    let r = token_from(&app, &client_from("127.0.0.2"), "partner", SECRET).await;
    assert_eq!(r.status(), 200);
    // The held ones are answered at the body deadline with a clear error.
    for mut h in held {
        let answer = tokio::time::timeout(Duration::from_secs(10), h.read_to_end())
            .await
            .expect("answered");
        assert!(answer.contains(" 400 "), "{answer}");
        assert!(answer.contains("body_read_timeout_secs"), "{answer}");
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    // And the share is free again.
    let r = token_from(&app, &client_from("127.0.0.1"), "partner", SECRET).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn the_stream_limit_is_announced_on_the_http_listener_too() {
    let app = TestApp::start(&bounded()).await;
    let tcp = tokio::net::TcpStream::connect(app.http).await.unwrap();
    let (h2, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let h2 = h2.ready().await.unwrap();
    assert_eq!(announced_streams(&h2).await, 12);
}
