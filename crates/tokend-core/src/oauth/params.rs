//! RFC 6749 request parameters, decoded once for every endpoint and
//! transport that takes them: the rules of RFC 6749 3.1 (a parameter sent
//! without a value is omitted; none may repeat, RFC 8707 `resource`
//! excepted), the parameter bound, and the two body encodings partners send
//! (form and JSON). The HTTP bridge and the authorization endpoint both use
//! this; nothing else decides these rules.

use serde_json::Value;

use super::error::OAuthError;

/// Decoded request parameters, in order, from a form or a JSON object.
#[derive(Debug, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

/// Most parameters one request may carry.
pub const MAX_PARAMS: usize = 64;

/// A JSON object's members in order, refusing a repeated key (serde_json's
/// `Map` keeps the last one silently).
struct JsonObject(Vec<(String, Value)>);

const DUPLICATE: &str = "duplicate key";

impl<'de> serde::Deserialize<'de> for JsonObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = JsonObject;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<JsonObject, A::Error> {
                let mut out: Vec<(String, Value)> = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    if out.iter().any(|(seen, _)| *seen == k) {
                        return Err(serde::de::Error::custom(DUPLICATE));
                    }
                    if out.len() >= MAX_PARAMS {
                        return Err(serde::de::Error::custom("too many members"));
                    }
                    out.push((k, map.next_value()?));
                }
                Ok(JsonObject(out))
            }
        }
        d.deserialize_map(V)
    }
}

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
    /// A key may appear once: JSON parsers disagree on which of two equal
    /// keys wins, so tokend takes neither (as a form body may not repeat a
    /// parameter).
    pub fn from_json(body: &[u8]) -> Result<Self, OAuthError> {
        let obj: JsonObject = serde_json::from_slice(body).map_err(|e| {
            if e.is_data() && e.to_string().starts_with(DUPLICATE) {
                OAuthError::invalid_request("a JSON key is repeated")
            } else {
                OAuthError::invalid_request("the body is not a JSON object")
            }
        })?;
        let mut pairs = Vec::with_capacity(obj.0.len());
        for (k, v) in obj.0 {
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

/// One parameter of a URL query: name and value decoded, and the value
/// exactly as it was sent (what `state` echoes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryParam {
    pub name: String,
    pub value: String,
    pub raw_value: String,
}

/// Parses a URL query (`GET /oauth/authorize`) as
/// `application/x-www-form-urlencoded`, strictly: a `%` without two hex
/// digits after it, or bytes that are not UTF-8 once decoded, make the query
/// malformed. (A lenient decoder keeps the `%` or substitutes U+FFFD, so a
/// mangled `redirect_uri` used to be reported as "not registered".) Each
/// value is also kept as sent. At most [`MAX_PARAMS`] parameters.
pub fn parse_query(raw: &str) -> Result<Vec<QueryParam>, OAuthError> {
    let mut out = Vec::new();
    for piece in raw.split('&').filter(|p| !p.is_empty()) {
        if out.len() >= MAX_PARAMS {
            return Err(OAuthError::invalid_request("too many parameters"));
        }
        let (name, raw_value) = piece.split_once('=').unwrap_or((piece, ""));
        let Some(name) = percent_decode(name) else {
            return Err(OAuthError::invalid_request(
                "the query is malformed: a parameter name is not percent-encoded UTF-8",
            ));
        };
        let Some(value) = percent_decode(raw_value) else {
            return Err(OAuthError::invalid_request(format!(
                "the query is malformed: parameter {} is not percent-encoded UTF-8",
                printable(&name)
            )));
        };
        out.push(QueryParam {
            name,
            value,
            raw_value: raw_value.to_owned(),
        });
    }
    Ok(out)
}

/// Form decoding (`+` is a space) that refuses what it cannot decode
/// exactly.
fn percent_decode(s: &str) -> Option<String> {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = hex(*bytes.get(i + 1)?)?;
                let lo = hex(*bytes.get(i + 2)?)?;
                out.push((hi << 4) | lo);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
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
        // Repeated JSON keys are refused, not last-one-wins.
        let err = Params::from_json(br#"{"scope":"a","scope":"b"}"#).unwrap_err();
        assert_eq!(err.description(), "a JSON key is repeated");
        assert!(Params::from_json(br#"{"resource":"a","resource":"b"}"#).is_err());
        let many: String = (0..=MAX_PARAMS)
            .map(|i| format!("\"k{i}\":\"v\""))
            .collect::<Vec<_>>()
            .join(",");
        assert!(Params::from_json(format!("{{{many}}}").as_bytes()).is_err());
    }

    #[test]
    fn queries_decode_strictly_and_keep_raw_values() {
        let q = parse_query("a=x%7E~+%20%2f&&b&c=%C3%BC").unwrap();
        assert_eq!(q.len(), 3);
        assert_eq!(
            (q[0].value.as_str(), q[0].raw_value.as_str()),
            ("x~~  /", "x%7E~+%20%2f")
        );
        assert_eq!((q[1].name.as_str(), q[1].value.as_str()), ("b", ""));
        assert_eq!(q[2].value, "\u{fc}");
        for bad in ["a=%", "a=%4", "a=%zz", "a=%FF", "%=1", "a=%C3"] {
            assert!(parse_query(bad).is_err(), "{bad}");
        }
        let many = vec!["k=v"; MAX_PARAMS + 1].join("&");
        assert!(parse_query(&many).is_err());
    }
}
