//! Issue 14's hardening, over real sockets: each test reproduces an attack
//! that broke an earlier build and checks the bound that now holds.
//! - gRPC messages are capped ([grpc] max_message_bytes): RESOURCE_EXHAUSTED
//!   with ErrorInfo `invalid_request`, before the message is buffered;
//! - a request that is not protobuf is INVALID_ARGUMENT, not INTERNAL;
//! - outcomes are counted as what they are (a login app's bad bearer is not a
//!   `server_error`);
//! - repeated JSON keys are refused like repeated form parameters;
//! - every authorization response names its issuer (RFC 9207).

use bytes::{Buf, BufMut};
use tokend::pb::IssueRequest;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::common::config::ISSUER;
use crate::common::flows::{self, LOGIN_URL, WEB_CB};
use crate::common::grpc::error_reason;
use crate::common::http::{error_of, sample};
use crate::common::{ConfigBuilder, SECRET, TestApp, TokendProcess};

fn issue_with_secret_of(len: usize) -> IssueRequest {
    IssueRequest {
        grant_type: "client_credentials".into(),
        client_id: "orders-service".into(),
        client_secret: "s".repeat(len),
        ..Default::default()
    }
}

#[tokio::test]
async fn grpc_messages_over_the_cap_are_resource_exhausted_and_the_cap_is_configurable() {
    let app = TestApp::default_memory().await;
    let mut c = app.grpc_client().await;
    // Over 64 KiB: refused from the length prefix, with the OAuth reason.
    let err = c.issue(issue_with_secret_of(70_000)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert_eq!(error_reason(&err), "invalid_request");
    // The connection and the server still serve.
    let err = c.issue(issue_with_secret_of(10)).await.unwrap_err();
    assert_eq!(error_reason(&err), "invalid_client");

    let roomy =
        TestApp::start(&ConfigBuilder::memory().set("grpc.max_message_bytes", 200_000)).await;
    let err = roomy
        .grpc_client()
        .await
        .issue(issue_with_secret_of(70_000))
        .await
        .unwrap_err();
    assert_eq!(
        error_reason(&err),
        "invalid_client",
        "within the larger cap"
    );
}

/// Sends its bytes as the message, whatever they are.
#[derive(Clone, Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

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

#[tokio::test]
async fn a_message_that_is_not_protobuf_is_invalid_argument_and_counted_as_such() {
    let p = TokendProcess::serve(&ConfigBuilder::memory().code_flow())
        .start()
        .await;
    let mut grpc = tonic::client::Grpc::new(p.grpc_channel().await);
    for method in [
        "/tokend.v1.TokenService/Issue",
        "/tokend.v1.TokenService/Introspect",
    ] {
        grpc.ready().await.unwrap();
        // A length-delimited field whose length runs past the end.
        let err = grpc
            .unary(
                tonic::Request::new(vec![0x0a, 0xff, 0x01, b'x']),
                method.parse().unwrap(),
                RawCodec,
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{method}: {err:?}");
        assert_eq!(error_reason(&err), "invalid_request");
    }
    // The login app's calls without its bearer: refused, and counted as
    // what they are.
    let mut anonymous = tokend::pb::authorization_service_client::AuthorizationServiceClient::new(
        p.grpc_channel().await,
    );
    let err = anonymous
        .get_authorization(tokend::pb::GetAuthorizationRequest {
            login_challenge: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let metrics = p.get("/metrics").await.text().await.unwrap();
    let count = |error: &str| {
        sample(
            &metrics,
            "tokend_oauth_errors_total",
            &[&format!("error=\"{error}\""), "transport=\"grpc\""],
        )
    };
    assert_eq!(count("invalid_request"), Some(2.0), "{metrics}");
    assert_eq!(count("unauthenticated"), Some(1.0), "{metrics}");
    assert_eq!(count("server_error"), None, "{metrics}");
}

#[tokio::test]
async fn repeated_json_keys_are_refused_like_repeated_form_parameters() {
    let app = TestApp::default_memory().await;
    for body in [
        r#"{"grant_type":"client_credentials","scope":"orders:read","scope":"orders:write"}"#,
        r#"{"grant_type":"client_credentials","grant_type":"client_credentials"}"#,
    ] {
        let r = app
            .http_client
            .post(app.url("/oauth/token"))
            .basic_auth("orders-service", Some(SECRET))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_of(r).await,
            (400, "invalid_request".to_owned()),
            "{body}"
        );
    }
    // The form equivalent, for comparison.
    let r = app
        .post_form(
            "/oauth/token",
            Some(("orders-service", SECRET)),
            &[
                ("grant_type", "client_credentials"),
                ("scope", "orders:read"),
                ("scope", "orders:write"),
            ],
        )
        .await;
    assert_eq!(error_of(r).await, (400, "invalid_request".to_owned()));
}

#[tokio::test]
async fn every_authorization_response_carries_iss() {
    let app = TestApp::start(&ConfigBuilder::memory().code_flow()).await;
    let meta = app
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert_eq!(meta["authorization_response_iss_parameter_supported"], true);
    let iss = meta["issuer"].as_str().unwrap().to_owned();
    assert_eq!(iss, ISSUER);

    // Error redirect (unsupported response_type), success redirect (code),
    // and the login app's rejection.
    let r = flows::authorize(
        &app,
        &[
            ("client_id", "web-app"),
            ("redirect_uri", WEB_CB),
            ("response_type", "token"),
            ("state", "s1"),
        ],
    )
    .await;
    let loc = flows::location(&r);
    assert_eq!(
        flows::param(&loc, "error").as_deref(),
        Some("unsupported_response_type")
    );
    assert_eq!(
        flows::param(&loc, "iss").as_deref(),
        Some(iss.as_str()),
        "{loc}"
    );

    let (_, challenge) = flows::pkce();
    let params = [
        ("client_id", "web-app"),
        ("redirect_uri", WEB_CB),
        ("response_type", "code"),
        ("state", "s2"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let ch = flows::challenge_for(&app, &params).await;
    let mut login = flows::login_client(&app).await;
    let to = flows::accept(&mut login, &ch, "alice", &[]).await.unwrap();
    assert!(to.starts_with(WEB_CB), "{to}");
    assert!(flows::param(&to, "code").is_some(), "{to}");
    assert_eq!(
        flows::param(&to, "iss").as_deref(),
        Some(iss.as_str()),
        "{to}"
    );

    let ch = flows::challenge_for(&app, &params).await;
    let to = flows::reject(&mut login, &ch).await;
    assert_eq!(flows::param(&to, "error").as_deref(), Some("access_denied"));
    assert_eq!(
        flows::param(&to, "iss").as_deref(),
        Some(iss.as_str()),
        "{to}"
    );
    // The login app's own page gets no iss: it is not an authorization response.
    let r = flows::authorize(&app, &params).await;
    let loc = flows::location(&r);
    assert!(
        loc.starts_with(LOGIN_URL) && flows::param(&loc, "iss").is_none(),
        "{loc}"
    );
}

/// Issue 14, item 6 (token endpoint): a public client's id with no secret,
/// under a grant it may not use, gets exactly what an unknown id gets, so
/// the answer does not confirm that the id exists.
#[tokio::test]
async fn a_public_client_id_is_answered_like_an_unknown_one() {
    let app = TestApp::start(&ConfigBuilder::memory().code_flow()).await;
    let answer = |id: &'static str, basic: bool| {
        let app = &app;
        async move {
            let form = [("grant_type", "client_credentials"), ("client_id", id)];
            let r = if basic {
                app.post_form("/oauth/token", Some((id, "")), &form[..1])
                    .await
            } else {
                app.post_form("/oauth/token", None, &form).await
            };
            let status = r.status();
            let www = r.headers().get("www-authenticate").cloned();
            (status, www, r.bytes().await.unwrap())
        }
    };
    for basic in [false, true] {
        let public = answer("mobile-app", basic).await;
        let unknown = answer("no-such-client", basic).await;
        assert_eq!(public.0, 401, "{:?}", String::from_utf8_lossy(&public.2));
        assert_eq!(public, unknown, "basic={basic}");
    }
    // Over gRPC too.
    let mut grpc = app.grpc_client().await;
    let mut r = IssueRequest {
        client_id: "mobile-app".into(),
        grant_type: "client_credentials".into(),
        ..Default::default()
    };
    let public = grpc.issue(r.clone()).await.unwrap_err();
    r.client_id = "no-such-client".into();
    let unknown = grpc.issue(r).await.unwrap_err();
    assert_eq!(public.code(), Code::Unauthenticated);
    assert_eq!(
        (public.code(), public.message()),
        (unknown.code(), unknown.message())
    );
}

/// Issue 14, item 10: a text log written to a file (not a terminal) carries
/// no ANSI colour codes.
#[tokio::test]
async fn text_logs_to_a_file_have_no_colour_codes() {
    let p = TokendProcess::serve(&ConfigBuilder::memory().set("log.format", "text"))
        .start()
        .await;
    let r = p.token_response("partner", "wrong").await;
    assert_eq!(r.status(), 401);
    p.wait_log("request", 1).await;
    let log = p.log();
    assert!(!log.is_empty());
    assert!(!log.contains('\u{1b}'), "{log}");
}
