//! RFC 6749 request parameters, decoded once for every endpoint and
//! transport that takes them: the rules of RFC 6749 3.1 (a parameter sent
//! without a value is omitted; none may repeat, RFC 8707 `resource`
//! excepted), the parameter bound, and the two body encodings partners send
//! (form and JSON). The HTTP bridge and the authorization endpoint both use
//! this; nothing else decides these rules.

use serde_json::{Map, Value};

use super::error::OAuthError;

/// Decoded request parameters, in order, from a form or a JSON object.
#[derive(Debug, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

/// Most parameters one request may carry.
pub const MAX_PARAMS: usize = 64;

/// Parameters that may legitimately repeat (RFC 8707 `resource`).
const REPEATABLE: &[&str] = &["resource"];

impl Params {
    /// Parses an `application/x-www-form-urlencoded` body.
    pub fn from_form(body: &[u8]) -> Result<Self, OAuthError> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        Self::checked(pairs)
    }

    /// Parses a JSON object body. Values are strings; `scope`, `audience` and
    /// `resource` may also be arrays of strings.
    pub fn from_json(body: &[u8]) -> Result<Self, OAuthError> {
        let obj: Map<String, Value> = serde_json::from_slice(body)
            .map_err(|_| OAuthError::invalid_request("the body is not a JSON object"))?;
        let mut pairs = Vec::with_capacity(obj.len());
        for (k, v) in obj {
            match v {
                Value::String(s) => pairs.push((k, s)),
                Value::Null => {}
                Value::Array(items) if matches!(k.as_str(), "scope" | "audience" | "resource") => {
                    let mut joined = Vec::with_capacity(items.len());
                    for item in items {
                        match item {
                            Value::String(s) => joined.push(s),
                            _ => {
                                return Err(OAuthError::invalid_request(format!(
                                    "{k} must be a string or an array of strings"
                                )));
                            }
                        }
                    }
                    if k == "resource" {
                        pairs.extend(joined.into_iter().map(|s| (k.clone(), s)));
                    } else {
                        pairs.push((k, joined.join(" ")));
                    }
                }
                _ => {
                    return Err(OAuthError::invalid_request(format!("{k} must be a string")));
                }
            }
        }
        Self::checked(pairs)
    }

    /// Strict parsing for the token, introspection and revocation endpoints:
    /// [`Params::lenient`], then no repeated parameter.
    fn checked(pairs: Vec<(String, String)>) -> Result<Self, OAuthError> {
        let p = Self::lenient(pairs)?;
        p.check_repeats()?;
        Ok(p)
    }

    /// At most [`MAX_PARAMS`] parameters, and those sent without a value are
    /// dropped (RFC 6749 3.1: treated as omitted). Repeats are left for the
    /// caller to judge ([`Params::check_repeats`]): the authorization
    /// endpoint must tell a repeated `redirect_uri` (shown to the user) from
    /// other repeats (redirected to the client).
    pub fn lenient(pairs: Vec<(String, String)>) -> Result<Self, OAuthError> {
        if pairs.len() > MAX_PARAMS {
            return Err(OAuthError::invalid_request("too many parameters"));
        }
        let pairs = pairs.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        Ok(Self { pairs })
    }

    /// RFC 6749 3.1: request and response parameters must not be included
    /// more than once (RFC 8707 `resource` excepted).
    pub fn check_repeats(&self) -> Result<(), OAuthError> {
        let pairs = &self.pairs;
        for (i, (k, _)) in pairs.iter().enumerate() {
            if !REPEATABLE.contains(&k.as_str()) && pairs[..i].iter().any(|(k2, _)| k2 == k) {
                return Err(OAuthError::invalid_request(format!(
                    "parameter {} is repeated",
                    printable(k)
                )));
            }
        }
        Ok(())
    }

    /// How many times `name` was sent (with a value).
    pub fn count(&self, name: &str) -> usize {
        self.pairs.iter().filter(|(k, _)| k == name).count()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn owned(&self, name: &str) -> Option<String> {
        self.get(name).map(str::to_owned)
    }
}

/// A parameter name safe to echo in an error description.
fn printable(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(40)
        .collect();
    if cleaned.is_empty() {
        "(unnamed)".into()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_are_rejected_except_resource() {
        assert!(Params::from_form(b"grant_type=a&grant_type=b").is_err());
        let p = Params::from_form(b"resource=a&resource=b&scope=").unwrap();
        assert_eq!(p.all("resource").count(), 2);
        assert_eq!(p.get("scope"), None);
        assert!(Params::from_json(br#"{"scope":["a","b"],"x":"y"}"#).is_ok());
        assert!(Params::from_json(br#"{"grant_type":1}"#).is_err());
        assert!(Params::from_json(b"[1]").is_err());
    }
}
