//! client_credentials over the HTTP bridge: every auth method and grant rule.

use crate::common::config::sha256;
use crate::common::http::{basic_header, error_of, jwt_parts};
use crate::common::{ConfigBuilder, SECRET, TestApp};

#[tokio::test]
async fn basic_auth_gets_a_jwt_with_rfc9068_claims() {
    let app = TestApp::default_memory().await;
    let r = app.token_response("orders-service", SECRET).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], "orders:read");
    assert!(
        body.get("refresh_token").is_none(),
        "no refresh token for client_credentials"
    );
    assert!(
        body.get("organisation_id").is_none(),
        "claims_in_response is off"
    );
    let (header, claims) = jwt_parts(body["access_token"].as_str().unwrap());
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "RS256");
    assert!(header["kid"].is_string());
    assert_eq!(claims["iss"], "https://tokend.test");
    assert_eq!(claims["sub"], "orders-service");
    assert_eq!(claims["client_id"], "orders-service");
    assert_eq!(
        claims["aud"],
        serde_json::json!(["orders-api", "billing-api"])
    );
    assert_eq!(claims["scope"], "orders:read");
    assert_eq!(claims["organisation_id"], 74);
    assert_eq!(claims["roles"], serde_json::json!(["ADMIN", "DOCTOR"]));
    assert_eq!(claims["is_test"], false);
    let exp = claims["exp"].as_i64().unwrap();
    let iat = claims["iat"].as_i64().unwrap();
    assert_eq!(exp - iat, 3600);
    assert_eq!(claims["nbf"], claims["iat"]);
    // The jti is a version 7 UUID whose millisecond falls in the iat second.
    let jti = claims["jti"].as_str().unwrap();
    assert_eq!((jti.len(), &jti[14..15]), (36, "7"), "{jti}");
    let ms = i64::from_str_radix(&jti[..8], 16).unwrap() << 16
        | i64::from_str_radix(&jti[9..13], 16).unwrap();
    assert_eq!(ms / 1000, iat, "{jti}");
    // Registered and partner claims only: nothing internal.
    let mut names: Vec<&str> = claims
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "aud",
            "client_id",
            "exp",
            "iat",
            "is_test",
            "iss",
            "jti",
            "nbf",
            "organisation_id",
            "roles",
            "scope",
            "sub"
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn body_credentials_and_json_body_work() {
    let app = TestApp::default_memory().await;
    let r = app
        .token_in_body(
            "orders-service",
            SECRET,
            &[("scope", "orders:read orders:write")],
        )
        .await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["scope"], "orders:read orders:write");

    let r = app
        .http_client
        .post(app.url("/oauth/token"))
        .json(&serde_json::json!({
            "grant_type": "client_credentials",
            "client_id": "partner",
            "client_secret": SECRET,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    // claims_in_response echoes the partner claims next to access_token.
    assert_eq!(body["partner_id"], "f31120ee");
    assert_eq!(body["user_id"], 276);
    assert_eq!(body["token_type"], "Bearer");
    let (_, claims) = jwt_parts(body["access_token"].as_str().unwrap());
    assert_eq!(
        claims["aud"], "bookings-api",
        "a single audience is a string"
    );
    assert!(
        claims.get("scope").is_none(),
        "no scope asked, no default scope"
    );
}

#[tokio::test]
async fn percent_encoded_basic_credentials_are_decoded() {
    let hash = sha256("p@ss:w rd+%");
    let app = TestApp::start(&ConfigBuilder::memory().client(toml::toml! {
        client_id = "odd id"
        secret_hashes = [(hash.as_str())]
        grant_types = ["client_credentials"]
    }))
    .await;
    let r = app.token_response("odd id", "p@ss:w rd+%").await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
}

#[tokio::test]
async fn wrong_secret_and_unknown_client_are_identical_401s() {
    let other = sha256("the-other-clients-secret");
    let app = TestApp::start(&ConfigBuilder::memory().client(toml::toml! {
        client_id = "other"
        secret_hashes = [(other.as_str())]
    }))
    .await;
    // Control: the other client's own secret works for it.
    let r = app
        .token_response("other", "the-other-clients-secret")
        .await;
    assert_eq!(r.status(), 200);
    let mut answers = Vec::new();
    for (id, secret) in [
        ("orders-service", "wrong"),
        ("no-such-client", SECRET),
        ("orders-service", ""),
        ("partner", "s3cret-for-tests-but-not"),
        // Another client's valid secret.
        ("orders-service", "the-other-clients-secret"),
    ] {
        let r = app.token_response(id, secret).await;
        assert_eq!(r.status(), 401);
        assert_eq!(
            r.headers()["www-authenticate"],
            "Basic realm=\"tokend\", charset=\"UTF-8\""
        );
        answers.push(r.text().await.unwrap());
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    let body: serde_json::Value = serde_json::from_str(&answers[0]).unwrap();
    assert_eq!(body["error"], "invalid_client");

    // Body credentials: the same 401 and challenge (RFC 9110: every 401
    // carries one), so the header tells nothing about the method tried.
    let r = app.token_in_body("orders-service", "nope", &[]).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Basic realm=\"tokend\", charset=\"UTF-8\""
    );
    // No credentials at all.
    let r = app
        .post_form(
            "/oauth/token",
            None,
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn auth_method_restrictions_and_grant_rules() {
    let app = TestApp::default_memory().await;
    // basic-only client may not send its secret in the body.
    let r = app.token_in_body("basic-only", SECRET, &[]).await;
    assert_eq!(r.status(), 401);
    let ok = app.token("basic-only", &[]).await;
    assert!(ok["access_token"].is_string());

    type Case<'a> = (&'a [(&'a str, &'a str)], u16, &'a str);
    let cases: &[Case] = &[
        (&[("grant_type", "password")], 400, "unsupported_grant_type"),
        (&[], 400, "invalid_request"),
        (
            &[("grant_type", "authorization_code"), ("code", "x")],
            400,
            "unauthorized_client",
        ),
        (
            &[
                ("grant_type", "client_credentials"),
                ("scope", "orders:delete"),
            ],
            400,
            "invalid_scope",
        ),
        (
            &[
                ("grant_type", "client_credentials"),
                ("scope", "orders:read \"x\""),
            ],
            400,
            "invalid_scope",
        ),
        (
            &[
                ("grant_type", "client_credentials"),
                ("audience", "payroll-api"),
            ],
            400,
            "invalid_target",
        ),
        (
            &[
                ("grant_type", "client_credentials"),
                ("resource", "orders-api"),
                ("resource", "nope"),
            ],
            400,
            "invalid_target",
        ),
        (
            &[
                ("grant_type", "client_credentials"),
                ("refresh_token", "abc"),
            ],
            400,
            "invalid_request",
        ),
    ];
    for (form, status, error) in cases {
        let r = app
            .post_form("/oauth/token", Some(("orders-service", SECRET)), form)
            .await;
        assert_eq!(r.status().as_u16(), *status, "{form:?}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], *error, "{form:?}");
        assert!(body["error_description"].is_string());
    }

    // Audience narrowing by `audience` and by repeated `resource`.
    let t = app
        .token("orders-service", &[("audience", "billing-api")])
        .await;
    assert_eq!(
        jwt_parts(t["access_token"].as_str().unwrap()).1["aud"],
        "billing-api"
    );
    let t = app
        .token(
            "orders-service",
            &[("resource", "billing-api"), ("resource", "orders-api")],
        )
        .await;
    assert_eq!(
        jwt_parts(t["access_token"].as_str().unwrap()).1["aud"],
        serde_json::json!(["billing-api", "orders-api"])
    );
}

#[tokio::test]
async fn credentials_in_both_places_and_repeated_params_are_invalid_request() {
    let app = TestApp::default_memory().await;
    let r = app
        .post_form(
            "/oauth/token",
            Some(("orders-service", SECRET)),
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "orders-service"),
                ("client_secret", SECRET),
            ],
        )
        .await;
    assert_eq!(error_of(r).await, (400, "invalid_request".into()));

    let r = app
        .http_client
        .post(app.url("/oauth/token"))
        .header("Authorization", basic_header("orders-service", SECRET))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&scope=orders:read&scope=orders:write")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("scope")
    );
}

/// Issue 18, item 6: a secret with `+` and `%` (as `openssl rand -base64`
/// makes them) authenticates over HTTP Basic whether the client
/// form-encodes it first (RFC 6749 2.3.1) or sends it as it is (RFC 7617:
/// curl, most HTTP libraries), for SHA-256 and argon2 hashes alike; a wrong
/// secret still fails both ways.
#[tokio::test]
async fn basic_secrets_with_plus_and_percent_work_encoded_or_raw() {
    let secret = "ab+cd/ef%zz+gh==";
    let argon = tokend::oauth::client::argon2_hash(secret).unwrap();
    let sha = sha256(secret);
    let app = TestApp::start(
        &ConfigBuilder::memory()
            .client(toml::toml! {
                client_id = "plus-sha"
                secret_hashes = [(sha.as_str())]
                grant_types = ["client_credentials"]
            })
            .client(toml::toml! {
                client_id = "plus-argon"
                secret_hashes = [(argon.as_str())]
                grant_types = ["client_credentials"]
            }),
    )
    .await;
    let raw_basic = |id: &str, s: &str| {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{id}:{s}"))
        )
    };
    let send = |auth: String| {
        let app = &app;
        async move {
            reqwest::Client::new()
                .post(app.url("/oauth/token"))
                .header("Authorization", auth)
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    for id in ["plus-sha", "plus-argon"] {
        // RFC 6749 2.3.1: form-encoded, then base64.
        assert_eq!(send(basic_header(id, secret)).await, 200, "{id} encoded");
        // RFC 7617, as curl sends it.
        assert_eq!(send(raw_basic(id, secret)).await, 200, "{id} raw");
        // What the raw text form-decodes to is not the secret.
        assert_eq!(send(raw_basic(id, "ab cd/ef%zz gh==")).await, 401, "{id}");
        assert_eq!(send(raw_basic(id, "ab+cd/ef%zz+gh=")).await, 401, "{id}");
    }
    // Real curl, when the machine has it (off the runtime's thread: the
    // server under test runs on it).
    let url = app.url("/oauth/token");
    let curl = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args([
                "-s",
                "-m",
                "10",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-u",
            ])
            .arg(format!("plus-sha:{secret}"))
            .args(["-d", "grant_type=client_credentials", &url])
            .output()
    })
    .await
    .unwrap();
    if let Ok(out) = curl {
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    }
}
