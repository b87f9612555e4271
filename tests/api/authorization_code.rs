//! The authorization-code flow end to end, as a browser, a login app and a
//! client would drive it: real HTTP (a client that never follows redirects,
//! so every `Location` is read by hand) for /authorize and /token, real gRPC
//! for the login app's AuthorizationService. Refresh rotation, reuse
//! detection, family revocation and the concurrency cases are here too.

use futures::future::join_all;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokend::pb::authorization_service_client::AuthorizationServiceClient;
use tokend::pb::{
    AcceptAuthorizationRequest, GetAuthorizationRequest, IssueRequest, RejectAuthorizationRequest,
};
use tonic::Code;

use crate::common::flows::{
    MOBILE_CB, WEB_CB, accept, authorize, challenge_for, location, login_client, param, pkce,
    redeem, redeem_as, refresh, s, web_code, web_tokens,
};
use crate::common::grpc::{ADMIN_SECRET, admin_client, error_reason, introspect_request};
use crate::common::http::{error_of, jwt_parts};
use crate::common::wait::next_ms;
use crate::common::{Api, ConfigBuilder, RedisServer, SECRET, TestApp};

/// The standard clients, the authorization-code clients and the login app,
/// with an ES256 key.
fn code_config() -> ConfigBuilder {
    ConfigBuilder::memory().algorithm("ES256").code_flow()
}

async fn code_app() -> TestApp {
    TestApp::start(&code_config()).await
}

