//! `time_static`: a fixed point in time, captured once at generation.

use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Generator, Limits, rfc3339};
use crate::secret::Outputs;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeConfig {
    /// A fixed RFC 3339 instant; absent means "now".
    pub rfc3339: Option<String>,
}

pub struct TimeStatic;

fn parse(config: &TimeConfig) -> Result<OffsetDateTime, String> {
    match &config.rfc3339 {
        None => Ok(OffsetDateTime::now_utc()),
        Some(s) => OffsetDateTime::parse(s, &Rfc3339)
            .map_err(|e| format!("rfc3339 is not an RFC 3339 timestamp: {e}")),
    }
}

impl Generator for TimeStatic {
    const TYPE: &'static str = "time_static";
    type Config = TimeConfig;

    fn validate(config: &TimeConfig, _: &Limits) -> Result<(), String> {
        parse(config).map(|_| ())
    }

    fn generate(config: &TimeConfig, _: &Limits) -> Result<Outputs, String> {
        let t = parse(config)?.to_offset(time::UtcOffset::UTC);
        Ok(Outputs::new()
            .with("rfc3339", rfc3339(t))
            .with("unix", t.unix_timestamp())
            .with("year", t.year())
            .with("month", u8::from(t.month()))
            .with("day", t.day())
            .with("hour", t.hour())
            .with("minute", t.minute())
            .with("second", t.second()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn fixed_time_is_broken_into_fields() {
        let c = TimeConfig {
            rfc3339: Some("2024-02-29T23:59:58+01:00".into()),
        };
        let out = TimeStatic::generate(&c, &Limits::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.get_str("rfc3339"), Some("2024-02-29T22:59:58Z"));
        assert_eq!(out.get("hour"), Some(&serde_json::json!(22)));
        assert_eq!(out.get("unix"), Some(&serde_json::json!(1_709_247_598)));
    }

    #[test]
    fn bad_time_is_rejected() {
        let c = TimeConfig {
            rfc3339: Some("yesterday".into()),
        };
        assert!(
            TimeStatic::validate(&c, &Limits::default())
                .unwrap_err()
                .contains("rfc3339")
        );
    }
}
