//! Bad input, over plain HTTP (no browser): forged challenges, missing or
//! foreign CSRF tokens, consent without a login, redirect parameters,
//! oversized bodies, and the security headers on every answer.

mod common;

use common::{DEMO_PASSWORD, DEMO_USER, Stack};
use reqwest::{Response, StatusCode};

const EVIL: &str = "https://evil.example/steal";

/// The value of the hidden field `name` in a page.
fn field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no field {name} in {html}"))
        + marker.len();
    let len = html[start..].find('"').unwrap();
    html[start..start + len].to_owned()
}

/// The `name=value` of the session cookie a response sets.
fn session_cookie(r: &Response) -> String {
    let c = r.headers()["set-cookie"].to_str().unwrap();
    assert!(
        c.contains("HttpOnly") && c.contains("SameSite=Lax") && c.contains("Path=/"),
        "{c}"
    );
    c.split(';').next().unwrap().to_owned()
}

/// A login page for a fresh challenge: (challenge, session cookie, csrf).
async fn login_page(stack: &Stack) -> (String, String, String) {
    login_page_for(stack, "orders:read profile").await
}

/// [`login_page`] for a request asking for `scope`.
async fn login_page_for(stack: &Stack, scope: &str) -> (String, String, String) {
    let ch = stack.login_challenge_for(scope).await;
    let r = stack
        .http
        .get(with_query(
            &format!("{}/login", stack.login),
            &[("login_challenge", &ch)],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = session_cookie(&r);
    let html = r.text().await.unwrap();
    (ch, cookie, field(&html, "csrf"))
}

/// `url?pairs`, form-encoded.
fn with_query(url: &str, pairs: &[(&str, &str)]) -> String {
    let q = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    format!("{url}?{q}")
}

async fn post(stack: &Stack, path: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> Response {
    let mut req = stack.http.post(format!("{}{path}", stack.login)).form(form);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    req.send().await.unwrap()
}

/// Logs in; returns the consent page's HTML.
async fn log_in(stack: &Stack, ch: &str, cookie: &str, csrf: &str) -> String {
    let r = post(
        stack,
        "/login",
        Some(cookie),
        &[
            ("login_challenge", ch),
            ("csrf", csrf),
            ("username", DEMO_USER),
            ("password", DEMO_PASSWORD),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains("id=\"allow\""), "{html}");
    html
}

fn assert_hardened(r: &Response) {
    let h = r.headers();
    let csp = h["content-security-policy"].to_str().unwrap();
    for part in [
        "default-src 'none'",
        "style-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["x-content-type-options"], "nosniff");
}

/// An error page: the status, HTML, hardened, no redirect.
async fn assert_error_page(r: Response, status: StatusCode) -> String {
    assert_eq!(r.status(), status);
    assert_hardened(&r);
    assert!(r.headers().get("location").is_none());
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"),
        "{:?}",
        r.headers()
    );
    r.text().await.unwrap()
}

#[tokio::test]
async fn forged_login_challenge_shows_the_error_page() {
    let stack = Stack::start().await;
    let real = stack.login_challenge().await;
    // A flipped character, a made-up one, a non-base64url one, an empty one.
    let mut flipped = real.clone().into_bytes();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    for forged in [flipped.as_str(), "forged", "<script>alert(1)</script>", ""] {
        let r = stack
            .http
            .get(with_query(
                &format!("{}/login", stack.login),
                &[("login_challenge", forged)],
            ))
            .send()
            .await
            .unwrap();
        let html = assert_error_page(r, StatusCode::BAD_REQUEST).await;
        assert!(!html.contains("<script>alert"), "escaped: {html}");
        assert!(!html.contains("name=\"password\""));
    }
    // And no challenge at all.
    let r = stack
        .http
        .get(format!("{}/login", stack.login))
        .send()
        .await
        .unwrap();
    assert_error_page(r, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn login_post_without_the_sessions_csrf_token_is_refused() {
    let stack = Stack::start().await;
    let (ch, cookie, csrf) = login_page(&stack).await;
    let (ch2, cookie2, csrf2) = login_page(&stack).await;
    let creds = [("username", DEMO_USER), ("password", DEMO_PASSWORD)];
    let with = |c: &'static str, t: &str| -> Vec<(String, String)> {
        let mut v = vec![("login_challenge".to_owned(), ch.clone())];
        if !c.is_empty() {
            v.push((c.to_owned(), t.to_owned()));
        }
        v.extend(creds.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        v
    };
    type Fields = Vec<(String, String)>;
    let cases: Vec<(Option<&str>, Fields)> = vec![
        // No token; an empty one; no cookie; another session's cookie and
        // token; another challenge's token.
        (Some(&cookie), with("", "")),
        (Some(&cookie), with("csrf", "")),
        (None, with("csrf", &csrf)),
        (Some(&cookie2), with("csrf", &csrf)),
        (Some(&cookie2), with("csrf", &csrf2)),
        (Some(&cookie), with("csrf", &csrf2)),
    ];
    for (c, form) in cases {
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let r = post(&stack, "/login", c, &form).await;
        let html = assert_error_page(r, StatusCode::FORBIDDEN).await;
        assert!(!html.contains("id=\"allow\""));
    }
    // The genuine form still works, for both.
    log_in(&stack, &ch, &cookie, &csrf).await;
    log_in(&stack, &ch2, &cookie2, &csrf2).await;
}

#[tokio::test]
async fn consent_without_a_prior_login_is_refused() {
    let stack = Stack::start().await;
    let (ch, cookie, csrf) = login_page(&stack).await;
    let far = (tokend_login::security::now_secs() + 300).to_string();
    let forged = [
        // No proof; a made-up one; an empty one.
        vec![
            ("decision", "allow"),
            ("username", DEMO_USER),
            ("expires", far.as_str()),
        ],
        vec![
            ("decision", "allow"),
            ("username", DEMO_USER),
            ("expires", far.as_str()),
            ("proof", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        ],
        vec![
            ("decision", "allow"),
            ("username", DEMO_USER),
            ("proof", ""),
        ],
    ];
    for extra in forged {
        let mut form = vec![("login_challenge", ch.as_str()), ("csrf", csrf.as_str())];
        form.extend(extra);
        let r = post(&stack, "/consent", Some(&cookie), &form).await;
        assert_error_page(r, StatusCode::FORBIDDEN).await;
    }
    // A real login's proof does not carry over to another user, another
    // expiry, another session, or without the CSRF token.
    let html = log_in(&stack, &ch, &cookie, &csrf).await;
    let (expires, proof) = (field(&html, "expires"), field(&html, "proof"));
    let (_, cookie2, _) = login_page(&stack).await;
    let later = (expires.parse::<u64>().unwrap() + 1).to_string();
    let tampered: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            &cookie,
            vec![
                ("username", "someone-else"),
                ("expires", &expires),
                ("csrf", &csrf),
            ],
        ),
        (
            &cookie,
            vec![
                ("username", DEMO_USER),
                ("expires", &later),
                ("csrf", &csrf),
            ],
        ),
        (
            &cookie2,
            vec![
                ("username", DEMO_USER),
                ("expires", &expires),
                ("csrf", &csrf),
            ],
        ),
        (
            &cookie,
            vec![("username", DEMO_USER), ("expires", &expires)],
        ),
    ];
    for (c, extra) in tampered {
        let mut form = vec![
            ("login_challenge", ch.as_str()),
            ("proof", proof.as_str()),
            ("decision", "allow"),
        ];
        form.extend(extra);
        let r = post(&stack, "/consent", Some(c), &form).await;
        assert_error_page(r, StatusCode::FORBIDDEN).await;
    }
    // None of that consumed the challenge: the genuine answer still works.
    let r = post(
        &stack,
        "/consent",
        Some(&cookie),
        &[
            ("login_challenge", &ch),
            ("csrf", &csrf),
            ("username", DEMO_USER),
            ("expires", &expires),
            ("proof", &proof),
            ("decision", "allow"),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_hardened(&r);
    let to = r.headers()["location"].to_str().unwrap();
    assert!(to.starts_with(&format!("{}?code=", stack.callback)), "{to}");
    // Answered once: the same form again is the error page (400), not a second code.
    let r = post(
        &stack,
        "/consent",
        Some(&cookie),
        &[
            ("login_challenge", &ch),
            ("csrf", &csrf),
            ("username", DEMO_USER),
            ("expires", &expires),
            ("proof", &proof),
            ("decision", "allow"),
        ],
    )
    .await;
    assert_error_page(r, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn no_parameter_redirects_anywhere_but_tokends_answer() {
    let stack = Stack::start().await;
    let evil = [
        ("redirect_uri", EVIL),
        ("next", EVIL),
        ("return_to", EVIL),
        ("redirect_to", EVIL),
    ];
    // GET /login with redirect parameters: the login page, no redirect.
    let ch = stack.login_challenge().await;
    let mut q = vec![("login_challenge", ch.as_str())];
    q.extend(evil);
    let r = stack
        .http
        .get(with_query(&format!("{}/login", stack.login), &q))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("location").is_none());
    let cookie = session_cookie(&r);
    let html = r.text().await.unwrap();
    assert!(!html.contains("evil.example"));
    let csrf = field(&html, "csrf");
    // Every page without a challenge, with only redirect parameters: no redirect.
    for path in ["/login", "/consent", "/", "/logout"] {
        let r = stack
            .http
            .get(with_query(&format!("{}{path}", stack.login), &evil))
            .send()
            .await
            .unwrap();
        assert!(r.headers().get("location").is_none(), "{path}");
        assert!(r.status().is_client_error(), "{path}: {}", r.status());
    }
    // POST /login with them: the consent page, no redirect.
    let mut form = vec![
        ("login_challenge", ch.as_str()),
        ("csrf", csrf.as_str()),
        ("username", DEMO_USER),
        ("password", DEMO_PASSWORD),
    ];
    form.extend(evil);
    let r = post(&stack, "/login", Some(&cookie), &form).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("location").is_none());
    let html = r.text().await.unwrap();
    assert!(!html.contains("evil.example"));
    let (expires, proof) = (field(&html, "expires"), field(&html, "proof"));
    // POST /consent with them: tokend's redirect_to (the registered callback) only.
    for decision in ["deny", "allow"] {
        let mut form = vec![
            ("login_challenge", ch.as_str()),
            ("csrf", csrf.as_str()),
            ("username", DEMO_USER),
            ("expires", expires.as_str()),
            ("proof", proof.as_str()),
            ("decision", decision),
        ];
        form.extend(evil);
        let r = post(&stack, "/consent", Some(&cookie), &form).await;
        if decision == "deny" {
            assert_eq!(r.status(), StatusCode::SEE_OTHER);
            let to = r.headers()["location"].to_str().unwrap();
            assert!(
                to.starts_with(&format!("{}?error=access_denied", stack.callback)),
                "{to}"
            );
        } else {
            // Already answered by the deny: the error page, no redirect.
            assert_error_page(r, StatusCode::BAD_REQUEST).await;
        }
    }
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let stack = Stack::start().await;
    let (ch, cookie, csrf) = login_page(&stack).await;
    let big = "x".repeat(16 * 1024);
    for path in ["/login", "/consent"] {
        let r = post(
            &stack,
            path,
            Some(&cookie),
            &[
                ("login_challenge", ch.as_str()),
                ("csrf", csrf.as_str()),
                ("username", &big),
            ],
        )
        .await;
        assert_error_page(r, StatusCode::PAYLOAD_TOO_LARGE).await;
    }
    // Over-long fields within the body limit are a 400.
    let long = "u".repeat(300);
    let r = post(
        &stack,
        "/login",
        Some(&cookie),
        &[
            ("login_challenge", ch.as_str()),
            ("csrf", csrf.as_str()),
            ("username", &long),
            ("password", "p"),
        ],
    )
    .await;
    assert_error_page(r, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn security_headers_are_on_every_page() {
    let stack = Stack::start().await;
    let (ch, cookie, csrf) = login_page(&stack).await;
    let get = |path: String| stack.http.get(path).send();
    // The login page, the stylesheet, 400, 404.
    let r = get(format!("{}/login?login_challenge={ch}", stack.login))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_hardened(&r);
    let r = get(format!("{}/static/style.css", stack.login))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    assert_hardened(&r);
    assert_error_page(
        get(format!("{}/login", stack.login)).await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_error_page(
        get(format!("{}/nope", stack.login)).await.unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    // 403, the consent page, the wrong-password page, the 303.
    let r = post(
        &stack,
        "/consent",
        Some(&cookie),
        &[("login_challenge", &ch)],
    )
    .await;
    assert_error_page(r, StatusCode::FORBIDDEN).await;
    let wrong = post(
        &stack,
        "/login",
        Some(&cookie),
        &[
            ("login_challenge", &ch),
            ("csrf", &csrf),
            ("username", DEMO_USER),
            ("password", "wrong"),
        ],
    )
    .await;
    assert_eq!(wrong.status(), 200);
    assert_hardened(&wrong);
    assert!(wrong.text().await.unwrap().contains("incorrect"));
    // A malformed form body is the 400 page.
    let r = stack
        .http
        .post(format!("{}/login", stack.login))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());
    assert_hardened(&r);
    // The demo client's pages too.
    let r = get(format!("{}/", stack.demo)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_hardened(&r);
    let r = get(format!("{}/callback?code=x&state=y", stack.demo))
        .await
        .unwrap();
    assert_error_page(r, StatusCode::BAD_REQUEST).await;
}

/// tokend down (or refusing the login app's secret): a 502 page, no panic.
#[tokio::test]
async fn unreachable_or_refusing_tokend_is_a_502_page() {
    let stack = Stack::start().await;
    let ch = stack.login_challenge().await;
    for (url, token) in [
        // Nothing listens on the discard port of loopback.
        ("http://127.0.0.1:9".to_owned(), common::APP_TOKEN),
        (stack.tokend_grpc.clone(), "the-wrong-secret"),
    ] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let settings = tokend_login::config::Settings {
            listen: addr,
            tokend_grpc_url: url,
            tokend_ca_pem: None,
            app_token: token.into(),
            users: tokend_login::config::load_users(
                &common::repo_root().join("examples/users.toml"),
            )
            .unwrap(),
            cookie_secure: true,
            remember_consent: false,
            max_concurrent_verifications: 1,
        };
        tokio::spawn(tokend_login::serve_login(
            listener,
            settings,
            std::future::pending(),
        ));
        let r = stack
            .http
            .get(with_query(
                &format!("http://{addr}/login"),
                &[("login_challenge", &ch)],
            ))
            .send()
            .await
            .unwrap();
        assert_error_page(r, StatusCode::BAD_GATEWAY).await;
    }
}

/// With `remember_consent`, an Allow with "remember" ticked skips the consent
/// page at the user's next login for that client, for the scopes allowed
/// then only; one without "remember" records nothing.
#[tokio::test]
async fn remembered_consent_skips_the_consent_page() {
    let stack = Stack::start_with(true).await;
    for remember in [None, Some("yes")] {
        let (ch, cookie, csrf) = login_page_for(&stack, "orders:read").await;
        let html = log_in(&stack, &ch, &cookie, &csrf).await;
        assert!(html.contains("name=\"remember\""));
        let (expires, proof) = (field(&html, "expires"), field(&html, "proof"));
        let mut form = vec![
            ("login_challenge", ch.as_str()),
            ("csrf", csrf.as_str()),
            ("username", DEMO_USER),
            ("expires", expires.as_str()),
            ("proof", proof.as_str()),
            ("decision", "allow"),
        ];
        if let Some(r) = remember {
            form.push(("remember", r));
        }
        let r = post(&stack, "/consent", Some(&cookie), &form).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
    }
    let login = async |scope: &str, password: &str| {
        let (ch, cookie, csrf) = login_page_for(&stack, scope).await;
        post(
            &stack,
            "/login",
            Some(&cookie),
            &[
                ("login_challenge", ch.as_str()),
                ("csrf", csrf.as_str()),
                ("username", DEMO_USER),
                ("password", password),
            ],
        )
        .await
    };
    // Remembered: the login answers with tokend's redirect at once.
    let r = login("orders:read", DEMO_PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_hardened(&r);
    let to = r.headers()["location"].to_str().unwrap();
    assert!(to.starts_with(&format!("{}?code=", stack.callback)), "{to}");
    // A scope never allowed before asks again, listing it.
    let r = login("orders:read profile", DEMO_PASSWORD).await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains("<code>profile</code>"), "{html}");
    assert!(html.contains("name=\"decision\""), "{html}");
    // A wrong password is still a wrong password.
    let r = login("orders:read", "wrong").await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("incorrect"));
}
