//! Issue 17: RFC 8693 token exchange. A chain gateway → orders → billing,
//! each hop narrower, with the `act` chain; refusals; revocation of the
//! first token (or its client, or its subject) ending the whole chain, on
//! two replicas sharing Redis.

use serde_json::{Value, json};

use crate::common::grpc::{ADMIN_SECRET, admin_client, error_reason};
use crate::common::http::{error_of, jwt_parts};
use crate::common::{ConfigBuilder, RedisServer, SECRET, TestApp};

const TE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const AT: &str = "urn:ietf:params:oauth:token-type:access_token";

fn config() -> ConfigBuilder {
    let hash = crate::common::config::sha256(SECRET);
    let h = hash.as_str();
    ConfigBuilder::memory()
        .client(toml::toml! {
            client_id = "portal"
            secret_hashes = [h]
            scopes = ["orders:read", "orders:write", "billing:read"]
            audience = ["gateway"]
            claims = { organisation_id = 74, roles = ["ADMIN"] }
        })
        .client(toml::toml! {
            client_id = "portal-pinned"
            secret_hashes = [h]
            scopes = ["orders:read"]
            audience = ["gateway"]
            claims = { may_act = { sub = "someone-else" } }
        })
        .client(toml::toml! {
            client_id = "gateway"
            secret_hashes = [h]
            grant_types = ["client_credentials", (TE)]
            scopes = ["orders:read", "orders:write", "billing:read"]
            audience = ["gateway"]
            token_exchange_audiences = ["orders-api"]
            token_exchange_claims = ["organisation_id"]
        })
        .client(toml::toml! {
            client_id = "orders"
            secret_hashes = [h]
            grant_types = ["client_credentials", (TE)]
            scopes = ["orders:read", "billing:read"]
            audience = ["orders-api"]
            token_exchange_audiences = ["billing-api"]
        })
        .client(toml::toml! {
            client_id = "billing"
            secret_hashes = [h]
            audience = ["billing-api"]
        })
        .client(toml::toml! {
            client_id = "no-rights"
            secret_hashes = [h]
            grant_types = ["client_credentials", (TE)]
            audience = ["gateway"]
        })
}

/// A token request by `client_id` (Basic, the test secret).
async fn post(app: &TestApp, client_id: &str, form: &[(&str, &str)]) -> reqwest::Response {
    app.post_form("/oauth/token", Some((client_id, SECRET)), form)
        .await
}

/// `client_id` exchanges `subject` for `audience` (and `scope` if not empty).
async fn exchange(
    app: &TestApp,
    client_id: &str,
    subject: &str,
    audience: &str,
    scope: &str,
) -> reqwest::Response {
    let mut form = vec![
        ("grant_type", TE),
        ("subject_token", subject),
        ("subject_token_type", AT),
        ("audience", audience),
    ];
    if !scope.is_empty() {
        form.push(("scope", scope));
    }
    post(app, client_id, &form).await
}

async fn exchanged(app: &TestApp, client_id: &str, subject: &str, aud: &str, scope: &str) -> Value {
    let r = exchange(app, client_id, subject, aud, scope).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    r.json().await.unwrap()
}

async fn portal_token(app: &TestApp) -> String {
    let t = app
        .token(
            "portal",
            &[("scope", "orders:read orders:write billing:read")],
        )
        .await;
    t["access_token"].as_str().unwrap().to_owned()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap()
}

