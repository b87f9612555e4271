//! Issue 18: partner compatibility (introspection policy, configurable
//! client_credentials subject, `username` in introspection).

use serde_json::{Value, json};

use crate::common::flows::{self, login_client, param, redeem, s};
use crate::common::grpc::introspect_request;
use crate::common::http::jwt_parts;
use crate::common::{ConfigBuilder, SECRET, TestApp};
use tokend::pb::AcceptAuthorizationRequest;

fn policy_config() -> ConfigBuilder {
    let hash = crate::common::config::sha256(SECRET);
    ConfigBuilder::memory()
        .client(toml::toml! {
            client_id = "orders-api"
            secret_hashes = [(hash.as_str())]
            audience = ["orders-api"]
        })
        .client(toml::toml! {
            client_id = "own-only"
            secret_hashes = [(hash.as_str())]
            introspection = "own"
            audience = ["orders-api"]
        })
        .client(toml::toml! {
            client_id = "booking-partner"
            secret_hashes = [(hash.as_str())]
            subject = "partner-booking-svc"
            audience = ["bookings-api"]
        })
}

#[tokio::test]
async fn introspection_policy_own_audience_any() {
    let app = TestApp::start(&policy_config()).await;
    // orders-service's tokens name orders-api and billing-api.
    let token = app.access_token("orders-service").await;
    let active = |v: &Value| v["active"] == true;
    // "any" (resource-server in the test config).
    assert!(active(&app.introspect_as("resource-server", &token).await));
    // "audience" (the default): a resource server named in `aud`.
    let i = app.introspect_as("orders-api", &token).await;
    assert!(active(&i), "{i}");
    assert_eq!(i["client_id"], "orders-service");
    // The issuing client always sees its own tokens.
    assert!(active(&app.introspect_as("orders-service", &token).await));
    // Outside the policy: exactly what a dead token gets, so the answer
    // never tells whether the token is valid.
    for outsider in ["partner", "basic-only", "own-only"] {
        let i = app.introspect_as(outsider, &token).await;
        assert_eq!(i, json!({"active": false}), "{outsider}");
    }
    // "own": its own tokens only, even when its audience matches.
    let own = app.access_token("own-only").await;
    assert!(active(&app.introspect_as("own-only", &own).await));
    assert_eq!(
        app.introspect_as("orders-api", &own).await["active"],
        true,
        "own-only's tokens name orders-api"
    );
    // The same over gRPC.
    let mut grpc = app.grpc_client().await;
    let ask = |client: &str| {
        let mut r = introspect_request(&token, SECRET);
        r.client_id = client.into();
        r
    };
    let r = grpc
        .introspect(ask("orders-api"))
        .await
        .unwrap()
        .into_inner();
    assert!(r.active);
    assert_eq!(r.client_id, "orders-service");
    let r = grpc
        .introspect(ask("basic-only"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r, Default::default(), "inactive is the empty message");
    app.stop().await;
}

#[tokio::test]
async fn client_credentials_subject_is_configurable() {
    let app = TestApp::start(&policy_config()).await;
    let token = app.access_token("booking-partner").await;
    let (_, claims) = jwt_parts(&token);
    assert_eq!(claims["sub"], "partner-booking-svc");
    assert_eq!(claims["client_id"], "booking-partner");
    let i = app.introspect(&token).await;
    assert_eq!(i["sub"], "partner-booking-svc");
    // The default stays the client_id, never "".
    let (_, claims) = jwt_parts(&app.access_token("partner").await);
    assert_eq!(claims["sub"], "partner");
    app.stop().await;
}

#[tokio::test]
async fn username_reaches_introspection_of_access_and_refresh_tokens() {
    let app = TestApp::start(&ConfigBuilder::memory().code_flow()).await;
    let (verifier, challenge) = flows::pkce();
    let ch = flows::challenge_for(
        &app,
        &[
            ("response_type", "code"),
            ("client_id", "web-app"),
            ("redirect_uri", flows::WEB_CB),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    )
    .await;
    let mut login = login_client(&app).await;
    let accept = |username: &str| AcceptAuthorizationRequest {
        login_challenge: ch.clone(),
        subject: "user-7".into(),
        username: username.into(),
        ..Default::default()
    };
    // Bad usernames are refused before the challenge is used up.
    for bad in ["a\nb".to_owned(), "x".repeat(256)] {
        let err = login.accept_authorization(accept(&bad)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad:?}");
    }
    let to = login
        .accept_authorization(accept("grace@example.com"))
        .await
        .unwrap()
        .into_inner()
        .redirect_to;
    let r = redeem(&app, &param(&to, "code").unwrap(), &verifier).await;
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.unwrap();
    let i = app.introspect(&s(&t["access_token"])).await;
    assert_eq!(i["username"], "grace@example.com");
    assert_eq!(i["sub"], "user-7");
    let i = app.introspect_as("web-app", &s(&t["refresh_token"])).await;
    assert_eq!(i["token_type"], "refresh_token");
    assert_eq!(i["username"], "grace@example.com");
    let mut grpc = app.grpc_client().await;
    let r = grpc
        .introspect(introspect_request(&s(&t["access_token"]), SECRET))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.username, "grace@example.com");
    app.stop().await;
}

/// Item 1: `[http] path_prefix` and trailing slashes; discovery reports the
/// URLs served.
#[tokio::test]
async fn path_prefix_and_trailing_slashes_serve_every_oauth_endpoint() {
    let app = TestApp::start(&ConfigBuilder::memory().set("http.path_prefix", "/apis/v2")).await;
    let token_at = |path: &'static str| {
        let app = &app;
        async move {
            app.post_form(
                path,
                Some(("orders-service", SECRET)),
                &[("grant_type", "client_credentials")],
            )
            .await
        }
    };
    for path in [
        "/apis/v2/oauth/token",
        "/apis/v2/oauth/token/",
        "/oauth/token",
        "/oauth/token/",
    ] {
        let r = token_at(path).await;
        assert_eq!(r.status(), 200, "{path}");
    }
    let token = app.access_token("orders-service").await;
    for path in ["/apis/v2/oauth/introspect/", "/oauth/introspect/"] {
        let r = app
            .post_form(
                path,
                Some(("resource-server", SECRET)),
                &[("token", &token)],
            )
            .await;
        assert_eq!(r.json::<Value>().await.unwrap()["active"], true, "{path}");
    }
    // Not a prefix match on a partial segment, and not a second prefix.
    assert_eq!(token_at("/apis/v2x/oauth/token").await.status(), 404);
    assert_eq!(token_at("/apis/v2/apis/v2/oauth/token").await.status(), 404);
    // Discovery, at the root (RFC 8414 well-known) and under the prefix,
    // advertises the prefixed URLs, and each is served.
    for meta_path in [
        "/.well-known/oauth-authorization-server",
        "/apis/v2/.well-known/oauth-authorization-server/",
    ] {
        let meta = app.get_json(meta_path).await;
        assert_eq!(meta["issuer"], crate::common::config::ISSUER);
        for (k, path) in [
            ("token_endpoint", "/apis/v2/oauth/token"),
            ("introspection_endpoint", "/apis/v2/oauth/introspect"),
            ("revocation_endpoint", "/apis/v2/oauth/revoke"),
            ("authorization_endpoint", "/apis/v2/oauth/authorize"),
            ("jwks_uri", "/apis/v2/.well-known/jwks.json"),
        ] {
            assert_eq!(
                meta[k],
                format!("{}{path}", crate::common::config::ISSUER),
                "{k}"
            );
        }
    }
    let jwks = app.get_json("/apis/v2/.well-known/jwks.json").await;
    assert!(!jwks["keys"].as_array().unwrap().is_empty());
    let r = app
        .post_form(
            "/apis/v2/oauth/revoke/",
            Some(("orders-service", SECRET)),
            &[("token", &token)],
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(app.introspect(&token).await["active"], false);
    // The access log and metrics label the canonical endpoint.
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        !metrics.contains("apis/v2"),
        "prefixed paths are labelled as the endpoint"
    );
    assert!(metrics.contains("endpoint=\"/oauth/token\""));
    app.stop().await;
}

