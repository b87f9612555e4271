//! The attacks that hold streams and connections open: HTTP/2 stream
//! exhaustion on the gRPC listener and unfinished HTTP/1.1 bodies on the
//! HTTP listener. Both check that another request is answered while the
//! attacker holds its share, and that the held requests end at the body
//! deadline rather than the request timeout.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::{Buf, BufMut, Bytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use super::net::{self, Base};
use super::{Outcome, Suite, fail, secs, verdict};

/// How long the other caller may wait while the attacker holds its streams.
const SERVED_WITHIN: Duration = Duration::from_secs(2);
/// Slack on top of the body deadline for the held requests' answers.
const MARGIN: Duration = Duration::from_secs(3);

/// Sends its bytes as the message, whatever they are.
#[derive(Clone, Default)]
pub struct RawCodec;
pub struct RawEncoder;
pub struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut v = vec![0; src.remaining()];
        src.copy_to_slice(&mut v);
        Ok(Some(v))
    }
}

/// One h2 connection to the gRPC listener holds as many Issue streams as the
/// server announces (at most --max-streams), each with a message that
/// announces 100 bytes and sends 5.
pub(super) async fn grpc_streams(s: &Suite<'_>) -> anyhow::Result<Outcome> {
    let base = Base::parse(&s.a.grpc)?;
    let tcp = base.connect().await?;
    let (h2, conn) = h2::client::handshake(tcp).await?;
    tokio::spawn(conn);
    let mut h2 = h2.ready().await?;
    // Until the server's SETTINGS arrive the client assumes no limit.
    let settled = Instant::now();
    while h2.current_max_send_streams() == usize::MAX {
        anyhow::ensure!(
            settled.elapsed() < Duration::from_secs(5),
            "no SETTINGS from the server within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let announced = h2.current_max_send_streams();
    if announced > s.a.max_streams as usize {
        return fail(format!(
            "SETTINGS_MAX_CONCURRENT_STREAMS {announced}, over the bound {} (--max-streams)",
            s.a.max_streams
        ));
    }
    let (mut held, mut bodies) = (Vec::new(), Vec::new());
    for _ in 0..announced {
        let Ok(Ok(ready)) =
            tokio::time::timeout(Duration::from_millis(500), h2.clone().ready()).await
        else {
            break;
        };
        h2 = ready;
        let req = http::Request::post(format!(
            "http://{}/tokend.v1.TokenService/Issue",
            base.authority
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())?;
        let Ok((res, mut body)) = h2.send_request(req, false) else {
            break;
        };
        body.send_data(Bytes::from_static(&[0, 0, 0, 0, 100, 1, 2, 3, 4, 5]), false)?;
        held.push(res);
        bodies.push(body);
    }
    let started = Instant::now();
    let opened = held.len();

    // Another connection's health check, while they are held.
    let other = async {
        let mut health = HealthClient::new(net::channel(&s.a.grpc).await?);
        let r = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await?;
        anyhow::Ok(r.into_inner().status)
    };
    let t = Instant::now();
    let other = match tokio::time::timeout(SERVED_WITHIN, other).await {
        Ok(Ok(status)) => Ok((status, t.elapsed())),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(_) => Err(format!("no answer within {SERVED_WITHIN:?}")),
    };

    // Every held stream is answered, by the body deadline plus a margin.
    let limit = Duration::from_secs(s.a.body_deadline_secs) + MARGIN;
    let mut statuses = std::collections::BTreeMap::<String, usize>::new();
    let mut unanswered = 0;
    for res in held {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, res).await {
            Ok(Ok(r)) => {
                let s = r
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("none")
                    .to_owned();
                *statuses.entry(format!("grpc-status {s}")).or_default() += 1;
            }
            Ok(Err(e)) => *statuses.entry(format!("reset ({e})")).or_default() += 1,
            Err(_) => unanswered += 1,
        }
    }
    drop(bodies);
    let mut d =
        format!("SETTINGS_MAX_CONCURRENT_STREAMS {announced}; held {opened} Issue streams; ");
    let mut ok = true;
    match &other {
        Ok((status, took)) => {
            d += &format!(
                "other connection's health Check answered (status {status}) in {} ms; ",
                took.as_millis()
            )
        }
        Err(e) => {
            ok = false;
            d += &format!("other connection's health Check: {e}; ");
        }
    }
    if unanswered > 0 {
        ok = false;
        d += &format!("{unanswered} held streams not answered within {limit:?}; ");
    }
    d += &format!("held answered {statuses:?} in {}", secs(started));
    verdict(ok, d)
}

/// `--held-bodies` connections to the HTTP listener each send a token
/// request's headers and part of its body.
pub(super) async fn held_bodies(s: &Suite<'_>) -> anyhow::Result<Outcome> {
    let base = s.http()?.clone();
    let n = s.a.held_bodies;
    let body = "grant_type=client_credentials&client_id=attack-suite";
    let head = format!(
        "POST /oauth/token HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\n\r\n{}",
        base.authority,
        body.len(),
        &body[..10]
    );
    let mut opening = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (base, head) = (base.clone(), head.clone());
        opening.spawn(async move {
            let mut tcp = base.connect().await?;
            tcp.write_all(head.as_bytes()).await?;
            anyhow::Ok(tcp)
        });
    }
    let mut held = Vec::new();
    while let Some(r) = opening.join_next().await {
        held.push(r?.context("opening a held connection")?);
    }
    let started = Instant::now();

    // A fresh connection's /healthz, while they are held.
    let t = Instant::now();
    let health = match tokio::time::timeout(SERVED_WITHIN, net::get(&base, "/healthz")).await {
        Ok(Ok(r)) => Ok((r.status, t.elapsed())),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(_) => Err(format!("no answer within {SERVED_WITHIN:?}")),
    };

    let limit = Duration::from_secs(s.a.body_deadline_secs) + MARGIN;
    let mut answers = tokio::task::JoinSet::new();
    for mut tcp in held {
        answers.spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 512];
            let read = async {
                loop {
                    let k = tcp.read(&mut buf).await?;
                    if k == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..k]);
                    if got.windows(2).any(|w| w == b"\r\n") {
                        break;
                    }
                }
                std::io::Result::Ok(())
            };
            let left = limit.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, read).await {
                Err(_) => "unanswered".to_owned(),
                Ok(_) => {
                    let line = String::from_utf8_lossy(&got);
                    match line.split(' ').nth(1) {
                        Some(code) if line.starts_with("HTTP/1.1 ") => code.to_owned(),
                        _ => "closed".to_owned(),
                    }
                }
            }
        });
    }
    let mut by = std::collections::BTreeMap::<String, usize>::new();
    while let Some(r) = answers.join_next().await {
        *by.entry(r?).or_default() += 1;
    }
    let mut ok = true;
    let mut d = format!("{n} held bodies; ");
    match &health {
        Ok((status, took)) => {
            d += &format!(
                "/healthz on a fresh connection {status} in {} ms",
                took.as_millis()
            );
            if *status == 503 {
                d += " (this address's share is full: answered, not hung)";
            }
            d += "; ";
        }
        Err(e) => {
            ok = false;
            d += &format!("/healthz: {e}; ");
        }
    }
    if let Some(k) = by.get("unanswered") {
        ok = false;
        d += &format!("{k} not answered within {limit:?}; ");
    }
    d += &format!("held answered {by:?} in {}", secs(started));
    verdict(ok, d)
}