#[tokio::test]
async fn pkce_flow_end_to_end() {
    let app = code_app().await;
    let (verifier, challenge) = pkce();
    // State is echoed byte for byte, whatever it holds.
    let state = "xyz ü&=/?#%20+";
    let r = authorize(
        &app,
        &[
            ("response_type", "code"),
            ("client_id", "web-app"),
            ("redirect_uri", WEB_CB),
            ("scope", "profile orders:read"),
            ("state", state),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    )
    .await;
    assert_eq!(r.headers()["cache-control"], "no-store");
    let loc = location(&r);
    assert!(
        loc.starts_with("https://login.example/login?login_challenge="),
        "{loc}"
    );
    let ch = param(&loc, "login_challenge").unwrap();

    let mut login = login_client(&app).await;
    let info = login
        .get_authorization(GetAuthorizationRequest {
            login_challenge: ch.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.client_id, "web-app");
    assert_eq!(info.requested_scope, vec!["profile", "orders:read"]);
    assert_eq!(info.redirect_uri, WEB_CB);

    let claims = tokend::transport::grpc::json_to_struct(
        json!({"email": "u@example.com", "user_id": 276})
            .as_object()
            .unwrap()
            .clone(),
    );
    let to = login
        .accept_authorization(AcceptAuthorizationRequest {
            login_challenge: ch,
            subject: "user-42".into(),
            granted_scope: vec!["orders:read".into()],
            claims: Some(claims),
            username: "Ada Lovelace".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .redirect_to;
    assert!(to.starts_with(&format!("{WEB_CB}?code=")), "{to}");
    assert_eq!(param(&to, "state").as_deref(), Some(state));
    let code = param(&to, "code").unwrap();

    let r = redeem(&app, &code, &verifier).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["scope"], "orders:read");
    let access = s(&t["access_token"]);
    let rt = s(&t["refresh_token"]);
    let (_, claims) = jwt_parts(&access);
    assert_eq!(claims["sub"], "user-42");
    assert_eq!(claims["client_id"], "web-app");
    assert_eq!(claims["email"], "u@example.com");
    assert_eq!(claims["user_id"], 276);
    assert_eq!(claims["tenant"], "acme", "the client's claims are kept");
    assert!(claims["sid"].is_string());
    // The refresh token is not stored anywhere in clear: it is not a key.
    assert!(!rt.contains(' ') && rt.len() > 60);

    let i = app.introspect(&access).await;
    assert_eq!(i["active"], true);
    assert_eq!(i["sub"], "user-42");
    // Issue 18 item 4: the login app's username is RFC 7662 `username`.
    assert_eq!(i["username"], "Ada Lovelace");
    assert_eq!(claims["username"], "Ada Lovelace");

    // Introspection of the refresh token, with and without the hint: active
    // to the client it was issued to, inactive to anyone else (issue 14,
    // item 10: a resource server must not take it for an access token).
    for hint in [None, Some("refresh_token"), Some("access_token")] {
        let mut form = vec![("token", rt.as_str())];
        if let Some(h) = hint {
            form.push(("token_type_hint", h));
        }
        let r = app
            .post_form(
                "/oauth/introspect",
                Some(("resource-server", SECRET)),
                &form,
            )
            .await;
        assert_eq!(r.json::<Value>().await.unwrap(), json!({"active": false}));
        let r = app
            .post_form("/oauth/introspect", Some(("web-app", SECRET)), &form)
            .await;
        let i: Value = r.json().await.unwrap();
        assert_eq!(i["active"], true, "{hint:?}");
        assert_eq!(i["token_type"], "refresh_token");
        assert_eq!(i["client_id"], "web-app");
        assert_eq!(i["sub"], "user-42");
        assert_eq!(i["scope"], "orders:read");
        assert!(i["exp"].as_i64().unwrap() > claims["exp"].as_i64().unwrap());
    }
}

#[tokio::test]
async fn pkce_verifier_must_match_and_be_present() {
    let app = code_app().await;
    // Wrong verifier.
    let (code, _) = web_code(&app, "profile").await;
    let (other, _) = pkce();
    assert_eq!(
        error_of(redeem(&app, &code, &other).await).await,
        (400, "invalid_grant".into())
    );
    // Missing verifier when a challenge was sent.
    let (code, verifier) = web_code(&app, "profile").await;
    let r = app
        .post_form(
            "/oauth/token",
            Some(("web-app", SECRET)),
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", WEB_CB),
            ],
        )
        .await;
    assert_eq!(error_of(r).await, (400, "invalid_grant".into()));
    // A failed attempt consumed the code: the right verifier is too late.
    assert_eq!(
        error_of(redeem(&app, &code, &verifier).await).await,
        (400, "invalid_grant".into())
    );

    // A confidential client may skip PKCE, but then may not send a verifier.
    let ch = challenge_for(
        &app,
        &[
            ("response_type", "code"),
            ("client_id", "web-app"),
            ("redirect_uri", WEB_CB),
        ],
    )
    .await;
    let mut login = login_client(&app).await;
    let to = accept(&mut login, &ch, "u", &[]).await.unwrap();
    assert_eq!(param(&to, "state"), None, "no state sent, none echoed");
    let code = param(&to, "code").unwrap();
    let (v, _) = pkce();
    assert_eq!(
        error_of(redeem(&app, &code, &v).await).await,
        (400, "invalid_grant".into())
    );
}

#[tokio::test]
async fn bad_client_or_redirect_uri_is_a_400_page_without_redirect() {
    let app = code_app().await;
    let (_, challenge) = pkce();
    let base = |client: &'static str, uri: &'static str| {
        vec![
            ("response_type", "code"),
            ("client_id", client),
            ("redirect_uri", uri),
            ("state", "s1"),
        ]
    };
    let cases = [
        base("nobody", WEB_CB),
        base("web-app", "https://app.example/callback/x"), // suffix
        base("web-app", "https://app.example/callbac"),    // prefix
        base("web-app", "https://app.example/callback/"),  // trailing slash
        base("web-app", "https://APP.example/callback"),   // case
        base("web-app", "https://app.example/Callback"),
        base("web-app", "https://app.example:443/callback"), // port
        base("web-app", "https://app.example/callback#frag"), // fragment
        base("web-app", "https://app.example/callback?x=1"),
        base("web-app", "http://app.example/callback"),
        base("web-app", MOBILE_CB), // another client's
        // Several registered URIs: it must be named.
        vec![("response_type", "code"), ("client_id", "web-app")],
        vec![("response_type", "code")],
        // A client without redirect URIs (client_credentials only).
        base("orders-service", WEB_CB),
        vec![
            ("response_type", "code"),
            ("client_id", "web-app"),
            ("client_id", "web-app"),
            ("redirect_uri", WEB_CB),
        ],
    ];
    for params in cases {
        let mut params = params.clone();
        params.push(("code_challenge", &challenge));
        params.push(("code_challenge_method", "S256"));
        let r = authorize(&app, &params).await;
        assert!(r.headers().get("location").is_none(), "{params:?}");
        assert_eq!(
            error_of(r).await,
            (400, "invalid_request".into()),
            "{params:?}"
        );
    }
}

#[tokio::test]
async fn other_authorization_errors_redirect_with_error_and_state() {
    let app = code_app().await;
    let (_, challenge) = pkce();
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut p: Vec<(&str, &str)> = vec![
            ("client_id", "web-app"),
            ("redirect_uri", WEB_CB),
            ("state", "keep me"),
        ];
        p.extend_from_slice(extra);
        p
    };
    let ch = challenge.as_str();
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            with(&[
                ("response_type", "code"),
                ("code_challenge_method", "plain"),
            ]),
            "invalid_request",
        ),
        (
            with(&[("response_type", "token")]),
            "unsupported_response_type",
        ),
        (with(&[]), "invalid_request"),
        (
            with(&[("response_type", "code"), ("scope", "admin")]),
            "invalid_scope",
        ),
        (
            with(&[("response_type", "code"), ("code_challenge", "short")]),
            "invalid_request",
        ),
        (
            with(&[("response_type", "code"), ("scope", "a"), ("scope", "b")]),
            "invalid_request",
        ),
    ];
    for (mut params, error) in cases {
        if error == "invalid_request" && params.iter().any(|(k, _)| *k == "code_challenge_method") {
            params.push(("code_challenge", ch));
        }
        let r = authorize(&app, &params).await;
        let loc = location(&r);
        assert!(loc.starts_with(&format!("{WEB_CB}?")), "{loc}");
        assert_eq!(param(&loc, "error").as_deref(), Some(error), "{params:?}");
        assert!(param(&loc, "error_description").is_some());
        assert_eq!(param(&loc, "state").as_deref(), Some("keep me"));
        assert_eq!(param(&loc, "code"), None);
    }
    // A challenge without a method would default to plain: refused.
    let r = authorize(
        &app,
        &[
            ("response_type", "code"),
            ("client_id", "web-app"),
            ("redirect_uri", WEB_CB),
            ("code_challenge", ch),
        ],
    )
    .await;
    assert_eq!(
        param(&location(&r), "error").as_deref(),
        Some("invalid_request")
    );
    // A public client must use PKCE.
    let r = authorize(
        &app,
        &[
            ("response_type", "code"),
            ("client_id", "mobile-app"),
            ("state", "m"),
        ],
    )
    .await;
    let loc = location(&r);
    assert!(loc.starts_with(MOBILE_CB), "{loc}");
    assert_eq!(param(&loc, "error").as_deref(), Some("invalid_request"));
    assert_eq!(param(&loc, "state").as_deref(), Some("m"));
}

