//! Random values: passwords, strings, UUIDs, bytes, integers and ids.

use data_encoding::{BASE32, BASE64, BASE64URL_NOPAD, HEXLOWER};
use rand::RngExt;
use rand::seq::{IndexedRandom, SliceRandom};
use serde::Deserialize;

use super::{Generator, Limits, now_rfc3339};
use crate::secret::Outputs;

const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const NUMERIC: &str = "0123456789";
/// The Go ancestor's default specials.
pub const DEFAULT_SPECIAL: &str = "!@#$%&*()-_=+[]{}<>:?";

/// Config shared by `random_password` and `random_string` (and `basic_auth`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CharsetConfig {
    pub length: u64,
    pub lower: bool,
    pub upper: bool,
    pub numeric: bool,
    pub special: bool,
    pub override_special: Option<String>,
    pub min_lower: u64,
    pub min_upper: u64,
    pub min_numeric: u64,
    pub min_special: u64,
    /// Characters never used, whatever the classes say.
    pub exclude: String,
}

impl Default for CharsetConfig {
    fn default() -> Self {
        Self {
            length: 16,
            lower: true,
            upper: true,
            numeric: true,
            special: true,
            override_special: None,
            min_lower: 0,
            min_upper: 0,
            min_numeric: 0,
            min_special: 0,
            exclude: String::new(),
        }
    }
}

struct Class {
    name: &'static str,
    chars: Vec<char>,
    min: u64,
}

impl CharsetConfig {
    fn classes(&self) -> Vec<Class> {
        let special = self.override_special.as_deref().unwrap_or(DEFAULT_SPECIAL);
        let mut classes = Vec::with_capacity(4);
        let mut push = |name, enabled: bool, set: &str, min| {
            if enabled {
                classes.push(Class {
                    name,
                    chars: charset(set, &self.exclude),
                    min,
                });
            }
        };
        push("lower", self.lower, LOWER, self.min_lower);
        push("upper", self.upper, UPPER, self.min_upper);
        push("numeric", self.numeric, NUMERIC, self.min_numeric);
        push("special", self.special, special, self.min_special);
        classes
    }

    /// Checks length bounds, that some class is enabled and usable, and that
    /// the minimums fit.
    pub fn validate(&self, max_length: u64) -> Result<(), String> {
        if self.length == 0 || self.length > max_length {
            return Err(format!(
                "length must be between 1 and {max_length}, got {}",
                self.length
            ));
        }
        let classes = self.classes();
        if classes.is_empty() {
            return Err(
                "no character class enabled: set at least one of lower, upper, numeric, special"
                    .into(),
            );
        }
        for (flag, enabled, min) in [
            ("lower", self.lower, self.min_lower),
            ("upper", self.upper, self.min_upper),
            ("numeric", self.numeric, self.min_numeric),
            ("special", self.special, self.min_special),
        ] {
            if !enabled && min > 0 {
                return Err(format!("min_{flag} is {min} but {flag} is false"));
            }
        }
        for class in &classes {
            if class.chars.is_empty() {
                return Err(format!(
                    "character class {} is empty after exclude/override_special",
                    class.name
                ));
            }
        }
        let mins: u64 = classes.iter().map(|c| c.min).sum();
        if mins > self.length {
            return Err(format!(
                "the min_* counts add up to {mins}, more than length {}",
                self.length
            ));
        }
        Ok(())
    }

    /// The union of all enabled characters, in a stable order.
    /// [`draw`](Self::draw) and the charset (every usable character,
    /// sorted) at once, the classes built once.
    pub fn draw_with_charset(&self) -> (String, String) {
        let classes = self.classes();
        let union = union(&classes);
        (
            self.draw_from(&classes, &union),
            union.into_iter().collect(),
        )
    }

    /// Draws the string: each class's minimum first, the rest from the union,
    /// then a uniform shuffle. Every draw is uniform (no modulo bias).
    pub fn draw(&self) -> String {
        let classes = self.classes();
        self.draw_from(&classes, &union(&classes))
    }

