//! The attacks that send wrong secrets, so tokend backs this address off:
//! they run last. An argon2 flood must stay bounded; a burst of guesses
//! must be held at the throttle's threshold.

use super::net::{Base, Reply, get, metric, metrics_text, post_form, random_hex};
use super::{Outcome, Suite, skip, verdict};

impl Suite<'_> {
    pub(super) async fn argon2_flood(&self) -> anyhow::Result<Outcome> {
        let Some(id) = &self.a.argon2_client else {
            return skip("needs --argon2-client");
        };
        let http = self.http()?;
        let rss = |text: &str| metric(text, "process_resident_memory_bytes", &[]);
        let before = match &self.a.metrics {
            Some(url) => rss(&metrics_text(url).await?),
            None => None,
        };
        let n = 60;
        let answers = wrong_secrets(http, id, n, "attack-suite-wrong").await?;
        let (mut c401, mut c429, mut c503, mut other) = (0, 0, 0, Vec::new());
        for r in answers {
            match r.status {
                401 => c401 += 1,
                429 => c429 += 1,
                503 if r.header("retry-after").is_some() => c503 += 1,
                s => other.push(s),
            }
        }
        let health = get(http, "/healthz").await.map(|r| r.status);
        let mut d = format!(
            "{n} concurrent wrong secrets: {c401} checked (401), {c429} refused (429), {c503} told to retry (503)"
        );
        let mut ok = other.is_empty();
        if !other.is_empty() {
            d += &format!(", unexpected {other:?}");
        }
        match &health {
            Ok(s) => d += &format!("; /healthz {s} afterwards"),
            Err(e) => {
                ok = false;
                d += &format!("; /healthz did not answer afterwards: {e:#}");
            }
        }
        let after = match &self.a.metrics {
            Some(url) => rss(&metrics_text(url).await?),
            None => None,
        };
        match (before, after) {
            (Some(b), Some(a)) => {
                let grew = (a - b) / f64::from(1 << 20);
                d += &format!(
                    "; RSS {:.0} -> {:.0} MiB",
                    b / f64::from(1 << 20),
                    a / f64::from(1 << 20)
                );
                if grew > 200.0 {
                    ok = false;
                    d += " (grew more than 200 MiB)";
                }
            }
            _ => d += "; RSS not measured (process_resident_memory_bytes not exported)",
        }
        verdict(ok, d)
    }

    pub(super) async fn guessing_burst(&self) -> anyhow::Result<Outcome> {
        let http = self.http()?;
        let (id, whose) = match &self.a.client {
            Some(c) => (c.id.clone(), "--client's id"),
            None => (format!("attack-suite-{}", random_hex(8)), "an unknown id"),
        };
        let n = 120;
        let answers = wrong_secrets(http, &id, n, "attack-suite-guess").await?;
        let (mut c401, mut c429, mut other) = (0u32, 0u32, Vec::new());
        for r in answers {
            match r.status {
                401 => c401 += 1,
                429 => c429 += 1,
                s => other.push(s),
            }
        }
        let mut d = format!(
            "{n} concurrent wrong secrets for {whose}: {c401} checked (401), {c429} refused (429)"
        );
        if !other.is_empty() {
            d += &format!(", unexpected {other:?}");
        }
        if c401 < self.a.threshold.min(n) {
            d += " (fewer than the threshold: the address was already backing off)";
        }
        verdict(other.is_empty() && c401 <= self.a.threshold + 2, d)
    }
}

/// `n` concurrent client_credentials requests for `id`, each with its own
/// wrong secret (`<prefix>-<i>`); the answers in completion order.
async fn wrong_secrets(http: &Base, id: &str, n: u32, prefix: &str) -> anyhow::Result<Vec<Reply>> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (http, id, secret) = (http.clone(), id.to_owned(), format!("{prefix}-{i}"));
        tasks.spawn(async move {
            post_form(
                &http,
                "/oauth/token",
                Some((&id, &secret)),
                &[("grant_type", "client_credentials")],
            )
            .await
        });
    }
    let mut answers = Vec::with_capacity(n as usize);
    while let Some(r) = tasks.join_next().await {
        answers.push(r??);
    }
    Ok(answers)
}
