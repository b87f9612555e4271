//! Issue 14's hardening of `/oauth/authorize`, over real sockets:
//! - an unauthenticated authorization request writes nothing to the store
//!   (the login challenge is sealed, not stored), and a sealed challenge that
//!   is tampered with, forged, expired or already answered is refused;
//! - unknown clients and clients that may not use the endpoint get
//!   byte-identical answers (no client enumeration);
//! - `state` comes back byte for byte, in every response;
//! - a malformed query is reported as malformed, not as an unregistered
//!   redirect URI.

use futures::StreamExt;
use tokend::pb::{GetAuthorizationRequest, RejectAuthorizationRequest};
use tonic::Code;

use crate::common::config::ISSUER;
use crate::common::flows::{
    self, LOGIN_URL, LoginClient, WEB_CB, accept, challenge_for, location, login_client, param,
    pkce, redeem,
};
use crate::common::grpc::error_reason;
use crate::common::http::error_of;
use crate::common::{Api, ConfigBuilder, RedisServer, TestApp, eventually};

fn code_config() -> ConfigBuilder {
    ConfigBuilder::memory().code_flow()
}

/// A valid request of web-app (PKCE), as (name, value) pairs.
fn web_request(challenge: &str) -> Vec<(&'static str, String)> {
    vec![
        ("response_type", "code".into()),
        ("client_id", "web-app".into()),
        ("redirect_uri", WEB_CB.into()),
        ("scope", "profile".into()),
        ("state", "st-1".into()),
        ("code_challenge", challenge.into()),
        ("code_challenge_method", "S256".into()),
    ]
}

fn pairs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// GET /oauth/authorize with `query` exactly as given (no re-encoding).
async fn authorize_raw(api: &Api, query: &str) -> reqwest::Response {
    api.http_client
        .get(format!("{}?{query}", api.url("/oauth/authorize")))
        .send()
        .await
        .unwrap()
}

async fn dbsize(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    redis::cmd("DBSIZE").query_async(conn).await.unwrap()
}

async fn get_authorization(login: &mut LoginClient, ch: &str) -> Result<(), tonic::Status> {
    login
        .get_authorization(GetAuthorizationRequest {
            login_challenge: ch.into(),
        })
        .await
        .map(|_| ())
}

/// The one answer for a challenge that is not genuine or not pending:
/// INVALID_ARGUMENT, `invalid_request`, whatever the reason.
fn assert_unknown_challenge(r: Result<impl std::fmt::Debug, tonic::Status>, what: &str) {
    assert_refused(
        r,
        "unknown, expired or already answered login_challenge",
        what,
    );
}

/// A genuine challenge answered before (the login app learns it was).
fn assert_answered(r: Result<impl std::fmt::Debug, tonic::Status>, what: &str) {
    assert_refused(r, "login_challenge was already answered", what);
}

fn assert_refused(r: Result<impl std::fmt::Debug, tonic::Status>, text: &str, what: &str) {
    let err = r.expect_err(what);
    assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
    assert_eq!(error_reason(&err), "invalid_request", "{what}");
    assert!(err.message().contains(text), "{what}: {err:?}");
}