    fn draw_from(&self, classes: &[Class], union: &[char]) -> String {
        let mut rng = rand::rng();
        let len = usize::try_from(self.length).unwrap_or(usize::MAX);
        let mut out: Vec<char> = Vec::with_capacity(len);
        for class in classes {
            for _ in 0..class.min {
                if let Some(c) = class.chars.choose(&mut rng) {
                    out.push(*c);
                }
            }
        }
        while out.len() < len {
            if let Some(c) = union.choose(&mut rng) {
                out.push(*c);
            } else {
                break;
            }
        }
        out.shuffle(&mut rng);
        let s: String = out.iter().collect();
        zeroize::Zeroize::zeroize(&mut out);
        s
    }
}

/// The characters of `set` that are not in `exclude`, sorted, once each.
fn charset(set: &str, exclude: &str) -> Vec<char> {
    if set.is_ascii() && exclude.is_ascii() {
        // A bit per ASCII character: sorted and deduplicated by construction.
        let mask = ascii_mask(set.bytes()) & !ascii_mask(exclude.bytes());
        return ascii_chars(mask);
    }
    let mut chars: Vec<char> = set.chars().filter(|c| !exclude.contains(*c)).collect();
    chars.sort_unstable();
    chars.dedup();
    chars
}

fn ascii_mask(bytes: impl Iterator<Item = u8>) -> u128 {
    bytes.fold(0, |mask, b| mask | 1u128 << (b & 0x7f))
}

fn ascii_chars(mut mask: u128) -> Vec<char> {
    let mut chars = Vec::with_capacity(mask.count_ones() as usize);
    while mask != 0 {
        chars.push(char::from(mask.trailing_zeros() as u8));
        mask &= mask - 1;
    }
    chars
}

/// Every character of the classes, sorted, once each.
fn union(classes: &[Class]) -> Vec<char> {
    if classes.iter().all(|c| c.chars.iter().all(char::is_ascii)) {
        let mask = classes.iter().fold(0, |mask, c| {
            mask | ascii_mask(c.chars.iter().map(|&ch| ch as u8))
        });
        return ascii_chars(mask);
    }
    let mut all: Vec<char> = classes
        .iter()
        .flat_map(|c| c.chars.iter().copied())
        .collect();
    all.sort_unstable();
    all.dedup();
    all
}

pub struct RandomPassword;

/// Longest password we generate; the ancestor allowed a million characters.
pub const MAX_PASSWORD_LENGTH: u64 = 4096;
/// Longest random string.
pub const MAX_STRING_LENGTH: u64 = 10_000;

impl Generator for RandomPassword {
    const TYPE: &'static str = "random_password";
    type Config = CharsetConfig;

    fn validate(config: &CharsetConfig, _: &Limits) -> Result<(), String> {
        config.validate(MAX_PASSWORD_LENGTH)
    }

    fn generate(config: &CharsetConfig, _: &Limits) -> Result<Outputs, String> {
        let (value, charset) = config.draw_with_charset();
        Ok(Outputs::new()
            .with("value", value)
            .with("charset", charset)
            .with("length", config.length)
            .with("generatedAt", now_rfc3339()))
    }
}

pub struct RandomString;

impl Generator for RandomString {
    const TYPE: &'static str = "random_string";
    type Config = CharsetConfig;

    fn validate(config: &CharsetConfig, _: &Limits) -> Result<(), String> {
        config.validate(MAX_STRING_LENGTH)
    }

