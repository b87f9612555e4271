//! Serde helpers for settings numbers: the same key may come from a TOML
//! number or, through a `TOKEND_<SECTION>_<KEY>` environment override, a
//! string. Shared by every component that owns a settings section.

use serde::{Deserialize, Deserializer};

/// Whole numbers from TOML integers or strings.
pub fn de_num<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        Int(u64),
        Str(String),
    }
    match N::deserialize(d)? {
        N::Int(n) => Ok(n),
        N::Str(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("expected a whole number, got {s:?}"))),
    }
}

/// Non-negative decimal numbers from TOML floats, integers or strings.
pub fn de_f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        F(f64),
        I(i64),
        Str(String),
    }
    let v = match N::deserialize(d)? {
        N::F(f) => f,
        N::I(i) => i as f64,
        N::Str(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("expected a number, got {s:?}")))?,
    };
    if !v.is_finite() || v < 0.0 {
        return Err(serde::de::Error::custom("expected a non-negative number"));
    }
    Ok(v)
}

/// Booleans from TOML booleans or the strings `true` / `false`.
pub fn de_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum B {
        Bool(bool),
        Str(String),
    }
    match B::deserialize(d)? {
        B::Bool(b) => Ok(b),
        B::Str(s) => match s.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(serde::de::Error::custom(format!(
                "expected true or false, got {s:?}"
            ))),
        },
    }
}
