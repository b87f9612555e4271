//! The whole flow in a real browser (headless Chromium over WebDriver):
//! tokend's /oauth/authorize -> the login page -> consent -> the client's
//! redirect, then the code is redeemed at tokend. Screenshots of every page
//! go to `target/screenshots/` (or `$SCREENSHOT_DIR`).

mod common;

use common::webdriver::Browser;
use common::{DEMO_PASSWORD, DEMO_USER, Stack, jwt_claims, query_param, screenshot_dir};

/// Approve: lands on the client's redirect with `code` and the same `state`;
/// the code redeems to tokens for the demo user; introspection names them.
/// Then Deny (`access_denied` with the state) and a wrong password (the login
/// page again, with an error, no redirect).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_login_consent_approve_deny_and_wrong_password() {
    let stack = Stack::start().await;
    let browser = Browser::start().await;
    let shots = screenshot_dir();

    // 1. Approve.
    let state = "st-approve-1";
    let (url, verifier) = stack.authorize_url(state);
    browser.goto(&url).await;
    let at = browser.url().await;
    assert!(at.starts_with(&format!("{}/login?", stack.login)), "{at}");
    assert!(browser.text("main").await.contains(common::CLIENT_NAME));
    browser.screenshot(&shots, "login-page.png").await;
    browser.type_into("#username", DEMO_USER).await;
    browser.type_into("#password", DEMO_PASSWORD).await;
    browser.submit("#sign-in").await;
    browser.find("#allow").await;
    let consent = browser.text("main").await;
    assert!(consent.contains(common::CLIENT_NAME), "{consent}");
    assert!(
        consent.contains("orders:read") && consent.contains("profile"),
        "{consent}"
    );
    browser.screenshot(&shots, "login-consent.png").await;
    browser.submit("#allow").await;
    let landed = browser.wait_url(|u| u.starts_with(&stack.callback)).await;
    assert_eq!(query_param(&landed, "state").as_deref(), Some(state));
    assert!(query_param(&landed, "error").is_none(), "{landed}");
    let code = query_param(&landed, "code").expect("a code");
    let r = stack.redeem(&code, &verifier).await;
    assert_eq!(r.status(), 200);
    let tokens: serde_json::Value = r.json().await.unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    let claims = jwt_claims(access);
    assert_eq!(claims["sub"], stack.demo_subject.as_str());
    assert_eq!(claims["name"], "Demo User");
    assert_eq!(claims["client_id"], common::CLIENT_ID);
    assert!(tokens["refresh_token"].is_string());
    let intro = stack.introspect(access).await;
    assert_eq!(intro["active"], true, "{intro}");
    assert_eq!(intro["username"], DEMO_USER, "{intro}");
    assert_eq!(intro["sub"], stack.demo_subject.as_str(), "{intro}");

    // 2. Deny: the client hears access_denied, with its state.
    let state = "st-deny-2";
    let (url, _) = stack.authorize_url(state);
    browser.goto(&url).await;
    browser.type_into("#username", DEMO_USER).await;
    browser.type_into("#password", DEMO_PASSWORD).await;
    browser.submit("#sign-in").await;
    browser.submit("#deny").await;
    let landed = browser.wait_url(|u| u.starts_with(&stack.callback)).await;
    assert_eq!(
        query_param(&landed, "error").as_deref(),
        Some("access_denied")
    );
    assert_eq!(query_param(&landed, "state").as_deref(), Some(state));
    assert!(query_param(&landed, "code").is_none());

    // 3. A wrong password: the login page again, with an error; no redirect.
    let (url, _) = stack.authorize_url("st-wrong-3");
    browser.goto(&url).await;
    browser.type_into("#username", DEMO_USER).await;
    browser.type_into("#password", "not-the-password").await;
    browser.submit("#sign-in").await;
    let error = browser.text("#login-error").await;
    assert!(error.contains("incorrect"), "{error}");
    let at = browser.url().await;
    assert!(at.starts_with(&format!("{}/login", stack.login)), "{at}");
    assert!(!at.starts_with(&stack.callback));
    assert!(!browser.find("#password").await.is_empty());
    browser.screenshot(&shots, "login-wrong-password.png").await;
    // The same message for a user that does not exist ("demox": the field kept "demo").
    browser.type_into("#username", "x").await;
    browser.type_into("#password", "whatever").await;
    browser.submit("#sign-in").await;
    assert_eq!(browser.text("#login-error").await, error);

    // 4. The error page: a forged challenge.
    browser
        .goto(&format!(
            "{}/login?login_challenge=forged-challenge",
            stack.login
        ))
        .await;
    let msg = browser.text("#error-message").await;
    assert!(msg.contains("unknown"), "{msg}");
    browser.screenshot(&shots, "login-error.png").await;
}

/// The demo client: its index page starts the flow (PKCE, state), the login
/// app logs in and asks for consent, and the demo client shows the tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_demo_client_shows_tokens() {
    let stack = Stack::start().await;
    let browser = Browser::start().await;
    let shots = screenshot_dir();
    browser.goto(&format!("{}/", stack.demo)).await;
    browser.screenshot(&shots, "login-demo-client.png").await;
    browser.submit("#start").await;
    browser.type_into("#username", DEMO_USER).await;
    browser.type_into("#password", DEMO_PASSWORD).await;
    browser.submit("#sign-in").await;
    browser.submit("#allow").await;
    let claims = browser.text("#claims").await;
    assert!(
        claims.contains(&format!("\"sub\": \"{}\"", stack.demo_subject)),
        "{claims}"
    );
    assert_eq!(browser.text("#scope").await, "orders:read");
    assert!(browser.text("#refresh").await.starts_with("received"));
    browser.screenshot(&shots, "login-demo-result.png").await;
}