/// The attack of issue 14: a flood of valid authorization requests used to
/// park ~2.7 KB per call in Redis for 600 s. Now 2,000 of them add no key
/// at all, and a challenge made by one replica is answered through another
/// (they share the signing key, from which the sealing key is derived).
#[tokio::test]
async fn authorize_flood_writes_nothing_to_redis_and_challenges_work_across_replicas() {
    let redis = RedisServer::start().await;
    let (_key, a, b) = TestApp::replicas(
        code_config().store(&redis.url()),
        tokend::token::Algorithm::ES256,
    )
    .await;
    let mut conn = redis.connection().await;
    let before = dbsize(&mut conn).await;

    let (_, challenge) = pkce();
    let request = web_request(&challenge);
    let answers: Vec<(u16, String)> = futures::stream::iter(0..2_000)
        .map(|_| {
            let (a, request) = (&a, &request);
            async move {
                let r = flows::authorize(a, &pairs(request)).await;
                let status = r.status().as_u16();
                let to = r
                    .headers()
                    .get("location")
                    .map(|l| l.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                (status, to)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    for (status, to) in &answers {
        assert_eq!(*status, 302);
        assert!(
            to.starts_with(&format!("{LOGIN_URL}?login_challenge=")),
            "{to}"
        );
    }
    assert_eq!(
        dbsize(&mut conn).await,
        before,
        "2,000 authorization requests wrote to the store"
    );
    // Every challenge is distinct and bounded in size.
    let longest = answers.iter().map(|(_, to)| to.len()).max().unwrap();
    assert!(longest < 2_048, "a login challenge URL of {longest} bytes");

    // The flow still completes: a challenge from replica a, answered and
    // redeemed through replica b.
    let (verifier, challenge) = pkce();
    let ch = challenge_for(&a, &pairs(&web_request(&challenge))).await;
    let mut login_b = login_client(&b).await;
    get_authorization(&mut login_b, &ch).await.unwrap();
    let to = accept(&mut login_b, &ch, "user-1", &[]).await.unwrap();
    assert_eq!(param(&to, "state").as_deref(), Some("st-1"));
    assert_eq!(param(&to, "iss").as_deref(), Some(ISSUER));
    let code = param(&to, "code").expect("a code");
    let r = redeem(&b, &code, &verifier).await;
    assert_eq!(r.status(), 200);
    // Answered once, on either replica.
    let mut login_a = login_client(&a).await;
    assert_answered(
        accept(&mut login_a, &ch, "user-2", &[]).await,
        "a replay on the other replica",
    );
}

/// A sealed challenge is only good unchanged, unexpired and unanswered:
/// a flipped character anywhere, a forged one and an expired one get the
/// answer an unknown one got before; an answered one (accept or reject) is
/// reported as answered, on every login-app call.
#[tokio::test]
async fn tampered_forged_replayed_and_expired_challenges_are_refused() {
    let app = TestApp::start(&code_config()).await;
    let mut login = login_client(&app).await;
    let (_, challenge) = pkce();
    let request = web_request(&challenge);
    let ch = challenge_for(&app, &pairs(&request)).await;
    get_authorization(&mut login, &ch).await.unwrap();

    // One character changed, at the start (version), in the key id, the
    // salt, the ciphertext and the tag.
    let n = ch.len();
    for i in [0, 2, 10, n / 2, n - 2, n - 1] {
        let mut t = ch.clone().into_bytes();
        t[i] = if t[i] == b'A' { b'B' } else { b'A' };
        let t = String::from_utf8(t).unwrap();
        assert_unknown_challenge(
            get_authorization(&mut login, &t).await,
            &format!("flipped at {i}"),
        );
        assert_unknown_challenge(
            accept(&mut login, &t, "user-1", &[]).await,
            &format!("accept flipped at {i}"),
        );
    }
    for forged in [
        tokend::token::opaque::generate(""),
        "A".repeat(n),
        format!("{ch}A"),
        ch[..n - 1].to_string(),
    ] {
        assert_unknown_challenge(get_authorization(&mut login, &forged).await, &forged);
    }
    // The genuine one is untouched by all that.
    let to = accept(&mut login, &ch, "user-1", &[]).await.unwrap();
    assert!(param(&to, "code").is_some());
    // Replays: accept, reject and GetAuthorization all refuse it now.
    assert_answered(
        accept(&mut login, &ch, "user-1", &[]).await,
        "accept replay",
    );
    assert_answered(get_authorization(&mut login, &ch).await, "get after accept");
    let reject = |ch: &str| RejectAuthorizationRequest {
        login_challenge: ch.into(),
        error: String::new(),
        error_description: String::new(),
    };
    assert_answered(
        login.reject_authorization(reject(&ch)).await,
        "reject after accept",
    );
    // A rejected challenge is answered too.
    let ch2 = challenge_for(&app, &pairs(&request)).await;
    login.reject_authorization(reject(&ch2)).await.unwrap();
    assert_answered(
        accept(&mut login, &ch2, "user-1", &[]).await,
        "accept after reject",
    );

    // Expiry travels inside the challenge.
    let short = TestApp::start(&code_config().set("authorization.challenge_ttl_secs", 1)).await;
    let mut login = login_client(&short).await;
    let ch = challenge_for(&short, &pairs(&request)).await;
    let expired = eventually(std::time::Duration::from_secs(10), || {
        let mut login = login.clone();
        let ch = ch.clone();
        async move { get_authorization(&mut login, &ch).await.is_err() }
    })
    .await;
    assert!(expired, "the challenge never expired");
    assert_unknown_challenge(accept(&mut login, &ch, "user-1", &[]).await, "expired");
    // A challenge of another deployment (another signing key) is forged here.
    assert_unknown_challenge(
        get_authorization(&mut login, &challenge_for(&app, &pairs(&request)).await).await,
        "another key's challenge",
    );
}

/// Item 6: a known client that may not use the authorization endpoint (no
/// authorization_code grant) used to answer "redirect_uri is required" or
/// "... not registered", an unknown one "unknown or missing client_id".
#[tokio::test]
async fn unknown_and_unsuitable_clients_get_byte_identical_answers() {
    let app = TestApp::start(&code_config()).await;
    let (_, challenge) = pkce();
    /// Status, content type and body (compared byte for byte: a String is
    /// its bytes, and prints readably).
    async fn answer(api: &Api, query: &[(&str, &str)]) -> (u16, Option<String>, String) {
        let r = flows::authorize(api, query).await;
        let status = r.status().as_u16();
        let ctype = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        assert!(r.headers().get("location").is_none());
        let body = String::from_utf8(r.bytes().await.unwrap().to_vec()).unwrap();
        (status, ctype, body)
    }
    for with_redirect in [true, false] {
        let mut answers = Vec::new();
        for client in ["nobody", "orders-service", "partner", "resource-server"] {
            let mut q = vec![
                ("response_type", "code"),
                ("client_id", client),
                ("state", "s"),
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "S256"),
            ];
            if with_redirect {
                q.push(("redirect_uri", WEB_CB));
            }
            answers.push((client, answer(&app, &q).await));
        }
        let (_, first) = &answers[0];
        assert_eq!(first.0, 400);
        for (client, a) in &answers {
            assert_eq!(a, first, "{client} (redirect_uri sent: {with_redirect})");
        }
    }
}

/// Item 10: `state` is echoed exactly as the client sent it, not decoded and
/// re-encoded: `%7E` stays `%7E` (not `~`), `+` stays `+` (not `%20` or the
/// other way round), lower-case hex stays lower-case. In the error redirect,
/// the login app's accept and its reject.
#[tokio::test]
async fn state_comes_back_byte_for_byte() {
    let app = TestApp::start(&code_config()).await;
    let mut login = login_client(&app).await;
    let (_, challenge) = pkce();
    let state = "a%7E~b+c%20d%2fe%2F%C3%bc!*()%3D=x";
    let base = format!(
        "response_type=code&client_id=web-app&redirect_uri={}&code_challenge={challenge}\
         &code_challenge_method=S256&state={state}",
        form_urlencoded::byte_serialize(WEB_CB.as_bytes()).collect::<String>()
    );
    let echoed = |to: &str| {
        let q = to.split_once('?').unwrap().1;
        q.split('&')
            .find_map(|p| p.strip_prefix("state="))
            .map(str::to_owned)
    };
    // An error redirect (invalid scope).
    let to = location(&authorize_raw(&app, &format!("{base}&scope=admin")).await);
    assert_eq!(
        param(&to, "error").as_deref(),
        Some("invalid_scope"),
        "{to}"
    );
    assert_eq!(echoed(&to).as_deref(), Some(state), "{to}");
    // Accepted.
    let to = location(&authorize_raw(&app, &base).await);
    let ch = param(&to, "login_challenge").unwrap();
    let to = accept(&mut login, &ch, "user-1", &[]).await.unwrap();
    assert!(param(&to, "code").is_some());
    assert_eq!(echoed(&to).as_deref(), Some(state), "{to}");
    // Rejected.
    let to = location(&authorize_raw(&app, &base).await);
    let ch = param(&to, "login_challenge").unwrap();
    let to = flows::reject(&mut login, &ch).await;
    assert_eq!(echoed(&to).as_deref(), Some(state), "{to}");
    // Longer than 512 bytes as sent: refused (and not echoed).
    let long = "%41".repeat(171);
    let to = location(&authorize_raw(&app, &base.replace(state, &long)).await);
    assert_eq!(
        param(&to, "error").as_deref(),
        Some("invalid_request"),
        "{to}"
    );
    assert_eq!(echoed(&to), None, "{to}");
}

/// Item 10: undecodable percent-encoding used to be decoded leniently (a
/// stray `%` kept, invalid UTF-8 replaced), so a mangled redirect URI was
/// answered "redirect_uri is not registered for this client".
#[tokio::test]
async fn a_malformed_query_is_reported_as_malformed() {
    let app = TestApp::start(&code_config()).await;
    let cb = form_urlencoded::byte_serialize(WEB_CB.as_bytes()).collect::<String>();
    for mangled in [
        format!("{cb}%FF"),
        format!("{cb}%"),
        format!("{cb}%zz"),
        format!("{cb}%C3"),
    ] {
        let r = authorize_raw(
            &app,
            &format!("response_type=code&client_id=web-app&redirect_uri={mangled}&state=s"),
        )
        .await;
        assert!(r.headers().get("location").is_none(), "{mangled}");
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_request")),
            "{mangled}"
        );
        let description = body["error_description"].as_str().unwrap();
        assert!(
            description.contains("malformed") && description.contains("redirect_uri"),
            "{mangled}: {description}"
        );
    }
    // A well-formed but unregistered URI is still called that.
    let r = authorize_raw(
        &app,
        &format!("response_type=code&client_id=web-app&redirect_uri={cb}x"),
    )
    .await;
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("not registered"),
        "{body}"
    );
    assert_eq!(
        error_of(authorize_raw(&app, "client_id=web-app&state=%").await).await,
        (400, "invalid_request".into())
    );
}