fn oob_config() -> ConfigBuilder {
    let hash = crate::common::config::sha256(SECRET);
    ConfigBuilder::memory()
        .code_flow()
        .client(toml::toml! {
            client_id = "cli-tool"
            client_name = "Partner <CLI> & co"
            token_endpoint_auth_method = "none"
            grant_types = ["authorization_code"]
            scopes = ["profile"]
            out_of_band = true
        })
        .client(toml::toml! {
            client_id = "cli-confidential"
            secret_hashes = [(hash.as_str())]
            grant_types = ["authorization_code"]
            scopes = ["profile"]
            redirect_uris = ["https://cli.example/cb"]
            out_of_band = true
        })
}

const OOB: &str = "urn:ietf:wg:oauth:2.0:oob";

/// The path and query of a URL on the test issuer.
fn local_path(url: &str) -> &str {
    url.strip_prefix(crate::common::config::ISSUER)
        .unwrap_or_else(|| panic!("not on the issuer: {url}"))
}

/// The code on an out-of-band page.
fn code_on(page: &str) -> String {
    let start = page.find("<code>").expect("a code") + "<code>".len();
    let end = page[start..].find("</code>").unwrap() + start;
    page[start..end].to_owned()
}

/// Item 2: out-of-band codes for command-line tools, opt-in per client.
#[tokio::test]
async fn out_of_band_code_is_shown_once_on_a_locked_down_page() {
    let app = TestApp::start(&oob_config()).await;
    let (verifier, challenge) = flows::pkce();
    // No redirect_uri at all: the client registers none.
    let ch = flows::challenge_for(
        &app,
        &[
            ("response_type", "code"),
            ("client_id", "cli-tool"),
            ("scope", "profile"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    )
    .await;
    let mut login = login_client(&app).await;
    let info = login
        .get_authorization(tokend::pb::GetAuthorizationRequest {
            login_challenge: ch.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.redirect_uri, OOB);
    assert_eq!(info.client_name, "Partner <CLI> & co");
    let to = flows::accept(&mut login, &ch, "user-1", &[]).await.unwrap();
    assert!(
        to.starts_with(&format!(
            "{}/oauth/oob?ticket=",
            crate::common::config::ISSUER
        )),
        "{to}"
    );
    assert!(param(&to, "code").is_none(), "the code is never in a URL");

    let r = app.get(local_path(&to)).await;
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["x-frame-options"], "DENY");
    assert!(
        h["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'none'")
    );
    let page = r.text().await.unwrap();
    assert!(
        !page.contains("<script") && !page.contains("<style"),
        "{page}"
    );
    assert!(
        page.contains("Partner &lt;CLI&gt; &amp; co"),
        "escaped: {page}"
    );
    let code = code_on(&page);
    assert_eq!(code.len(), 43, "{page}");
    // Shown once: a reload (or a ticket from the history) shows nothing.
    let again = app.get(local_path(&to)).await;
    assert_eq!(again.status(), 400);
    let again = again.text().await.unwrap();
    assert!(!again.contains(&code) && !again.contains("<code>"));

    // Redeemed with the out-of-band redirect URI, as the tool sends it.
    let r = app
        .post_form(
            "/oauth/token",
            None,
            &[
                ("grant_type", "authorization_code"),
                ("client_id", "cli-tool"),
                ("code", &code),
                ("code_verifier", &verifier),
            ],
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    app.stop().await;
}

#[tokio::test]
async fn out_of_band_is_opt_in_and_errors_are_shown_not_redirected() {
    let app = TestApp::start(&oob_config()).await;
    // A client without out_of_band cannot use it.
    let r = flows::authorize(
        &app,
        &[
            ("response_type", "code"),
            ("client_id", "web-app"),
            ("redirect_uri", OOB),
        ],
    )
    .await;
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("location").is_none());
    // An out-of-band request's errors have nowhere to be redirected.
    let r = flows::authorize(
        &app,
        &[
            ("response_type", "code"),
            ("client_id", "cli-confidential"),
            ("redirect_uri", OOB),
            ("scope", "admin"),
        ],
    )
    .await;
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("location").is_none());
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_scope");
    // A client with both uses its redirect URI by default, and the
    // out-of-band page when it asks; a code shown out of band is redeemed
    // with redirect_uri = the oob URN.
    let ch = flows::challenge_for(
        &app,
        &[
            ("response_type", "code"),
            ("client_id", "cli-confidential"),
            ("redirect_uri", OOB),
        ],
    )
    .await;
    let mut login = login_client(&app).await;
    let to = flows::accept(&mut login, &ch, "user-2", &[]).await.unwrap();
    let code = code_on(&app.get(local_path(&to)).await.text().await.unwrap());
    let wrong = app
        .post_form(
            "/oauth/token",
            Some(("cli-confidential", SECRET)),
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", "https://cli.example/cb"),
            ],
        )
        .await;
    assert_eq!(
        crate::common::http::error_of(wrong).await,
        (400, "invalid_grant".into())
    );
    let ch = flows::challenge_for(
        &app,
        &[
            ("response_type", "code"),
            ("client_id", "cli-confidential"),
            ("redirect_uri", OOB),
        ],
    )
    .await;
    let to = flows::accept(&mut login, &ch, "user-2", &[]).await.unwrap();
    let code = code_on(&app.get(local_path(&to)).await.text().await.unwrap());
    let r = app
        .post_form(
            "/oauth/token",
            Some(("cli-confidential", SECRET)),
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", OOB),
            ],
        )
        .await;
    assert_eq!(r.status(), 200);
    // A refusal lands on the page with a fixed message; nothing from the
    // URL is reflected.
    let ch = flows::challenge_for(
        &app,
        &[
            ("response_type", "code"),
            ("client_id", "cli-tool"),
            ("code_challenge", &flows::pkce().1),
            ("code_challenge_method", "S256"),
        ],
    )
    .await;
    let to = flows::reject(&mut login, &ch).await;
    assert!(
        local_path(&to).starts_with("/oauth/oob?error=access_denied"),
        "{to}"
    );
    let page = app.get(local_path(&to)).await.text().await.unwrap();
    assert!(page.contains("access_denied") && !page.contains("<code>ey"));
    for hostile in [
        "/oauth/oob?error=%3Cscript%3Ealert(1)%3C/script%3E",
        "/oauth/oob?ticket=%3Cscript%3E",
        "/oauth/oob",
        "/oauth/oob?ticket=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let r = app.get(hostile).await;
        assert_eq!(r.status(), 400, "{hostile}");
        let page = r.text().await.unwrap();
        assert!(
            !page.contains("script") && !page.contains("<code>"),
            "{hostile}: {page}"
        );
    }
    app.stop().await;
}
