//! Scope and audience rules (RFC 6749 3.3, RFC 8707).

use super::error::OAuthError;

/// Most scope tokens or audiences one request may name.
pub const MAX_ITEMS: usize = 64;
/// Longest single scope token or audience.
pub const MAX_ITEM_LEN: usize = 256;

/// RFC 6749 3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
pub fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ITEM_LEN
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

/// Splits a space-delimited `scope` parameter. Empty means "not asked".
pub fn split(s: &str) -> Vec<String> {
    s.split(' ')
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The scopes granted for `requested`: the client's `defaults` when nothing
/// is asked, otherwise exactly what was asked provided every item is in the
/// client's `allowed` scopes.
pub fn grant(
    allowed: &[String],
    defaults: &[String],
    requested: &[String],
) -> Result<Vec<String>, OAuthError> {
    if requested.len() > MAX_ITEMS {
        return Err(OAuthError::invalid_scope("too many scopes requested"));
    }
    if requested.is_empty() {
        return Ok(defaults.to_vec());
    }
    let mut out: Vec<String> = Vec::with_capacity(requested.len());
    for s in requested {
        if !is_scope_token(s) {
            return Err(OAuthError::invalid_scope("malformed scope"));
        }
        if !allowed.iter().any(|a| a == s) {
            return Err(OAuthError::invalid_scope(
                "the requested scope is not allowed for this client",
            ));
        }
        if !out.contains(s) {
            out.push(s.clone());
        }
    }
    Ok(out)
}

/// Narrows a previously granted scope (refresh): asking for more is an error.
pub fn narrow(granted: &[String], requested: &[String]) -> Result<Vec<String>, OAuthError> {
    if requested.is_empty() {
        return Ok(granted.to_vec());
    }
    if requested.len() > MAX_ITEMS {
        return Err(OAuthError::invalid_scope("too many scopes requested"));
    }
    subset(granted, requested, || {
        OAuthError::invalid_scope("the requested scope exceeds the scope originally granted")
    })
}

/// Narrows a previously granted audience (refresh): asking for another one is
/// `invalid_target`.
pub fn narrow_audience(
    granted: &[String],
    requested: &[String],
) -> Result<Vec<String>, OAuthError> {
    if requested.is_empty() {
        return Ok(granted.to_vec());
    }
    if requested.len() > MAX_ITEMS {
        return Err(OAuthError::invalid_target("too many audiences requested"));
    }
    subset(granted, requested, || {
        OAuthError::invalid_target("the requested audience exceeds the one originally granted")
    })
}

/// `requested` without duplicates, in order, when every item is in `allowed`.
fn subset(
    allowed: &[String],
    requested: &[String],
    refuse: impl Fn() -> OAuthError,
) -> Result<Vec<String>, OAuthError> {
    let mut out: Vec<String> = Vec::with_capacity(requested.len());
    for item in requested {
        if !allowed.contains(item) {
            return Err(refuse());
        }
        if !out.contains(item) {
            out.push(item.clone());
        }
    }
    Ok(out)
}

/// The audiences for `requested`: all of the client's `allowed` audiences
/// when nothing is asked, otherwise exactly what was asked provided the
/// client may have it.
pub fn audience(allowed: &[String], requested: &[String]) -> Result<Vec<String>, OAuthError> {
    if requested.len() > MAX_ITEMS {
        return Err(OAuthError::invalid_target("too many audiences requested"));
    }
    if requested.is_empty() {
        return Ok(allowed.to_vec());
    }
    subset(allowed, requested, || {
        OAuthError::invalid_target("the requested audience is not allowed for this client")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_token_grammar() {
        assert!(is_scope_token("orders:read"));
        assert!(is_scope_token("https://api.example/x"));
        assert!(!is_scope_token(""));
        assert!(!is_scope_token("a b"));
        assert!(!is_scope_token("quo\"te"));
        assert!(!is_scope_token("back\\slash"));
        assert!(!is_scope_token("é"));
        assert_eq!(split("  a  b "), vec!["a", "b"]);
    }

    #[test]
    fn narrowing_never_widens() {
        let g = vec!["a".to_string(), "b".to_string()];
        assert_eq!(narrow(&g, &[]).unwrap(), g);
        assert_eq!(narrow(&g, &["b".into()]).unwrap(), vec!["b"]);
        assert!(narrow(&g, &["c".into()]).is_err());
    }
}
