//! Out-of-band codes (issue 18, item 2): for a client registered with
//! `out_of_band = true` (a command-line partner tool with no redirect URI),
//! an authorization request with `redirect_uri=urn:ietf:wg:oauth:2.0:oob`
//! (or none, when the client registers no redirect URI) ends on tokend's own
//! page, which shows the code to copy into the tool.
//!
//! The code never travels in a URL. When the login app accepts, the browser
//! is sent to `/oauth/oob?ticket=T`, where `T` is a second 256-bit random
//! handle stored (under its SHA-256, like codes) next to the code for the
//! code's lifetime. The page takes the ticket atomically, so it shows the
//! code once; reloading it, or a ticket copied out of a browser history,
//! shows nothing. The page is plain HTML without scripts, styles or
//! external resources, sent with a Content-Security-Policy that allows
//! none, `no-store`, and no referrer.
//!
//! The endpoint is unauthenticated: a ticket of the wrong shape is refused
//! before any store access, and a well-formed one costs one store `take`
//! (the same as any other unauthenticated request's store access).

use serde::{Deserialize, Serialize};

use super::client::OOB_REDIRECT_URI;
use super::error::OAuthError;
use super::{Core, endpoints, now_unix_ms};
use tokend_token::opaque;

/// What the out-of-band page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OobPage {
    /// The code, once.
    Code {
        code: String,
        client_name: String,
        /// Seconds the code stays redeemable.
        expires_in: i64,
    },
    /// The user (or the login app) refused: one of the RFC 6749 4.1.2.1
    /// codes the login app may give, never text taken from the URL.
    Refused { error: &'static str },
    /// No such ticket: already shown, expired, or never issued.
    Gone,
}

/// A ticket's record.
#[derive(Serialize, Deserialize)]
struct Shown {
    code: String,
    client_id: String,
    exp_ms: i64,
}

fn ticket_key(ticket: &str) -> String {
    format!("oob:{}", opaque::digest(ticket))
}

/// A ticket as [`opaque::generate`] makes it: 43 base64url characters.
fn is_ticket(t: &str) -> bool {
    t.len() == 43
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether `redirect_uri` is the out-of-band one.
pub fn is_oob(redirect_uri: &str) -> bool {
    redirect_uri == OOB_REDIRECT_URI
}

impl Core {
    /// Stores a ticket for `code` and returns the page's URL carrying it.
    pub(crate) async fn oob_ticket(
        &self,
        code: &str,
        client_id: &str,
    ) -> Result<String, OAuthError> {
        let ticket = opaque::generate("");
        let exp_ms = now_unix_ms().saturating_add(
            i64::try_from(self.settings.code_ttl.as_millis()).unwrap_or(i64::MAX / 2),
        );
        let shown = Shown {
            code: code.to_owned(),
            client_id: client_id.to_owned(),
            exp_ms,
        };
        let json = serde_json::to_vec(&shown)
            .map_err(|_| OAuthError::ServerError("could not encode the ticket".into()))?;
        self.store
            .put(&ticket_key(&ticket), &json, Some(self.settings.code_ttl))
            .await?;
        Ok(format!(
            "{}?ticket={ticket}",
            self.settings.endpoint_url(endpoints::OOB)
        ))
    }

    /// The page's URL for a refused request.
    pub(crate) fn oob_refused(&self, error: &str) -> String {
        let mut url = self.settings.endpoint_url(endpoints::OOB);
        url.push_str("?error=");
        url.extend(form_urlencoded::byte_serialize(error.as_bytes()));
        url
    }

    /// `GET /oauth/oob?ticket=…` (or `?error=…`): what to show.
    pub async fn out_of_band_page(&self, raw_query: &str) -> Result<OobPage, OAuthError> {
        let mut ticket = None;
        let mut error = None;
        for (k, v) in form_urlencoded::parse(raw_query.as_bytes()) {
            match &*k {
                "ticket" => ticket = Some(v),
                "error" => error = Some(v),
                _ => {}
            }
        }
        if let Some(e) = error {
            return Ok(
                match super::authorize::REJECT_ERRORS.iter().find(|c| **c == e) {
                    Some(c) => OobPage::Refused { error: c },
                    None => OobPage::Gone,
                },
            );
        }
        let Some(ticket) = ticket.filter(|t| is_ticket(t)) else {
            return Ok(OobPage::Gone);
        };
        let Some(raw) = self.store.take(&ticket_key(&ticket)).await? else {
            return Ok(OobPage::Gone);
        };
        let Ok(shown) = serde_json::from_slice::<Shown>(&raw) else {
            return Ok(OobPage::Gone);
        };
        let expires_in = (shown.exp_ms - now_unix_ms()) / 1000;
        if expires_in <= 0 {
            return Ok(OobPage::Gone);
        }
        let client_name = self
            .clients()
            .get(&shown.client_id)
            .map(|c| {
                if c.name.is_empty() {
                    c.id.clone()
                } else {
                    c.name.clone()
                }
            })
            .unwrap_or(shown.client_id);
        Ok(OobPage::Code {
            code: shown.code,
            client_name,
            expires_in,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_have_one_shape() {
        assert!(is_ticket(&opaque::generate("")));
        assert!(!is_ticket("short"));
        assert!(!is_ticket(&"a".repeat(44)));
        assert!(!is_ticket(&format!("{}=", "a".repeat(42))));
    }
}