#[tokio::test]
async fn login_app_reject_and_single_answer() {
    let app = code_app().await;
    let (_, challenge) = pkce();
    let params = [
        ("response_type", "code"),
        ("client_id", "web-app"),
        ("redirect_uri", WEB_CB),
        ("state", "s-9"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let mut login = login_client(&app).await;

    // Reject: access_denied by default, state echoed.
    let ch = challenge_for(&app, &params).await;
    let to = login
        .reject_authorization(RejectAuthorizationRequest {
            login_challenge: ch.clone(),
            error: String::new(),
            error_description: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .redirect_to;
    assert!(to.starts_with(&format!("{WEB_CB}?")));
    assert_eq!(param(&to, "error").as_deref(), Some("access_denied"));
    assert_eq!(param(&to, "state").as_deref(), Some("s-9"));
    // The challenge is answered: accepting now fails.
    let err = accept(&mut login, &ch, "u", &[]).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(error_reason(&err), "invalid_request");

    // A given error and description are passed on; unknown codes are refused.
    let ch = challenge_for(&app, &params).await;
    let bad = login
        .reject_authorization(RejectAuthorizationRequest {
            login_challenge: ch.clone(),
            error: "totally_made_up".into(),
            error_description: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(error_reason(&bad), "invalid_request");
    let to = login
        .reject_authorization(RejectAuthorizationRequest {
            login_challenge: ch,
            error: "temporarily_unavailable".into(),
            error_description: "try again later".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .redirect_to;
    assert_eq!(
        param(&to, "error").as_deref(),
        Some("temporarily_unavailable")
    );
    assert_eq!(
        param(&to, "error_description").as_deref(),
        Some("try again later")
    );

    // Accepted twice: the second answer is an error, and so is any later one.
    let ch = challenge_for(&app, &params).await;
    // Invalid input does not consume the challenge.
    let err = accept(&mut login, &ch, "", &[]).await.unwrap_err();
    assert_eq!(error_reason(&err), "invalid_request");
    let err = accept(&mut login, &ch, "u", &["orders:write"])
        .await
        .unwrap_err();
    assert_eq!(
        error_reason(&err),
        "invalid_scope",
        "granting beyond the request"
    );
    let mut reserved = AcceptAuthorizationRequest {
        login_challenge: ch.clone(),
        subject: "u".into(),
        ..Default::default()
    };
    reserved.claims = Some(tokend::transport::grpc::json_to_struct(
        json!({"sub": "admin"}).as_object().unwrap().clone(),
    ));
    let err = login.accept_authorization(reserved).await.unwrap_err();
    assert_eq!(error_reason(&err), "invalid_request");
    accept(&mut login, &ch, "u", &[]).await.unwrap();
    let err = accept(&mut login, &ch, "u", &[]).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(error_reason(&err), "invalid_request");
    let err = login
        .get_authorization(GetAuthorizationRequest {
            login_challenge: ch,
        })
        .await
        .unwrap_err();
    assert_eq!(error_reason(&err), "invalid_request");
    let err = login
        .get_authorization(GetAuthorizationRequest {
            login_challenge: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(error_reason(&err), "invalid_request");
}

#[tokio::test]
async fn code_redemption_rules() {
    let app = code_app().await;
    // redirect_uri at the token endpoint must equal the authorization one.
    let (code, verifier) = web_code(&app, "profile").await;
    for uri in ["https://app.example/other", "https://app.example/callback/"] {
        let r = redeem_as(&app, "web-app", &code, uri, &verifier).await;
        assert_eq!(error_of(r).await, (400, "invalid_grant".into()));
    }
    // Code used by another client.
    let (code, verifier) = web_code(&app, "profile").await;
    let r = redeem_as(&app, "other-web", &code, WEB_CB, &verifier).await;
    assert_eq!(error_of(r).await, (400, "invalid_grant".into()));
    // Garbage and missing codes.
    assert_eq!(
        error_of(redeem(&app, "not-a-code", &verifier).await).await,
        (400, "invalid_grant".into())
    );
    let r = app
        .post_form(
            "/oauth/token",
            Some(("web-app", SECRET)),
            &[("grant_type", "authorization_code")],
        )
        .await;
    assert_eq!(error_of(r).await, (400, "invalid_request".into()));
    // A client without the refresh_token grant gets no refresh token.
    let ch = challenge_for(
        &app,
        &[("response_type", "code"), ("client_id", "other-web")],
    )
    .await;
    let mut login = login_client(&app).await;
    let to = accept(&mut login, &ch, "u", &[]).await.unwrap();
    let r = app
        .post_form(
            "/oauth/token",
            Some(("other-web", SECRET)),
            &[
                ("grant_type", "authorization_code"),
                ("code", &param(&to, "code").unwrap()),
            ],
        )
        .await;
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.unwrap();
    assert!(t.get("refresh_token").is_none());
}

#[tokio::test]
async fn code_replay_revokes_the_first_tokens() {
    let app = code_app().await;
    let (code, verifier) = web_code(&app, "profile orders:read").await;
    let r = redeem(&app, &code, &verifier).await;
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.unwrap();
    let access = s(&t["access_token"]);
    let rt = s(&t["refresh_token"]);
    assert_eq!(app.introspect(&access).await["active"], true);

    assert_eq!(
        error_of(redeem(&app, &code, &verifier).await).await,
        (400, "invalid_grant".into())
    );
    assert_family_dead(&app, &rt, &[&access]).await;
}

#[tokio::test]
async fn refresh_rotates_and_reuse_kills_the_family() {
    let app = code_app().await;
    let t0 = web_tokens(&app, "profile orders:read").await;
    let rt0 = s(&t0["refresh_token"]);
    let r = refresh(&app, &rt0, &[]).await;
    assert_eq!(r.status(), 200);
    let t1: Value = r.json().await.unwrap();
    let rt1 = s(&t1["refresh_token"]);
    assert_ne!(rt0, rt1);
    assert_eq!(t1["scope"], "profile orders:read");
    let (_, c0) = jwt_parts(&s(&t0["access_token"]));
    let (_, c1) = jwt_parts(&s(&t1["access_token"]));
    assert_eq!(c1["sub"], "user-42");
    assert_eq!(c1["sid"], c0["sid"], "same grant family");
    assert_eq!(c1["tenant"], "acme");
    // The rotated token is dead for introspection; the new one is live.
    assert_eq!(app.introspect_as("web-app", &rt0).await["active"], false);
    assert_eq!(app.introspect_as("web-app", &rt1).await["active"], true);
    // To any other client (a resource server) a refresh token is inactive.
    assert_eq!(app.introspect(&rt1).await, json!({"active": false}));

    let r = refresh(&app, &rt1, &[]).await;
    let t2: Value = r.json().await.unwrap();
    let rt2 = s(&t2["refresh_token"]);

    // Presenting a rotated token again is theft: the whole family dies.
    assert_eq!(
        error_of(refresh(&app, &rt0, &[]).await).await,
        (400, "invalid_grant".into())
    );
    let access: Vec<String> = [&t0, &t1, &t2]
        .iter()
        .map(|t| s(&t["access_token"]))
        .collect();
    let access: Vec<&str> = access.iter().map(String::as_str).collect();
    assert_family_dead(&app, &rt2, &access).await;

    // Another family is untouched.
    let other = web_tokens(&app, "profile").await;
    assert_eq!(
        app.introspect(&s(&other["access_token"])).await["active"],
        true
    );
    // A forged token naming a live family's gid is just invalid: it does not
    // revoke the family.
    let gid = jwt_parts(&s(&other["access_token"])).1["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let forged = format!("{gid}.{}", "A".repeat(43));
    assert_eq!(
        error_of(refresh(&app, &forged, &[]).await).await,
        (400, "invalid_grant".into())
    );
    assert_eq!(
        refresh(&app, &s(&other["refresh_token"]), &[])
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn refresh_scope_narrowing_and_client_binding() {
    let app = code_app().await;
    let t = web_tokens(&app, "profile orders:read").await;
    let rt = s(&t["refresh_token"]);
    // Wider: refused, and the token is not burned by the mistake.
    for wider in ["orders:write", "profile orders:write", "admin"] {
        assert_eq!(
            error_of(refresh(&app, &rt, &[("scope", wider)]).await).await,
            (400, "invalid_scope".into())
        );
    }
    assert_eq!(
        error_of(refresh(&app, &rt, &[("audience", "billing-api")]).await).await,
        (400, "invalid_target".into())
    );
    // Another client cannot use it (and does not burn it either).
    let r = app
        .post_form(
            "/oauth/token",
            Some(("other-web", SECRET)),
            &[("grant_type", "refresh_token"), ("refresh_token", &rt)],
        )
        .await;
    assert_eq!(error_of(r).await, (400, "unauthorized_client".into()));
    // Narrower: granted; the family keeps its original scope.
    let r = refresh(&app, &rt, &[("scope", "orders:read")]).await;
    assert_eq!(r.status(), 200);
    let t1: Value = r.json().await.unwrap();
    assert_eq!(t1["scope"], "orders:read");
    let rt1 = s(&t1["refresh_token"]);
    let r = refresh(&app, &rt1, &[("scope", "profile")]).await;
    assert_eq!(r.status(), 200);
    let t2: Value = r.json().await.unwrap();
    assert_eq!(t2["scope"], "profile");
}

#[tokio::test]
async fn expired_code_and_refresh_after_access_expiry() {
    let app = TestApp::start(
        &code_config()
            .set("tokens.code_ttl_secs", 1)
            .set("tokens.access_ttl_secs", 1)
            .set("tokens.leeway_secs", 0),
    )
    .await;
    let t = web_tokens(&app, "profile").await;
    let (code, verifier) = web_code(&app, "profile").await;
    // The sleep is the behaviour under test: the code and the access token
    // really expire (1 s lifetimes on the wall clock). Nothing can be polled
    // instead: a redemption attempt consumes the code.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(
        error_of(redeem(&app, &code, &verifier).await).await,
        (400, "invalid_grant".into())
    );
    assert_eq!(
        app.introspect(&s(&t["access_token"])).await["active"],
        false
    );
    let r = refresh(&app, &s(&t["refresh_token"]), &[]).await;
    assert_eq!(r.status(), 200);
    let t1: Value = r.json().await.unwrap();
    assert_eq!(
        app.introspect(&s(&t1["access_token"])).await["active"],
        true
    );
}

#[tokio::test]
async fn public_client_with_pkce_and_never_expiring_refresh() {
    let app = TestApp::start(&code_config().set("tokens.refresh_ttl_secs", 0)).await;
    let (verifier, challenge) = pkce();
    let ch = challenge_for(
        &app,
        &[
            ("response_type", "code"),
            ("client_id", "mobile-app"),
            ("scope", "profile"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("state", "p"),
        ],
    )
    .await;
    let mut login = login_client(&app).await;
    let to = accept(&mut login, &ch, "phone-user", &[]).await.unwrap();
    assert!(to.starts_with(&format!("{MOBILE_CB}?code=")));
    let code = param(&to, "code").unwrap();

    // The redemption by the public client, with `extra` parameters.
    let redeem_public = |extra: &[(&'static str, &'static str)]| {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("client_id", "mobile-app"),
            ("code", code.as_str()),
            ("code_verifier", verifier.as_str()),
        ];
        form.extend_from_slice(extra);
        let app = &app;
        async move { app.post_form("/oauth/token", None, &form).await }
    };
    // Sending a secret is not how a public client authenticates.
    let r = redeem_public(&[("client_secret", "anything")]).await;
    assert_eq!(error_of(r).await, (401, "invalid_client".into()));
    // (That attempt never reached the code: authentication comes first.)
    let r = redeem_public(&[]).await;
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["scope"], "profile");
    let rt = s(&t["refresh_token"]);
    // A public client's refresh token: nobody else sees it active (and the
    // public client itself may not introspect).
    assert_eq!(app.introspect(&rt).await, json!({"active": false}));
    let r = app
        .post_form(
            "/oauth/token",
            None,
            &[
                ("grant_type", "refresh_token"),
                ("client_id", "mobile-app"),
                ("refresh_token", &rt),
            ],
        )
        .await;
    assert_eq!(r.status(), 200);
    // A public client may revoke its own token with just its client_id, but
    // may not introspect.
    let rt1 = s(&r.json::<Value>().await.unwrap()["refresh_token"]);
    let r = app
        .post_form(
            "/oauth/introspect",
            None,
            &[("client_id", "mobile-app"), ("token", &rt1)],
        )
        .await;
    assert_eq!(error_of(r).await, (400, "unauthorized_client".into()));
    let r = app
        .post_form(
            "/oauth/revoke",
            None,
            &[("client_id", "mobile-app"), ("token", &rt1)],
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(app.introspect(&rt1).await["active"], false);
}

#[tokio::test]
async fn revoking_a_refresh_token_revokes_its_family() {
    let app = code_app().await;
    for hint in [Some("refresh_token"), None] {
        let t = web_tokens(&app, "profile").await;
        let rt = s(&t["refresh_token"]);
        // Only the client it was issued to. Another client gets the answer
        // garbage gets (no validity oracle), and the token stays valid.
        let r = app
            .post_form(
                "/oauth/revoke",
                Some(("other-web", SECRET)),
                &[("token", &rt)],
            )
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(app.introspect_as("web-app", &rt).await["active"], true);
        let mut form = vec![("token", rt.as_str())];
        if let Some(h) = hint {
            form.push(("token_type_hint", h));
        }
        let r = app
            .post_form("/oauth/revoke", Some(("web-app", SECRET)), &form)
            .await;
        assert_eq!(r.status(), 200);
        assert_family_dead(&app, &rt, &[&s(&t["access_token"])]).await;
    }
}

/// The whole flow with Issue over gRPC: same core call, same answers.
#[tokio::test]
async fn grpc_issue_redeems_codes_and_refreshes() {
    let app = code_app().await;
    let mut c = app.grpc_client().await;
    let (code, verifier) = web_code(&app, "profile orders:read").await;
    let req = IssueRequest {
        grant_type: "authorization_code".into(),
        client_id: "web-app".into(),
        client_secret: SECRET.into(),
        code: code.clone(),
        redirect_uri: WEB_CB.into(),
        code_verifier: verifier,
        ..Default::default()
    };
    let t = c.issue(req.clone()).await.unwrap().into_inner();
    assert_eq!(t.scope, vec!["profile", "orders:read"]);
    assert!(!t.refresh_token.is_empty());
    assert_eq!(jwt_parts(&t.access_token).1["sub"], "user-42");
    let err = c.issue(req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(error_reason(&err), "invalid_grant");
    assert_eq!(app.introspect(&t.access_token).await["active"], false);

    let t = web_tokens(&app, "profile").await;
    let refresh_req = |rt: String, scope: Vec<String>| IssueRequest {
        grant_type: "refresh_token".into(),
        client_id: "web-app".into(),
        client_secret: SECRET.into(),
        refresh_token: rt,
        scope,
        ..Default::default()
    };
    let err = c
        .issue(refresh_req(
            s(&t["refresh_token"]),
            vec!["orders:write".into()],
        ))
        .await
        .unwrap_err();
    assert_eq!(error_reason(&err), "invalid_scope");
    let t1 = c
        .issue(refresh_req(s(&t["refresh_token"]), vec![]))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(t1.refresh_token, s(&t["refresh_token"]));
    let err = c
        .issue(refresh_req(s(&t["refresh_token"]), vec![]))
        .await
        .unwrap_err();
    assert_eq!(error_reason(&err), "invalid_grant");
    let i = c
        .introspect(tokend::pb::IntrospectRequest {
            token_type_hint: "refresh_token".into(),
            ..introspect_request(&t1.refresh_token, SECRET)
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!i.active, "the family was revoked by the reuse");
}

#[tokio::test]
async fn discovery_lists_the_code_flow() {
    let app = code_app().await;
    let m = app
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert_eq!(
        m["authorization_endpoint"],
        "https://tokend.test/oauth/authorize"
    );
    assert_eq!(m["response_types_supported"], json!(["code"]));
    assert_eq!(m["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(
        m["grant_types_supported"],
        json!([
            "client_credentials",
            "authorization_code",
            "refresh_token",
            "urn:ietf:params:oauth:grant-type:token-exchange"
        ])
    );
    assert!(
        m["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("none"))
    );
}

/// A grant family is revoked: its refresh token and each of `access_tokens`
/// introspect as exactly `{"active": false}`, and refreshing is
/// `invalid_grant`.
async fn assert_family_dead(api: &Api, refresh_token: &str, access_tokens: &[&str]) {
    for t in access_tokens.iter().chain([&refresh_token]) {
        assert_eq!(api.introspect(t).await, json!({"active": false}), "{t}");
    }
    assert_eq!(
        error_of(refresh(api, refresh_token, &[]).await).await,
        (400, "invalid_grant".into())
    );
}

/// The one 200 among the answers to concurrent redemptions of one code (its
/// token response); every other answer is `invalid_grant`.
async fn the_only_success(answers: Vec<reqwest::Response>) -> Value {
    let n = answers.len();
    let mut ok = Vec::new();
    for r in answers {
        match r.status().as_u16() {
            200 => ok.push(r.json::<Value>().await.unwrap()),
            _ => assert_eq!(error_of(r).await, (400, "invalid_grant".into())),
        }
    }
    assert_eq!(ok.len(), 1, "exactly one of {n} redemptions succeeds");
    ok.pop().unwrap()
}

/// Many simultaneous redemptions of one code: exactly one succeeds, and the
/// replays that find the finished redemption revoke what it issued.
async fn concurrent_redemptions(app: &Api) {
    let (code, verifier) = web_code(app, "profile").await;
    let attempts = (0..16).map(|_| redeem(app, &code, &verifier));
    let winner = the_only_success(join_all(attempts).await).await;
    // One more replay, after the winner finished, always revokes its tokens.
    assert_eq!(
        error_of(redeem(app, &code, &verifier).await).await,
        (400, "invalid_grant".into())
    );
    assert_eq!(
        app.introspect(&s(&winner["access_token"])).await["active"],
        false
    );

    // Concurrent refreshes with one token: never more than one success.
    let t = web_tokens(app, "profile").await;
    let rt = s(&t["refresh_token"]);
    let results = join_all((0..8).map(|_| refresh(app, &rt, &[]))).await;
    let successes = results.iter().filter(|r| r.status() == 200).count();
    assert!(successes <= 1, "{successes} concurrent refreshes succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_redemption_exactly_once_memory() {
    let app = code_app().await;
    concurrent_redemptions(&app).await;
}

/// The concurrency cases and the whole flow against a real redis-server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_redemption_exactly_once_redis_and_full_flow() {
    let redis = RedisServer::start().await;
    let app = TestApp::start(&code_config().store(&redis.url())).await;
    concurrent_redemptions(&app).await;
    // The whole flow once more on Redis: rotation, then reuse kills the family.
    let t = web_tokens(&app, "profile orders:read").await;
    let rt0 = s(&t["refresh_token"]);
    assert_eq!(app.introspect_as("web-app", &rt0).await["active"], true);
    let r = refresh(&app, &rt0, &[("scope", "profile")]).await;
    assert_eq!(r.status(), 200);
    let t1: Value = r.json().await.unwrap();
    assert_eq!(t1["scope"], "profile");
    assert_eq!(
        error_of(refresh(&app, &rt0, &[]).await).await,
        (400, "invalid_grant".into())
    );
    assert_family_dead(&app, &s(&t1["refresh_token"]), &[&s(&t1["access_token"])]).await;
}

/// Whether the refresh token `rt` introspects active (with the hint).
async fn refresh_active(api: &Api, rt: &str) -> bool {
    let r = api
        .post_form(
            "/oauth/introspect",
            Some(("web-app", SECRET)),
            &[("token", rt), ("token_type_hint", "refresh_token")],
        )
        .await;
    r.json::<Value>().await.unwrap()["active"] == true
}

/// The refresh token `rt` is revoked: inactive, and refused (`invalid_grant`).
async fn assert_refresh_revoked(api: &Api, rt: &str) {
    assert!(!refresh_active(api, rt).await);
    assert_eq!(
        error_of(refresh(api, rt, &[]).await).await,
        (400, "invalid_grant".into())
    );
}

/// The admin API's bulk revocation covers refresh tokens too: a subject or
/// client "not before" mark and a disabled client stop refreshes and make the
/// refresh token introspect inactive, while grants made after the mark work.
#[tokio::test]
async fn admin_bulk_revocation_covers_refresh_tokens() {
    let app = TestApp::start(&code_config().admin(Some(ADMIN_SECRET))).await;
    let mut admin = admin_client(&app, Some(ADMIN_SECRET)).await;
    let before = web_tokens(&app, "profile").await;
    let rt = s(&before["refresh_token"]);
    assert!(
        refresh_active(&app, &rt).await,
        "control: live before the mark"
    );
    // Marks compare in milliseconds and a tie goes to the token: make the
    // issue and the mark distinct instants (not a speed assertion).
    next_ms().await;
    admin.revoke_subject("user-42").await.unwrap();
    assert_refresh_revoked(&app, &rt).await;

    next_ms().await;
    let after = web_tokens(&app, "profile").await;
    let rt2 = s(&after["refresh_token"]);
    let r = refresh(&app, &rt2, &[]).await;
    assert_eq!(r.status(), 200, "grants after the mark keep working");
    let rt3 = s(&r.json::<Value>().await.unwrap()["refresh_token"]);
    next_ms().await;
    admin.revoke_client("web-app").await.unwrap();
    assert_refresh_revoked(&app, &rt3).await;

    next_ms().await;
    let live = s(&web_tokens(&app, "profile").await["refresh_token"]);
    admin.disable("web-app").await.unwrap();
    assert!(
        !refresh_active(&app, &live).await,
        "disabled client's refresh token"
    );
    assert_eq!(
        error_of(refresh(&app, &live, &[]).await).await.1,
        "invalid_client"
    );
}

/// Issue 3's contract on a real Redis: 50 concurrent redemptions of one code,
/// spread over two replicas sharing the store and the signing key, yield
/// exactly one success; every other attempt is `invalid_grant`.
#[tokio::test]
async fn fifty_concurrent_redemptions_through_two_replicas_succeed_once() {
    let redis = RedisServer::start().await;
    let (_key, a, b) = TestApp::replicas(
        code_config().store(&redis.url()),
        tokend::token::Algorithm::RS256,
    )
    .await;
    let (code, verifier) = web_code(&a, "profile").await;
    let attempts = (0..50).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        redeem(app, &code, &verifier)
    });
    let winner = the_only_success(join_all(attempts).await).await;
    // A replay after the winner finished, through the other replica, revokes
    // the grant on both replicas (the losers above may already have).
    assert_eq!(
        error_of(redeem(&b, &code, &verifier).await).await,
        (400, "invalid_grant".into())
    );
    let token = s(&winner["access_token"]);
    assert_eq!(a.introspect(&token).await["active"], false);
    assert_eq!(b.introspect(&token).await["active"], false);
}

/// Accepting a login picks the user a token is issued for, so the login
/// app's service answers only the configured login app: no bearer or a wrong
/// one is UNAUTHENTICATED (and nothing about the challenge leaks), a server
/// without a login app configured refuses everyone, and the config demands a
/// login app secret wherever a login URL is set.
#[tokio::test]
async fn only_the_login_app_may_answer_login_challenges() {
    let app = code_app().await;
    let (_, challenge) = pkce();
    let ch = challenge_for(
        &app,
        &[
            ("response_type", "code"),
            ("client_id", "web-app"),
            ("redirect_uri", WEB_CB),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    )
    .await;
    let accept_as = |user: &str| AcceptAuthorizationRequest {
        login_challenge: ch.clone(),
        subject: user.into(),
        ..Default::default()
    };
    let mut anonymous = AuthorizationServiceClient::new(app.grpc_channel().await);
    let err = anonymous
        .accept_authorization(accept_as("attacker"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(error_reason(&err), "unauthenticated");
    let err = anonymous
        .get_authorization(GetAuthorizationRequest {
            login_challenge: ch.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut wrong = AuthorizationServiceClient::with_interceptor(
        app.grpc_channel().await,
        |mut req: tonic::Request<()>| {
            req.metadata_mut()
                .insert("authorization", "Bearer not-the-secret".parse().unwrap());
            Ok(req)
        },
    );
    let err = wrong
        .accept_authorization(accept_as("attacker"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // The challenge is still there for the real login app.
    let mut login = login_client(&app).await;
    let to = accept(&mut login, &ch, "user-42", &[]).await.unwrap();
    assert!(param(&to, "code").is_some(), "{to}");

    // No login app configured: nobody may call the service.
    let plain = TestApp::default_memory().await;
    let err = AuthorizationServiceClient::new(plain.grpc_channel().await)
        .get_authorization(GetAuthorizationRequest {
            login_challenge: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // login_url without the login app's secret is a configuration error.
    let dir = TempDir::new().unwrap();
    let problems = code_config()
        .remove("authorization.login_app_token_hash")
        .load_in(dir.path(), &[])
        .validate();
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("authorization.login_app_token_hash: required")),
        "{problems:?}"
    );
}
