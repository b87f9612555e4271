//! The attacks on the authorization endpoint and on client enumeration:
//! malformed queries, RFC 9207 `iss`, `state` byte for byte, a flood that
//! must write nothing to the store, and answers that must not tell known
//! clients from unknown ones.

use http::Method;

use super::net::{self, Reply, encode, get, metric, metrics_text, post_form, random_hex};
use super::{Outcome, Suite, fail, pass, skip, verdict};

/// A valid-looking PKCE S256 challenge (43 base64url characters).
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

impl Suite<'_> {
    async fn authorize(&self, query: &str) -> anyhow::Result<Reply> {
        get(self.http()?, &format!("/oauth/authorize?{query}")).await
    }

    /// The error redirect of `response_type=token` for the code client, with
    /// `state` as given (already encoded).
    async fn error_redirect(
        &self,
        client: &str,
        redirect: &str,
        state: &str,
    ) -> anyhow::Result<String> {
        let r = self
            .authorize(&format!(
                "response_type=token&client_id={}&redirect_uri={}&state={state}",
                encode(client),
                encode(redirect)
            ))
            .await?;
        match r.header("location") {
            Some(l) if (300..400).contains(&r.status) => Ok(l.to_owned()),
            _ => anyhow::bail!(
                "response_type=token was not redirected: {} {:.200}",
                r.status,
                r.text()
            ),
        }
    }

    pub(super) async fn malformed_query(&self) -> anyhow::Result<Outcome> {
        let r = self.authorize("client_id=x&redirect_uri=%ZZ").await?;
        let body = r.json().unwrap_or_default();
        let description = body["error_description"].as_str().unwrap_or_default();
        verdict(
            r.status == 400
                && body["error"] == "invalid_request"
                && description.contains("malformed")
                && r.header("location").is_none(),
            format!(
                "redirect_uri=%ZZ: {} {} {description:?}",
                r.status, body["error"]
            ),
        )
    }

    pub(super) async fn rfc9207(&self) -> anyhow::Result<Outcome> {
        let meta = self.discovery().await?;
        if meta["authorization_response_iss_parameter_supported"] != true {
            return fail("discovery lacks authorization_response_iss_parameter_supported: true");
        }
        let issuer = meta["issuer"].as_str().unwrap_or_default().to_owned();
        let (client, redirect) = match self.code_client() {
            Ok(c) => c,
            Err(why) => {
                return pass(format!(
                    "discovery announces it; the error redirect is not checked ({why})"
                ));
            }
        };
        let to = self.error_redirect(client, redirect, "s").await?;
        let iss = query_param(&to, "iss").map(|v| decode(&v));
        verdict(
            iss.as_deref() == Some(issuer.as_str()),
            format!("discovery announces it; error redirect iss={iss:?} (issuer {issuer:?})"),
        )
    }

    pub(super) async fn state_echo(&self) -> anyhow::Result<Outcome> {
        let (client, redirect) = match self.code_client() {
            Ok(c) => c,
            Err(why) => return skip(why),
        };
        let state = "a%7Eb+c%2f";
        let to = self.error_redirect(client, redirect, state).await?;
        let echoed = query_param(&to, "state");
        verdict(
            echoed.as_deref() == Some(state),
            format!(
                "sent state={state}, error redirect has state={}",
                echoed.unwrap_or_default()
            ),
        )
    }

    pub(super) async fn authorize_writes_nothing(&self) -> anyhow::Result<Outcome> {
        let (client, redirect) = match self.code_client() {
            Ok(c) => c,
            Err(why) => return skip(why),
        };
        let Some(url) = &self.a.metrics else {
            return skip("needs --metrics");
        };
        let writes = |text: &str| {
            ["put", "put_new"]
                .iter()
                .map(|op| {
                    metric(
                        text,
                        "tokend_store_duration_seconds_count",
                        &[&format!("op=\"{op}\"")],
                    )
                    .unwrap_or(0.0)
                })
                .sum::<f64>()
        };
        let before = writes(&metrics_text(url).await?);
        let query = format!(
            "/oauth/authorize?response_type=code&client_id={}&redirect_uri={}&state=attack-suite\
             &code_challenge={CHALLENGE}&code_challenge_method=S256",
            encode(client),
            encode(redirect)
        );
        let n = self.a.authorize_requests;
        let workers = 8u64;
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..workers {
            let base = self.http()?.clone();
            let query = query.clone();
            let count = n / workers + u64::from(w < n % workers);
            tasks.spawn(async move {
                let mut conn = net::H1::open(&base).await?;
                let mut to_login = 0u64;
                for _ in 0..count {
                    let r = conn.send(Method::GET, &query, &[], Vec::new()).await?;
                    if (300..400).contains(&r.status)
                        && r.header("location")
                            .is_some_and(|l| l.contains("login_challenge"))
                    {
                        to_login += 1;
                    }
                }
                anyhow::Ok(to_login)
            });
        }
        let mut to_login = 0;
        while let Some(r) = tasks.join_next().await {
            to_login += r??;
        }
        let after = writes(&metrics_text(url).await?);
        let d = format!(
            "{n} authorize requests ({to_login} sent to the login page): store put/put_new {before} -> {after}"
        );
        if to_login == 0 {
            return fail(format!(
                "{d}; none reached the login page (check --code-client/--redirect-uri)"
            ));
        }
        verdict(after == before, d)
    }

    pub(super) async fn client_enumeration(&self) -> anyhow::Result<Outcome> {
        let http = self.http()?;
        let unknown = format!("attack-suite-{}", random_hex(8));
        let mut parts = Vec::new();
        let mut ok = true;
        if let Some(public) = &self.a.public_client {
            let answer = |id: String| async move {
                let r = post_form(
                    http,
                    "/oauth/token",
                    None,
                    &[("grant_type", "client_credentials"), ("client_id", &id)],
                )
                .await?;
                anyhow::Ok((
                    r.status,
                    r.header("www-authenticate").map(str::to_owned),
                    r.body,
                ))
            };
            let p = answer(public.clone()).await?;
            let u = answer(unknown.clone()).await?;
            let same = p == u;
            ok &= same;
            parts.push(format!(
                "token endpoint: public id {} {}, unknown id {} ({})",
                p.0,
                String::from_utf8_lossy(&p.2),
                u.0,
                if same { "identical" } else { "DIFFERENT" }
            ));
        }
        if let Some(c) = &self.a.client {
            let redirect = self
                .a
                .redirect_uri
                .clone()
                .unwrap_or_else(|| "https://attack-suite.invalid/cb".to_owned());
            let answer = |id: String| {
                let redirect = redirect.clone();
                async move {
                    let r = self
                        .authorize(&format!(
                            "response_type=code&client_id={}&redirect_uri={}&state=s\
                             &code_challenge={CHALLENGE}&code_challenge_method=S256",
                            encode(&id),
                            encode(&redirect)
                        ))
                        .await?;
                    anyhow::Ok((
                        r.status,
                        r.header("content-type").map(str::to_owned),
                        r.header("location").map(str::to_owned),
                        r.body,
                    ))
                }
            };
            let k = answer(c.id.clone()).await?;
            let u = answer(unknown).await?;
            let same = k == u;
            ok &= same;
            parts.push(format!(
                "authorize: client without the code grant {}, unknown id {} ({})",
                k.0,
                u.0,
                if same { "identical" } else { "DIFFERENT" }
            ));
        }
        if parts.is_empty() {
            return skip("needs --public-client and/or --client");
        }
        verdict(ok, parts.join("; "))
    }
}

/// The raw (still encoded) value of `name` in the query of `url`.
fn query_param(url: &str, name: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    let q = q.split('#').next().unwrap_or_default();
    q.split('&')
        .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
        .map(str::to_owned)
}

fn decode(v: &str) -> String {
    form_urlencoded::parse(format!("x={v}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_param_is_raw_and_decode_decodes() {
        let to = "https://a.example/cb?error=x&state=a%7Eb+c%2f&iss=https%3A%2F%2Ft#frag";
        assert_eq!(query_param(to, "state").as_deref(), Some("a%7Eb+c%2f"));
        assert_eq!(
            query_param(to, "iss").map(|v| decode(&v)).as_deref(),
            Some("https://t")
        );
        assert_eq!(query_param(to, "stat"), None);
        assert_eq!(query_param("https://a.example/cb", "state"), None);
    }
}
