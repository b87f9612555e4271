//! Tokens the pages carry, the session cookie and the response headers.
//!
//! Everything here is keyed by one random per-process key: a restart (or
//! another replica) invalidates forms in flight, which only costs a user a
//! page reload. Nothing is stored per session: the session cookie is a random
//! id, and the forms carry MACs over it.

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "tokend_login_session";
/// How long a successful login may wait for the consent answer.
pub const LOGIN_TTL_SECS: u64 = 600;

/// `n` random bytes, base64url.
pub fn random_token(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("the OS random source works");
    URL_SAFE_NO_PAD.encode(b)
}

/// The per-process MAC key.
pub struct Keys {
    key: [u8; 32],
}

impl Keys {
    pub fn random() -> Self {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the OS random source works");
        Self { key }
    }

    /// HMAC-SHA256 over a purpose label and length-prefixed parts (so no two
    /// different part lists give the same input), base64url.
    fn mac(&self, purpose: &str, parts: &[&str]) -> String {
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key).expect("any key length");
        m.update(purpose.as_bytes());
        for p in parts {
            m.update(&(p.len() as u64).to_be_bytes());
            m.update(p.as_bytes());
        }
        URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
    }

    /// The CSRF token of a form: bound to the session and the login challenge.
    pub fn csrf(&self, session: &str, challenge: &str) -> String {
        self.mac("csrf", &[session, challenge])
    }

    pub fn csrf_ok(&self, session: &str, challenge: &str, token: &str) -> bool {
        eq(&self.csrf(session, challenge), token)
    }

    /// Proof, carried by the consent form, that this session logged in as
    /// `username` for this challenge, valid until `expires` (Unix seconds).
    pub fn login_proof(
        &self,
        session: &str,
        challenge: &str,
        username: &str,
        expires: u64,
    ) -> String {
        self.mac(
            "login",
            &[session, challenge, username, &expires.to_string()],
        )
    }

    pub fn login_proof_ok(
        &self,
        session: &str,
        challenge: &str,
        username: &str,
        expires: u64,
        proof: &str,
    ) -> bool {
        let fresh = now_secs() <= expires;
        // Always compare, so the answer time does not tell which check failed.
        let mac_ok = eq(
            &self.login_proof(session, challenge, username, expires),
            proof,
        );
        fresh & mac_ok
    }
}

/// Constant-time string equality.
pub fn eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The value of cookie `name` in the request, if it looks like one of ours.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| {
            (16..=128).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `Set-Cookie` for the session: `HttpOnly`, `SameSite=Lax` (the login page
/// is reached by a cross-site redirect from tokend, and the forms post to
/// this origin only), `Path=/`, `Secure` unless configured off for plain-HTTP
/// demos; a session cookie (no `Max-Age`): it dies with the browser.
pub fn session_cookie(value: &str, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; HttpOnly; SameSite=Lax; Path=/{secure}"
    ))
    .expect("a base64url value is a valid header")
}

/// The Content-Security-Policy of every page; `form-action` gets `extra`.
fn csp(form_extra: &str) -> String {
    format!(
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'{form_extra}; \
         frame-ancestors 'none'; base-uri 'none'"
    )
}

/// The CSP of a page whose form may end in tokend's redirect to the client:
/// browsers apply `form-action` to the redirects that follow a form
/// submission too, so the origin of the client's registered redirect URI
/// (from GetAuthorization) joins `'self'`. Nothing else does: the app never
/// redirects anywhere else. A redirect URI that is not a plain origin source
/// adds nothing (the redirect is then blocked, never widened).
pub fn csp_for_redirect(redirect_uri: &str) -> HeaderValue {
    let source = redirect_source(redirect_uri)
        .map(|s| format!(" {s}"))
        .unwrap_or_default();
    HeaderValue::from_str(&csp(&source)).expect("checked characters only")
}

/// `scheme://host[:port]` of an http(s) URI, or `scheme:` of a private-use
/// one (`com.example.app:/cb`); `None` for anything that could bend the policy.
fn redirect_source(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once(':')?;
    let scheme_ok = !scheme.is_empty()
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return None;
    }
    let Some(rest) = rest.strip_prefix("//") else {
        return Some(format!("{}:", scheme.to_ascii_lowercase()));
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit('@').next()?;
    let ok = !host_port.is_empty()
        && host_port
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    ok.then(|| format!("{}://{}", scheme.to_ascii_lowercase(), host_port))
}

/// The headers every response gets (a page's own CSP, if it set one, stays).
pub fn harden(headers: &mut HeaderMap) {
    let set = |h: &mut HeaderMap, k: header::HeaderName, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_str(&csp("")).expect("a valid header"),
        );
    }
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::CACHE_CONTROL, "no-store");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_binds_session_and_challenge() {
        let k = Keys::random();
        let t = k.csrf("s1", "c1");
        assert!(k.csrf_ok("s1", "c1", &t));
        assert!(!k.csrf_ok("s2", "c1", &t));
        assert!(!k.csrf_ok("s1", "c2", &t));
        assert!(!k.csrf_ok("s1", "c1", ""));
        assert!(!Keys::random().csrf_ok("s1", "c1", &t));
    }

    #[test]
    fn login_proof_binds_everything_and_expires() {
        let k = Keys::random();
        let exp = now_secs() + 60;
        let p = k.login_proof("s", "c", "demo", exp);
        assert!(k.login_proof_ok("s", "c", "demo", exp, &p));
        assert!(!k.login_proof_ok("s", "c", "other", exp, &p));
        assert!(!k.login_proof_ok("s", "c", "demo", exp + 1, &p));
        let old = now_secs() - 1;
        let p = k.login_proof("s", "c", "demo", old);
        assert!(!k.login_proof_ok("s", "c", "demo", old, &p));
        // Length prefixes: moving bytes between parts changes the MAC.
        assert_ne!(k.csrf("ab", "c"), k.csrf("a", "bc"));
    }

    #[test]
    fn redirect_sources() {
        let src = |u| redirect_source(u);
        assert_eq!(
            src("https://App.example/cb?x=1").as_deref(),
            Some("https://App.example")
        );
        assert_eq!(
            src("http://127.0.0.1:9999/callback").as_deref(),
            Some("http://127.0.0.1:9999")
        );
        assert_eq!(
            src("http://[::1]:80/cb").as_deref(),
            Some("http://[::1]:80")
        );
        assert_eq!(
            src("com.example.app:/cb").as_deref(),
            Some("com.example.app:")
        );
        assert_eq!(src("https://a.example;script-src *"), None);
        assert_eq!(src("https://a.example 'unsafe-inline'/"), None);
        assert_eq!(src("https://"), None);
        assert_eq!(src("nocolon"), None);
        let v = csp_for_redirect("https://a.example;x");
        assert!(v.to_str().unwrap().contains("form-action 'self';"));
    }

    #[test]
    fn cookie_parsing() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; tokend_login_session=abcdefghijklmnopqrstuv; c=d"),
        );
        assert_eq!(
            cookie(&h, SESSION_COOKIE).as_deref(),
            Some("abcdefghijklmnopqrstuv")
        );
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("tokend_login_session=x<y"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), None);
    }
}