#[tokio::test]
async fn three_hop_chain_narrows_and_records_every_actor() {
    let app = TestApp::start(&config()).await;
    let t0 = portal_token(&app).await;
    let (_, c0) = jwt_parts(&t0);

    // gateway → orders-api
    let r1 = exchanged(
        &app,
        "gateway",
        &t0,
        "orders-api",
        "orders:read billing:read",
    )
    .await;
    assert_eq!(r1["issued_token_type"], AT);
    assert_eq!(r1["token_type"], "Bearer");
    assert_eq!(r1["scope"], "orders:read billing:read");
    assert!(r1.get("refresh_token").is_none());
    let t1 = s(&r1["access_token"]).to_owned();
    let (h1, c1) = jwt_parts(&t1);
    assert_eq!(h1["typ"], "at+jwt");
    assert_eq!(c1["sub"], "portal", "the subject stays the subject");
    assert_eq!(
        c1["client_id"], "gateway",
        "the holder is the exchanging client"
    );
    assert_eq!(c1["aud"], "orders-api");
    assert_eq!(c1["act"], json!({"sub": "gateway"}));
    assert_eq!(c1["organisation_id"], 74, "carried over by policy");
    assert!(c1.get("roles").is_none(), "not listed: not carried over");
    assert!(c1["exp"].as_i64().unwrap() <= c0["exp"].as_i64().unwrap());

    // orders → billing-api, scope narrowed again; no scope asked = all of
    // the subject's that the client may hold.
    let r2 = exchanged(&app, "orders", &t1, "billing-api", "").await;
    assert_eq!(r2["scope"], "orders:read billing:read");
    let r2 = exchanged(&app, "orders", &t1, "billing-api", "billing:read").await;
    assert_eq!(r2["scope"], "billing:read");
    let t2 = s(&r2["access_token"]).to_owned();
    let (_, c2) = jwt_parts(&t2);
    assert_eq!(c2["sub"], "portal");
    assert_eq!(c2["client_id"], "orders");
    assert_eq!(c2["aud"], "billing-api");
    assert_eq!(
        c2["act"],
        json!({"sub": "orders", "act": {"sub": "gateway"}}),
        "RFC 8693 4.1: the current actor outermost"
    );
    assert!(c2.get("organisation_id").is_none());

    // The resource server (billing, introspecting under its audience
    // policy) sees who is calling and for whom.
    let i = app.introspect_as("billing", &t2).await;
    assert_eq!(i["active"], true, "{i}");
    assert_eq!(i["sub"], "portal");
    assert_eq!(i["client_id"], "orders");
    assert_eq!(
        i["act"],
        json!({"sub": "orders", "act": {"sub": "gateway"}})
    );
    assert!(i.get("chain").is_none(), "the ancestors stay internal");
    // billing may not see t1 (not addressed to it).
    assert_eq!(
        app.introspect_as("billing", &t1).await,
        json!({"active": false})
    );

    // Revoking the first token ends the whole chain.
    assert_eq!(app.revoke("portal", &t0).await.status(), 200);
    for t in [&t0, &t1, &t2] {
        assert_eq!(app.introspect(t).await["active"], false);
    }
    assert_eq!(
        error_of(exchange(&app, "orders", &t1, "billing-api", "").await).await,
        (400, "invalid_grant".into())
    );
    // Metadata lists the grant.
    let meta = app
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert!(
        meta["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!(TE))
    );
    app.stop().await;
}

#[tokio::test]
async fn exchange_refusals_are_the_rfc_8693_errors() {
    let app = TestApp::start(&config()).await;
    let t0 = portal_token(&app).await;
    let t1 = s(&exchanged(&app, "gateway", &t0, "orders-api", "orders:read").await["access_token"])
        .to_owned();
    let err = |r| async { error_of(r).await };
    // Wider scope than the subject token's.
    assert_eq!(
        err(exchange(&app, "orders", &t1, "billing-api", "billing:read").await).await,
        (400, "invalid_scope".into())
    );
    // Wider than the client's own scopes.
    assert_eq!(
        err(exchange(&app, "orders", &t1, "billing-api", "orders:write").await).await,
        (400, "invalid_scope".into())
    );
    // An audience the client may not ask for.
    assert_eq!(
        err(exchange(&app, "gateway", &t0, "billing-api", "").await).await,
        (400, "invalid_target".into())
    );
    // A token not addressed to the client (orders is not an audience of t0).
    assert_eq!(
        err(exchange(&app, "orders", &t0, "billing-api", "").await).await,
        (400, "invalid_grant".into())
    );
    // Forged and foreign subject tokens.
    let mut forged = t0.clone();
    forged.pop();
    forged.push(if t0.ends_with('A') { 'B' } else { 'A' });
    for bad in [forged.as_str(), "not-a-token", "x.y.z"] {
        assert_eq!(
            err(exchange(&app, "gateway", bad, "orders-api", "").await).await,
            (400, "invalid_grant".into()),
            "{bad}"
        );
    }
    // may_act in the subject token names another actor.
    let pinned = app.token("portal-pinned", &[]).await;
    assert_eq!(
        err(exchange(
            &app,
            "gateway",
            s(&pinned["access_token"]),
            "orders-api",
            ""
        )
        .await)
        .await,
        (400, "invalid_grant".into())
    );
    // No exchange rights: no grant type, or no audiences.
    for client in ["portal", "no-rights"] {
        assert_eq!(
            err(exchange(&app, client, &t0, "orders-api", "").await).await,
            (400, "unauthorized_client".into()),
            "{client}"
        );
    }
    // Missing or contradictory parameters.
    for form in [
        vec![("grant_type", TE), ("audience", "orders-api")],
        vec![
            ("grant_type", TE),
            ("subject_token", &t0),
            ("audience", "orders-api"),
        ],
        vec![
            ("grant_type", TE),
            ("subject_token", &t0),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:saml2",
            ),
            ("audience", "orders-api"),
        ],
        vec![
            ("grant_type", TE),
            ("subject_token", &t0),
            ("subject_token_type", AT),
        ],
        vec![
            ("grant_type", TE),
            ("subject_token", &t0),
            ("subject_token_type", AT),
            ("audience", "orders-api"),
            (
                "requested_token_type",
                "urn:ietf:params:oauth:token-type:refresh_token",
            ),
        ],
        vec![
            ("grant_type", TE),
            ("subject_token", &t0),
            ("subject_token_type", AT),
            ("audience", "orders-api"),
            ("actor_token", &t0),
        ],
    ] {
        assert_eq!(
            err(post(&app, "gateway", &form).await).await,
            (400, "invalid_request".into()),
            "{form:?}"
        );
    }
    // An actor token must be the client's own; then it names the actor.
    let own = app.access_token("gateway").await;
    let r = post(
        &app,
        "gateway",
        &[
            ("grant_type", TE),
            ("subject_token", &t0),
            ("subject_token_type", AT),
            ("actor_token", &own),
            ("actor_token_type", AT),
            ("resource", "orders-api"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    let (_, c) = jwt_parts(s(&r.json::<Value>().await.unwrap()["access_token"]));
    assert_eq!(c["act"], json!({"sub": "gateway"}));
    let r = post(
        &app,
        "gateway",
        &[
            ("grant_type", TE),
            ("subject_token", &t0),
            ("subject_token_type", AT),
            ("actor_token", &t0),
            ("actor_token_type", AT),
            ("audience", "orders-api"),
        ],
    )
    .await;
    assert_eq!(err(r).await, (400, "invalid_grant".into()));
    app.stop().await;
}

#[tokio::test]
async fn exchanged_tokens_never_outlive_the_subject_token() {
    let app = TestApp::start(&config().set("tokens.leeway_secs", 0).client_set(
        "portal",
        "access_ttl_secs",
        2,
    ))
    .await;
    let t0 = portal_token(&app).await;
    let r = exchanged(&app, "gateway", &t0, "orders-api", "").await;
    assert!(r["expires_in"].as_u64().unwrap() <= 2, "{r}");
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    assert_eq!(
        error_of(exchange(&app, "gateway", &t0, "orders-api", "").await).await,
        (400, "invalid_grant".into()),
        "an expired subject token"
    );
    app.stop().await;
}

#[tokio::test]
async fn exchange_over_grpc_with_error_info() {
    let app = TestApp::start(&config()).await;
    let t0 = portal_token(&app).await;
    let mut grpc = app.grpc_client().await;
    let req = |aud: &str| tokend::pb::IssueRequest {
        grant_type: TE.into(),
        client_id: "gateway".into(),
        client_secret: SECRET.into(),
        subject_token: t0.clone(),
        subject_token_type: AT.into(),
        resource: vec![aud.into()],
        scope: vec!["orders:read".into()],
        ..Default::default()
    };
    let r = grpc.issue(req("orders-api")).await.unwrap().into_inner();
    assert_eq!(r.issued_token_type, AT);
    assert_eq!(r.scope, vec!["orders:read"]);
    assert!(r.refresh_token.is_empty());
    let (_, c) = jwt_parts(&r.access_token);
    assert_eq!(c["act"], json!({"sub": "gateway"}));
    let mut i = crate::common::grpc::introspect_request(&r.access_token, SECRET);
    i.client_id = "resource-server".into();
    let info = grpc.introspect(i).await.unwrap().into_inner();
    assert!(info.active);
    let act = info.act.expect("act");
    assert!(act.fields.contains_key("sub"));
    let status = grpc.issue(req("billing-api")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(error_reason(&status), "invalid_target");
    app.stop().await;
}

/// Revoking the first token, cutting off its client, or logging its subject
/// out ends every token exchanged from it, on both replicas sharing Redis.
#[tokio::test]
async fn chain_revocation_holds_across_replicas_on_redis() {
    let redis = RedisServer::start().await;
    let (_key, a, b) = TestApp::replicas(
        config()
            .store(&redis.url())
            .admin(Some(ADMIN_SECRET))
            .set("auth_throttle.enabled", false),
        tokend::token::Algorithm::ES256,
    )
    .await;
    let chain = |first: String| {
        let (a, b) = (&a, &b);
        async move {
            let t1 = s(&exchanged(a, "gateway", &first, "orders-api", "").await["access_token"])
                .to_owned();
            let t2 =
                s(&exchanged(b, "orders", &t1, "billing-api", "").await["access_token"]).to_owned();
            for t in [&first, &t1, &t2] {
                for app in [a, b] {
                    assert_eq!(app.introspect(t).await["active"], true);
                }
            }
            (t1, t2)
        }
    };
    let dead = |tokens: Vec<String>| {
        let (a, b) = (&a, &b);
        async move {
            for t in &tokens {
                for app in [a, b] {
                    assert_eq!(app.introspect(t).await["active"], false);
                }
            }
        }
    };
    // 1. The first token revoked on replica A.
    let t0 = portal_token(&a).await;
    let (t1, t2) = chain(t0.clone()).await;
    assert_eq!(a.revoke("portal", &t0).await.status(), 200);
    dead(vec![t0, t1, t2]).await;
    // 2. The subject logged out.
    let t0 = portal_token(&b).await;
    let (t1, t2) = chain(t0.clone()).await;
    let mut admin = admin_client(&a, Some(ADMIN_SECRET)).await;
    admin.revoke_subject("portal").await.unwrap();
    dead(vec![t0, t1, t2]).await;
    // 3. The original client cut off (its tokens, so the chains from them).
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let t0 = portal_token(&a).await;
    let (t1, t2) = chain(t0.clone()).await;
    admin.disable("portal").await.unwrap();
    dead(vec![t0.clone(), t1.clone(), t2.clone()]).await;
    // Re-enabled: the chain is live again (a cut-off is not a revocation).
    admin.enable("portal").await.unwrap();
    for t in [&t0, &t1, &t2] {
        assert_eq!(b.introspect(t).await["active"], true);
    }
    // 4. The intermediate client's tokens revoked in bulk: t1 and t2 die,
    // t0 lives.
    admin.revoke_client("gateway").await.unwrap();
    dead(vec![t1, t2]).await;
    assert_eq!(a.introspect(&t0).await["active"], true);
    a.stop().await;
    b.stop().await;
}
