//! `basic_auth`: a username, a password and the htpasswd (bcrypt) line for
//! them, ready for `kubernetes.io/basic-auth` Secrets and ingress controllers.

use serde::Deserialize;
use zeroize::Zeroizing;

use super::random::CharsetConfig;
use super::{Generator, Limits};
use crate::render::{DEFAULT_BCRYPT_COST, MAX_BCRYPT_COST};
use crate::secret::Outputs;

/// bcrypt reads at most this many bytes of a password.
pub const BCRYPT_MAX_BYTES: u64 = 72;
/// Default generated password length.
pub const DEFAULT_LENGTH: u64 = 32;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BasicAuthConfig {
    pub username: String,
    /// A password to use (e.g. `"{{ pass.value }}"`) instead of generating one.
    pub password: Option<String>,
    /// bcrypt cost for the htpasswd line.
    pub bcrypt_cost: u32,
    // The random_password options, for a generated password.
    pub length: Option<u64>,
    pub lower: Option<bool>,
    pub upper: Option<bool>,
    pub numeric: Option<bool>,
    pub special: Option<bool>,
    pub override_special: Option<String>,
    pub min_lower: Option<u64>,
    pub min_upper: Option<u64>,
    pub min_numeric: Option<u64>,
    pub min_special: Option<u64>,
    pub exclude: Option<String>,
}

impl Default for BasicAuthConfig {
    fn default() -> Self {
        Self {
            username: "admin".into(),
            password: None,
            bcrypt_cost: DEFAULT_BCRYPT_COST,
            length: None,
            lower: None,
            upper: None,
            numeric: None,
            special: None,
            override_special: None,
            min_lower: None,
            min_upper: None,
            min_numeric: None,
            min_special: None,
            exclude: None,
        }
    }
}

impl BasicAuthConfig {
    fn has_password_options(&self) -> bool {
        self.length.is_some()
            || self.lower.is_some()
            || self.upper.is_some()
            || self.numeric.is_some()
            || self.special.is_some()
            || self.override_special.is_some()
            || self.min_lower.is_some()
            || self.min_upper.is_some()
            || self.min_numeric.is_some()
            || self.min_special.is_some()
            || self.exclude.is_some()
    }

    fn charset(&self) -> CharsetConfig {
        let d = CharsetConfig::default();
        CharsetConfig {
            length: self.length.unwrap_or(DEFAULT_LENGTH),
            lower: self.lower.unwrap_or(d.lower),
            upper: self.upper.unwrap_or(d.upper),
            numeric: self.numeric.unwrap_or(d.numeric),
            special: self.special.unwrap_or(d.special),
            override_special: self.override_special.clone(),
            min_lower: self.min_lower.unwrap_or(0),
            min_upper: self.min_upper.unwrap_or(0),
            min_numeric: self.min_numeric.unwrap_or(0),
            min_special: self.min_special.unwrap_or(0),
            exclude: self.exclude.clone().unwrap_or_default(),
        }
    }
}

pub struct BasicAuth;

impl Generator for BasicAuth {
    const TYPE: &'static str = "basic_auth";
    // bcrypt takes tens of milliseconds by design.
    const EXPENSIVE: bool = true;
    type Config = BasicAuthConfig;

    fn validate(config: &BasicAuthConfig, _: &Limits) -> Result<(), String> {
        let user = &config.username;
        if user.is_empty() || user.len() > 255 {
            return Err("username must be 1 to 255 bytes".into());
        }
        if user.contains(':') || user.chars().any(char::is_control) {
            return Err("username must not contain ':' or control characters (htpasswd and HTTP basic auth forbid them)".into());
        }
        if !(4..=MAX_BCRYPT_COST).contains(&config.bcrypt_cost) {
            return Err(format!(
                "bcrypt_cost must be from 4 to {MAX_BCRYPT_COST}, got {}",
                config.bcrypt_cost
            ));
        }
        match &config.password {
            Some(p) => {
                if config.has_password_options() {
                    return Err("the password options (length, lower, ...) apply only when password is absent".into());
                }
                if p.is_empty() {
                    return Err("password is empty".into());
                }
                if p.len() as u64 > BCRYPT_MAX_BYTES {
                    return Err(format!(
                        "password is {} bytes; bcrypt uses only the first {BCRYPT_MAX_BYTES}",
                        p.len()
                    ));
                }
                Ok(())
            }
            None => config.charset().validate(BCRYPT_MAX_BYTES).map_err(|e| {
                if e.starts_with("length") {
                    format!(
                        "{e} (bcrypt uses only the first {BCRYPT_MAX_BYTES} bytes of a password)"
                    )
                } else {
                    e
                }
            }),
        }
    }

    fn generate(config: &BasicAuthConfig, _: &Limits) -> Result<Outputs, String> {
        let password = Zeroizing::new(match &config.password {
            Some(p) => p.clone(),
            None => config.charset().draw(),
        });
        let hash = bcrypt::hash_with_result(password.as_bytes(), config.bcrypt_cost)
            .map_err(|_| "bcrypt hashing failed".to_owned())?
            .format_for_version(bcrypt::Version::TwoY);
        Ok(Outputs::new()
            .with("username", config.username.clone())
            .with("password", password.as_str())
            .with("htpasswd", format!("{}:{hash}", config.username)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn cfg(v: serde_json::Value) -> BasicAuthConfig {
        super::super::parse_config(&v).unwrap()
    }

    #[test]
    fn htpasswd_line_verifies() {
        let c = cfg(
            serde_json::json!({"username": "alice", "bcrypt_cost": 4, "length": 20, "special": false}),
        );
        BasicAuth::validate(&c, &Limits::default()).unwrap();
        let out = BasicAuth::generate(&c, &Limits::default()).unwrap();
        let pass = out.get_str("password").unwrap();
        assert_eq!(pass.len(), 20);
        let line = out.get_str("htpasswd").unwrap();
        let hash = line.strip_prefix("alice:").unwrap();
        assert!(hash.starts_with("$2y$04$"));
        assert!(bcrypt::verify(pass, hash).unwrap());
    }

    #[test]
    fn bad_configs_name_the_key() {
        let l = Limits::default();
        let e = BasicAuth::validate(&cfg(serde_json::json!({"username": "a:b"})), &l).unwrap_err();
        assert!(e.contains("username"), "{e}");
        let e = BasicAuth::validate(&cfg(serde_json::json!({"length": 100})), &l).unwrap_err();
        assert!(e.contains("length") && e.contains("72"), "{e}");
        let e = BasicAuth::validate(&cfg(serde_json::json!({"password": "x", "length": 10})), &l)
            .unwrap_err();
        assert!(e.contains("password"), "{e}");
        let e = BasicAuth::validate(&cfg(serde_json::json!({"bcrypt_cost": 31})), &l).unwrap_err();
        assert!(e.contains("bcrypt_cost"), "{e}");
    }
}