    fn generate(config: &CharsetConfig, _: &Limits) -> Result<Outputs, String> {
        let (value, charset) = config.draw_with_charset();
        Ok(Outputs::new().with("value", value).with("charset", charset))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoConfig {}

pub struct RandomUuid;

impl Generator for RandomUuid {
    const TYPE: &'static str = "random_uuid";
    type Config = NoConfig;

    fn validate(_: &NoConfig, _: &Limits) -> Result<(), String> {
        Ok(())
    }

    fn generate(_: &NoConfig, _: &Limits) -> Result<Outputs, String> {
        let mut bytes = [0u8; 16];
        rand::rng().fill(&mut bytes);
        let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
        Ok(Outputs::new()
            .with("value", id.hyphenated().to_string())
            .with("version", 4)
            .with("variant", "RFC4122")
            .with("generatedAt", now_rfc3339()))
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Base64,
    Base64url,
    Base32,
    Hex,
}

impl Encoding {
    pub fn encode(self, bytes: &[u8]) -> String {
        match self {
            Encoding::Base64 => BASE64.encode(bytes),
            Encoding::Base64url => BASE64URL_NOPAD.encode(bytes),
            Encoding::Base32 => BASE32.encode(bytes),
            Encoding::Hex => HEXLOWER.encode(bytes),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BytesConfig {
    pub length: u64,
    pub encoding: Encoding,
}

impl Default for BytesConfig {
    fn default() -> Self {
        Self {
            length: 16,
            encoding: Encoding::Base64,
        }
    }
}

pub struct RandomBytes;

impl Generator for RandomBytes {
    const TYPE: &'static str = "random_bytes";
    type Config = BytesConfig;

    fn validate(config: &BytesConfig, _: &Limits) -> Result<(), String> {
        if !(1..=1024).contains(&config.length) {
            return Err(format!(
                "length must be between 1 and 1024, got {}",
                config.length
            ));
        }
        Ok(())
    }

    fn generate(config: &BytesConfig, _: &Limits) -> Result<Outputs, String> {
        let mut bytes = zeroize::Zeroizing::new(vec![0u8; config.length as usize]);
        rand::rng().fill(&mut bytes[..]);
        Ok(Outputs::new().with("value", config.encoding.encode(&bytes)))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntegerConfig {
    pub min: i64,
    pub max: i64,
}

impl Default for IntegerConfig {
    fn default() -> Self {
        Self { min: 0, max: 100 }
    }
}

pub struct RandomInteger;

impl Generator for RandomInteger {
    const TYPE: &'static str = "random_integer";
    type Config = IntegerConfig;

    fn validate(config: &IntegerConfig, _: &Limits) -> Result<(), String> {
        if config.min > config.max {
            return Err(format!(
                "min ({}) is greater than max ({})",
                config.min, config.max
            ));
        }
        Ok(())
    }

    fn generate(config: &IntegerConfig, _: &Limits) -> Result<Outputs, String> {
        // Inclusive range; rand handles i64::MIN..=i64::MAX without overflow.
        let value: i64 = rand::rng().random_range(config.min..=config.max);
        Ok(Outputs::new()
            .with("value", value.to_string())
            .with("min", config.min)
            .with("max", config.max)
            .with("generatedAt", now_rfc3339()))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdConfig {
    pub byte_length: u64,
    pub prefix: String,
}

impl Default for IdConfig {
    fn default() -> Self {
        Self {
            byte_length: 8,
            prefix: String::new(),
        }
    }
}

pub struct RandomId;

impl Generator for RandomId {
    const TYPE: &'static str = "random_id";
    type Config = IdConfig;

    fn validate(config: &IdConfig, _: &Limits) -> Result<(), String> {
        if !(1..=1024).contains(&config.byte_length) {
            return Err(format!(
                "byte_length must be between 1 and 1024, got {}",
                config.byte_length
            ));
        }
        if config.prefix.len() > 256 {
            return Err("prefix is longer than 256 bytes".into());
        }
        Ok(())
    }

    fn generate(config: &IdConfig, _: &Limits) -> Result<Outputs, String> {
        let mut bytes = vec![0u8; config.byte_length as usize];
        rand::rng().fill(&mut bytes[..]);
        Ok(Outputs::new()
            .with(
                "value",
                format!("{}{}", config.prefix, HEXLOWER.encode(&bytes)),
            )
            .with("prefix", config.prefix.clone())
            .with("generatedAt", now_rfc3339()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// The plain definition the bitmap fast path must agree with.
    fn naive_charset(set: &str, exclude: &str) -> Vec<char> {
        let mut chars: Vec<char> = set.chars().filter(|c| !exclude.contains(*c)).collect();
        chars.sort_unstable();
        chars.dedup();
        chars
    }

    #[test]
    fn charsets_are_sorted_deduplicated_and_exclude_what_they_should() {
        for (set, exclude) in [
            (LOWER, ""),
            (DEFAULT_SPECIAL, "@#"),
            ("zzaa~~\u{7f}\u{0}", "a"),
            ("abcé", "é"),
            ("abc", "ß"),
            ("ßé!a", ""),
            ("", "abc"),
        ] {
            assert_eq!(
                charset(set, exclude),
                naive_charset(set, exclude),
                "{set:?} - {exclude:?}"
            );
        }
        let classes = |sets: &[&str]| -> Vec<Class> {
            sets.iter()
                .map(|s| Class {
                    name: "x",
                    chars: charset(s, ""),
                    min: 0,
                })
                .collect()
        };
        for sets in [&["abc", "cba!", "09"][..], &["é", "ea"][..], &[][..]] {
            let joined: String = sets.concat();
            assert_eq!(
                union(&classes(sets)),
                naive_charset(&joined, ""),
                "{sets:?}"
            );
        }
    }

    fn cfg(yaml: serde_json::Value) -> CharsetConfig {
        super::super::parse_config(&yaml).unwrap_or_else(|e| panic!("config: {e}"))
    }

    #[test]
    fn password_respects_length_charset_and_minimums() {
        let c = cfg(serde_json::json!({
            "length": 20, "min_upper": 3, "min_numeric": 4, "min_special": 2,
            "exclude": "/'\"@"
        }));
        c.validate(MAX_PASSWORD_LENGTH)
            .unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..200 {
            let (p, charset) = c.draw_with_charset();
            assert_eq!(p.chars().count(), 20);
            assert!(p.chars().all(|ch| charset.contains(ch)));
            assert!(!p.contains(['/', '\'', '"', '@']));
            assert!(p.chars().filter(char::is_ascii_uppercase).count() >= 3);
            assert!(p.chars().filter(char::is_ascii_digit).count() >= 4);
            assert!(p.chars().filter(|ch| DEFAULT_SPECIAL.contains(*ch)).count() >= 2);
        }
    }

    #[test]
    fn draws_are_uniform_over_the_charset() {
        // 10 symbols: a modulo-biased draw from a byte would skew toward the
        // first six symbols by ~2.4%; chi-square over 100k draws catches that.
        let c = cfg(
            serde_json::json!({"length": 100, "lower": false, "upper": false, "special": false}),
        );
        let mut counts: HashMap<char, u64> = HashMap::new();
        for _ in 0..1000 {
            for ch in c.draw().chars() {
                *counts.entry(ch).or_default() += 1;
            }
        }
        assert_eq!(counts.len(), 10);
        let expected = 100_000.0 / 10.0;
        let chi2: f64 = counts
            .values()
            .map(|&n| (n as f64 - expected).powi(2) / expected)
            .sum();
        // 9 degrees of freedom: p = 0.0001 at 33.7.
        assert!(chi2 < 33.7, "chi-square {chi2} suggests a biased draw");
    }

    #[test]
    fn impossible_configs_are_rejected_with_the_key_named() {
        let none = cfg(
            serde_json::json!({"lower": false, "upper": false, "numeric": false, "special": false}),
        );
        assert!(
            none.validate(100)
                .unwrap_err()
                .contains("no character class")
        );
        let too_many = cfg(serde_json::json!({"length": 4, "min_upper": 3, "min_lower": 3}));
        assert!(too_many.validate(100).unwrap_err().contains("min_"));
        let zero = cfg(serde_json::json!({"length": 0}));
        assert!(zero.validate(100).unwrap_err().contains("length"));
        let err = super::super::parse_config::<CharsetConfig>(&serde_json::json!({"length": -3}))
            .unwrap_err();
        assert!(err.contains("-3"), "{err}");
        let err = super::super::parse_config::<CharsetConfig>(&serde_json::json!({"lenght": 3}))
            .unwrap_err();
        assert!(err.contains("lenght"), "{err}");
    }

    #[test]
    fn integers_cover_extreme_ranges() {
        let c = IntegerConfig {
            min: i64::MIN,
            max: i64::MAX,
        };
        RandomInteger::generate(&c, &Limits::default()).unwrap_or_else(|e| panic!("{e}"));
        let c = IntegerConfig { min: 7, max: 7 };
        let out = RandomInteger::generate(&c, &Limits::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.get_str("value"), Some("7"));
    }

    #[test]
    fn bytes_encodings_have_the_right_length() {
        for (enc, len) in [
            (Encoding::Base64, 24),
            (Encoding::Base64url, 22),
            (Encoding::Base32, 32),
            (Encoding::Hex, 32),
        ] {
            let out = RandomBytes::generate(
                &BytesConfig {
                    length: 16,
                    encoding: enc,
                },
                &Limits::default(),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(out.get_str("value").map(str::len), Some(len), "{enc:?}");
        }
    }

    #[test]
    fn uuid_is_v4() {
        let out = RandomUuid::generate(&NoConfig {}, &Limits::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let id = uuid::Uuid::parse_str(out.get_str("value").unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(id.get_version_num(), 4);
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
    }
}
