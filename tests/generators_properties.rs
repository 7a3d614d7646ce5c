//! Property and distribution tests for the random generators
//! (`random_password`, `random_string`, `random_integer`, `random_bytes`,
//! `random_id`, `random_uuid`, and the symmetric keys and HMAC): every value
//! stays in its charset / range / encoding, class minimums and `exclude`
//! hold, bounds are enforced with the config key named, and the draws are
//! uniform (no modulo bias) by Pearson's chi-square test.
//!
//! Flakiness: a statistical check fails only when its p-value is below
//! `P_FAIL` = 1e-6, computed from the chi-square distribution with k - 1
//! degrees of freedom for k buckets (`chi_square_p`); with about twenty such
//! checks, a correct generator fails this file by chance about once in
//! 50,000 runs. The sample sizes are chosen so that the classic defect, a
//! random byte reduced modulo the charset size, gives p-values below 1e-30
//! (`chi_square_helper_is_calibrated_and_sample_sizes_detect_modulo_bias`
//! checks both the helper and that claim).
//!
//! Generated values are never printed: assertions on generated material use
//! `assert!(..)` with messages that carry only sizes, counts and statistics;
//! `assert_eq!` only ever sees config echoes and public metadata.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashSet};

use aws_lc_rs::hmac;
use data_encoding::{BASE32, BASE64, BASE64URL_NOPAD, HEXLOWER};
use secret_santa::generators::{self, Entry, Limits};
use secret_santa::secret::Outputs;
use serde_json::{Value, json};

/// A statistical check fails when the p-value of its statistic is below this.
const P_FAIL: f64 = 1e-6;

const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const NUMERIC: &str = "0123456789";
/// The default specials (the Go ancestor's), as issue 3 specifies them.
const DEFAULT_SPECIAL: &str = "!@#$%&*()-_=+[]{}<>:?";

/// The charset generators and their largest `length`.
const CHARSET_GENERATORS: [(&str, u64); 2] = [("random_password", 4096), ("random_string", 10_000)];

// --- helpers ------------------------------------------------------------------

fn entry(type_name: &str) -> &'static Entry {
    generators::lookup(type_name).unwrap_or_else(|| panic!("{type_name} is not registered"))
}

fn generate(type_name: &str, config: &Value) -> Outputs {
    entry(type_name)
        .generate(config, &Limits::default())
        .unwrap_or_else(|e| panic!("{type_name}: {e}"))
}

/// Both the admission-time check and generation refuse `config`, and both
/// errors contain every one of `needles` (the config keys at fault).
fn refuse_naming(type_name: &str, config: &Value, needles: &[&str]) {
    let limits = Limits::default();
    let e = entry(type_name);
    let errors = [
        ("check", e.check(config, &limits, true).err()),
        ("generate", e.generate(config, &limits).err()),
    ];
    for (stage, err) in errors {
        let err = err.unwrap_or_else(|| panic!("{type_name}: {stage} accepted {config}"));
        for needle in needles {
            assert!(
                err.contains(needle),
                "{type_name}: {stage} error for {config} does not name {needle}: {err}"
            );
        }
    }
}

fn field<'a>(out: &'a Outputs, name: &str) -> &'a str {
    out.get_str(name)
        .unwrap_or_else(|| panic!("output {name} is missing or not a string"))
}

/// Pearson's statistic of `counts` against the uniform distribution over its
/// buckets, and its p-value with `counts.len() - 1` degrees of freedom (the
/// bucket probabilities are given, none is estimated from the data).
fn chi_square_uniform(counts: &[u64]) -> (f64, f64) {
    assert!(counts.len() >= 2, "a chi-square test needs two buckets");
    let n: u64 = counts.iter().sum();
    assert!(n > 0, "no samples");
    let expected = n as f64 / counts.len() as f64;
    let stat: f64 = counts
        .iter()
        .map(|&c| {
            let d = c as f64 - expected;
            d * d / expected
        })
        .sum();
    (stat, chi_square_p(stat, counts.len() - 1))
}

/// P(X >= stat) for X ~ chi-square(df): the regularized upper incomplete
/// gamma function Q(df/2, stat/2), by its series below a + 1 and Lentz's
/// continued fraction above (Numerical Recipes, 6.2).
fn chi_square_p(stat: f64, df: usize) -> f64 {
    let a = df as f64 / 2.0;
    let x = stat / 2.0;
    if x <= 0.0 {
        return 1.0;
    }
    let ln_prefix = -x + a * x.ln() - ln_gamma_half(df);
    if x < a + 1.0 {
        // P(a, x) by its series; Q = 1 - P is not small here.
        let mut term = 1.0 / a;
        let mut sum = term;
        let mut ap = a;
        for _ in 0..100_000 {
            ap += 1.0;
            term *= x / ap;
            sum += term;
            if term.abs() < sum.abs() * 1e-15 {
                break;
            }
        }
        (1.0 - sum * ln_prefix.exp()).max(0.0)
    } else {
        const TINY: f64 = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / TINY;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..100_000u32 {
            let i = f64::from(i);
            let an = -i * (i - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < TINY {
                d = TINY;
            }
            c = b + an / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            let delta = d * c;
            h *= delta;
            if (delta - 1.0).abs() < 1e-15 {
                break;
            }
        }
        ln_prefix.exp() * h
    }
}

/// ln Γ(df / 2), exactly: Γ(1) = 1, Γ(1/2) = √π, Γ(a + 1) = a Γ(a).
fn ln_gamma_half(df: usize) -> f64 {
    let (mut a, mut ln): (f64, f64) = if df.is_multiple_of(2) {
        (1.0, 0.0)
    } else {
        (0.5, 0.5 * std::f64::consts::PI.ln())
    };
    let target = df as f64 / 2.0;
    while a < target {
        ln += a.ln();
        a += 1.0;
    }
    ln
}

/// Fails when `counts` are not plausibly uniform (p < `P_FAIL`).
fn assert_uniform(what: &str, counts: &[u64]) {
    let n: u64 = counts.iter().sum();
    let (stat, p) = chi_square_uniform(counts);
    assert!(
        p >= P_FAIL,
        "{what}: chi-square {stat:.1} with {} degrees of freedom over {n} samples, \
         p = {p:.2e} < {P_FAIL:e}: the draw is not uniform",
        counts.len() - 1
    );
}

fn set(parts: &[&str], exclude: &str) -> BTreeSet<char> {
    parts
        .iter()
        .flat_map(|p| p.chars())
        .filter(|c| !exclude.contains(*c))
        .collect()
}

/// How often each character of `alphabet` (ASCII) occurs in `draws` values
/// of `config`; every character drawn must be in `alphabet`.
fn char_counts(type_name: &str, config: &Value, alphabet: &str, draws: u64) -> Vec<u64> {
    let mut by_code = [0u64; 128];
    let mut non_ascii = 0u64;
    for _ in 0..draws {
        let out = generate(type_name, config);
        for c in field(&out, "value").chars() {
            match by_code.get_mut(c as usize) {
                Some(n) => *n += 1,
                None => non_ascii += 1,
            }
        }
    }
    let counts: Vec<u64> = alphabet.chars().map(|c| by_code[c as usize]).collect();
    let inside: u64 = counts.iter().sum();
    let total = by_code.iter().sum::<u64>() + non_ascii;
    assert!(
        inside == total,
        "{type_name}: {} of {total} characters outside the alphabet",
        total - inside
    );
    counts
}

/// Characters of each class: lower, upper, numeric, special (from `special`).
fn class_counts(value: &str, special: &str) -> [usize; 4] {
    let mut counts = [0; 4];
    for c in value.chars() {
        let class = if c.is_ascii_lowercase() {
            0
        } else if c.is_ascii_uppercase() {
            1
        } else if c.is_ascii_digit() {
            2
        } else if special.contains(c) {
            3
        } else {
            panic!("a character outside every class");
        };
        counts[class] += 1;
    }
    counts
}

// --- the chi-square helper ------------------------------------------------------

#[test]
fn chi_square_helper_is_calibrated_and_sample_sizes_detect_modulo_bias() {
    // Closed forms: 2 df is exp(-x/2); 10 df is exp(-x/2) Σ_{k<5} (x/2)^k / k!.
    for x in [0.5, 5.0, 27.631, 60.0] {
        let p = chi_square_p(x, 2);
        let exact = (-x / 2.0f64).exp();
        assert!(
            (p / exact - 1.0).abs() < 1e-9,
            "2 df at {x}: {p:e} vs {exact:e}"
        );
        let h = x / 2.0;
        let exact10 = (-h).exp() * (1.0 + h + h * h / 2.0 + h.powi(3) / 6.0 + h.powi(4) / 24.0);
        let p10 = chi_square_p(x, 10);
        assert!(
            (p10 / exact10 - 1.0).abs() < 1e-9,
            "10 df at {x}: {p10:e} vs {exact10:e}"
        );
    }
    // The p = 1e-6 critical values of the degrees of freedom used below.
    for (df, critical) in [
        (1, 23.92813),
        (2, 27.63102),
        (9, 44.81094),
        (11, 48.86564),
        (15, 56.49344),
        (99, 180.79202),
        (255, 377.07812),
    ] {
        let p = chi_square_p(critical, df);
        assert!(
            (p / 1e-6 - 1.0).abs() < 1e-3,
            "{df} df at {critical}: p = {p:e}"
        );
    }
    // An even split passes.
    let (stat, p) = chi_square_uniform(&[1000; 16]);
    assert!(stat == 0.0 && p == 1.0);
    // Power: the exact expected counts of a byte reduced modulo k, at the
    // sample sizes of the tests below, are far beyond the threshold (the
    // statistic of an actual biased sample is about this plus df).
    for (k, n) in [(10usize, 1_000_000u64), (3, 5_000_000), (100, 50_000)] {
        let counts: Vec<u64> = (0..k)
            .map(|i| n * (256 / k + usize::from(i < 256 % k)) as u64 / 256)
            .collect();
        let (stat, p) = chi_square_uniform(&counts);
        assert!(
            p < 1e-30,
            "byte modulo {k} over {n}: chi-square {stat:.1}, p = {p:e}"
        );
    }
}

// --- random_password and random_string --------------------------------------------

fn charset_cases() -> Vec<(&'static str, Value, BTreeSet<char>)> {
    vec![
        (
            "defaults",
            json!({ "length": 64 }),
            set(&[LOWER, UPPER, NUMERIC, DEFAULT_SPECIAL], ""),
        ),
        (
            "numeric only",
            json!({ "length": 64, "lower": false, "upper": false, "special": false }),
            set(&[NUMERIC], ""),
        ),
        (
            "override_special only",
            json!({ "length": 64, "lower": false, "upper": false, "numeric": false, "override_special": "#$%" }),
            set(&["#$%"], ""),
        ),
        (
            "letters and override_special",
            json!({ "length": 64, "numeric": false, "override_special": "._~" }),
            set(&[LOWER, UPPER, "._~"], ""),
        ),
        (
            "exclude",
            json!({ "length": 64, "exclude": "/'\"@lI1O0" }),
            set(&[LOWER, UPPER, NUMERIC, DEFAULT_SPECIAL], "/'\"@lI1O0"),
        ),
    ]
}

#[test]
fn charset_values_stay_in_the_configured_charset_and_reach_all_of_it() {
    for (type_name, _) in CHARSET_GENERATORS {
        for (case, config, expected) in charset_cases() {
            let mut seen = BTreeSet::new();
            // 300 × 64 characters: P(some character of at most 83 never drawn) < 1e-90.
            for _ in 0..300 {
                let out = generate(type_name, &config);
                let charset_text = field(&out, "charset");
                let charset: BTreeSet<char> = charset_text.chars().collect();
                assert!(
                    charset == expected && charset_text.chars().count() == charset.len(),
                    "{type_name} {case}: charset output has {} characters, expected {}",
                    charset_text.chars().count(),
                    expected.len()
                );
                let value = field(&out, "value");
                assert_eq!(value.chars().count(), 64, "{type_name} {case}: length");
                assert!(
                    value.chars().all(|c| expected.contains(&c)),
                    "{type_name} {case}: a character outside the charset"
                );
                seen.extend(value.chars());
            }
            assert!(
                seen == expected,
                "{type_name} {case}: only {} of {} charset characters were ever drawn",
                seen.len(),
                expected.len()
            );
        }
    }
}

/// About 1,000,000 characters over the 10 digits (100,000 expected each).
/// A byte reduced modulo 10 favours 0-5 by 26:25, a chi-square near 375
/// against the p = 1e-6 critical value 44.8 (9 df).
#[test]
fn numeric_only_draws_are_uniform() {
    for (type_name, max) in CHARSET_GENERATORS {
        let config = json!({ "length": max, "lower": false, "upper": false, "special": false });
        let counts = char_counts(type_name, &config, NUMERIC, 1_000_000 / max + 1);
        assert_uniform(&format!("{type_name} numeric only"), &counts);
    }
}

/// About 5,000,000 characters over a 3-character override_special set. A
/// byte reduced modulo 3 favours one symbol by 86:85:85, a chi-square near
/// 155 against the p = 1e-6 critical value 27.6 (2 df).
#[test]
fn three_character_special_draws_are_uniform() {
    for (type_name, max) in CHARSET_GENERATORS {
        let config = json!({
            "length": max, "lower": false, "upper": false, "numeric": false,
            "override_special": "#$%",
        });
        let counts = char_counts(type_name, &config, "#$%", 5_000_000 / max + 1);
        assert_uniform(&format!("{type_name} override_special #$%"), &counts);
    }
}

/// The default charset, 83 symbols (the one `autogenerate` uses): 256 is
/// 3 * 83 + 7, so a byte reduced modulo 83 would draw the first seven
/// symbols a third more often than the rest.
#[test]
fn default_charset_draws_are_uniform() {
    let alphabet = [LOWER, UPPER, NUMERIC, DEFAULT_SPECIAL].concat();
    for (type_name, max) in CHARSET_GENERATORS {
        let config = json!({ "length": max });
        let counts = char_counts(type_name, &config, &alphabet, 2_000_000 / max + 1);
        assert_uniform(&format!("{type_name} default charset"), &counts);
    }
}

/// A charset of more than 256 characters (here 300 non-ASCII specials)
/// cannot be drawn a byte at a time: it still stays inside, reaches every
/// character, and is uniform.
#[test]
fn charsets_larger_than_a_byte_are_uniform() {
    let special: String = ('\u{100}'..'\u{22c}').collect();
    assert_eq!(special.chars().count(), 300);
    for (type_name, max) in CHARSET_GENERATORS {
        let config = json!({
            "length": max, "lower": false, "upper": false, "numeric": false,
            "override_special": special,
        });
        let mut counts = vec![0u64; 300];
        let mut outside = 0u64;
        for _ in 0..600_000 / max + 1 {
            let out = generate(type_name, &config);
            for c in field(&out, "value").chars() {
                match (c as usize)
                    .checked_sub(0x100)
                    .and_then(|i| counts.get_mut(i))
                {
                    Some(n) => *n += 1,
                    None => outside += 1,
                }
            }
        }
        assert!(
            outside == 0,
            "{type_name}: {outside} characters outside the charset"
        );
        assert!(
            counts.iter().all(|&n| n > 0),
            "{type_name}: a character never drawn"
        );
        assert_uniform(&format!("{type_name} 300 specials"), &counts);
    }
}

#[test]
fn class_minimums_hold_for_every_class() {
    for (type_name, _) in CHARSET_GENERATORS {
        // Minimums that fill the whole length: exactly that many of each class.
        let exact = json!({
            "length": 12, "min_lower": 3, "min_upper": 3, "min_numeric": 3, "min_special": 3,
        });
        for _ in 0..500 {
            let out = generate(type_name, &exact);
            assert!(
                class_counts(field(&out, "value"), DEFAULT_SPECIAL) == [3; 4],
                "{type_name}: minimums 3/3/3/3 at length 12 are not met exactly"
            );
        }
        // One class at a time, with a minimum the union reaches on its own
        // in under 6% of draws (lower or upper: 26 of 83 characters,
        // P(>= 6 of 10) ≈ 0.058): 500 draws that all meet it are no luck.
        for (i, class) in ["lower", "upper", "numeric", "special"]
            .into_iter()
            .enumerate()
        {
            let mut config = serde_json::Map::new();
            config.insert("length".into(), json!(10));
            config.insert(format!("min_{class}"), json!(6));
            let config = Value::Object(config);
            for _ in 0..500 {
                let out = generate(type_name, &config);
                let counts = class_counts(field(&out, "value"), DEFAULT_SPECIAL);
                assert!(
                    counts[i] >= 6 && counts.iter().sum::<usize>() == 10,
                    "{type_name}: min_{class} 6 of 10 not met ({} {class} characters)",
                    counts[i]
                );
            }
        }
        // A small override_special set with its minimum.
        let config = json!({ "length": 8, "override_special": "#", "min_special": 3 });
        for _ in 0..500 {
            let out = generate(type_name, &config);
            let hashes = field(&out, "value").chars().filter(|&c| c == '#').count();
            assert!(hashes >= 3, "{type_name}: min_special 3 not met ({hashes})");
        }
        refuse_naming(
            type_name,
            &json!({ "lower": false, "min_lower": 1 }),
            &["min_lower"],
        );
        refuse_naming(
            type_name,
            &json!({ "length": 4, "min_lower": 3, "min_upper": 2 }),
            &["min_", "length"],
        );
        refuse_naming(
            type_name,
            &json!({ "lower": false, "upper": false, "numeric": false, "special": false }),
            &["class"],
        );
    }
}

/// The required characters are drawn first and then shuffled, so over many
/// draws every position holds a digit equally often (digits: 3 required + the
/// union's, about 55,000 in all). Without the shuffle, positions 0-2 would
/// always hold digits (chi-square in the tens of thousands). The digits of
/// one draw occupy distinct positions, which makes the counts less dispersed
/// than multinomial: the test (11 df, p = 1e-6) is conservative.
#[test]
fn required_characters_land_at_uniform_positions() {
    let config = json!({ "length": 12, "upper": false, "special": false, "min_numeric": 3 });
    for (type_name, _) in CHARSET_GENERATORS {
        let mut by_position = [0u64; 12];
        for _ in 0..10_000 {
            let out = generate(type_name, &config);
            let value = field(&out, "value");
            assert!(value.chars().count() == 12, "{type_name}: length");
            for (position, c) in value.chars().enumerate() {
                if c.is_ascii_digit() {
                    by_position[position] += 1;
                }
            }
        }
        assert_uniform(&format!("{type_name} digit positions"), &by_position);
    }
}

#[test]
fn exclude_is_honoured() {
    let rds = "/'\"@";
    for (type_name, _) in CHARSET_GENERATORS {
        let config = json!({ "length": 64, "exclude": rds });
        for _ in 0..500 {
            let out = generate(type_name, &config);
            assert!(
                !field(&out, "value").contains(|c: char| rds.contains(c)),
                "{type_name}: an excluded character was drawn"
            );
            assert!(
                !field(&out, "charset").contains(|c: char| rds.contains(c)),
                "{type_name}: the charset output lists an excluded character"
            );
        }
        // One digit left.
        let config = json!({
            "length": 32, "lower": false, "upper": false, "special": false, "exclude": "012345678",
        });
        for _ in 0..50 {
            let out = generate(type_name, &config);
            let value = field(&out, "value");
            assert!(
                value.chars().count() == 32 && value.chars().all(|c| c == '9'),
                "{type_name}: exclude left only 9 but something else was drawn"
            );
        }
        // Exclude together with a minimum that fills the length.
        let config = json!({ "length": 20, "exclude": "aeiou", "min_lower": 20 });
        for _ in 0..200 {
            let out = generate(type_name, &config);
            let value = field(&out, "value");
            assert!(
                value.chars().count() == 20
                    && value
                        .chars()
                        .all(|c| c.is_ascii_lowercase() && !"aeiou".contains(c)),
                "{type_name}: min_lower 20 with vowels excluded not honoured"
            );
        }
        // Excluding a whole class is refused, naming the class.
        refuse_naming(type_name, &json!({ "exclude": LOWER }), &["lower"]);
        refuse_naming(
            type_name,
            &json!({ "lower": false, "upper": false, "numeric": false, "override_special": "#", "exclude": "#" }),
            &["special"],
        );
    }
}

#[test]
fn length_bounds_are_enforced_with_the_key_named() {
    for (type_name, max) in CHARSET_GENERATORS {
        for length in [1, 2, max - 1, max] {
            let out = generate(type_name, &json!({ "length": length }));
            assert_eq!(
                field(&out, "value").chars().count() as u64,
                length,
                "{type_name}: length {length}"
            );
            if type_name == "random_password" {
                assert_eq!(out.get("length"), Some(&json!(length)));
            }
        }
        for length in [0, max + 1, 1_000_000] {
            refuse_naming(type_name, &json!({ "length": length }), &["length"]);
        }
        refuse_naming(type_name, &json!({ "length": -1 }), &["length"]);
    }
    // The defaults: 16 characters.
    for (type_name, _) in CHARSET_GENERATORS {
        let out = generate(type_name, &json!({}));
        assert_eq!(
            field(&out, "value").chars().count(),
            16,
            "{type_name} default"
        );
    }
}

// --- random_integer ---------------------------------------------------------------

fn int_value(out: &Outputs) -> i64 {
    field(out, "value")
        .parse()
        .unwrap_or_else(|_| panic!("random_integer value is not an i64"))
}

#[test]
fn integers_stay_in_range_and_reach_both_ends() {
    // P(an end of a 7-value range missed in 2,000 draws) = (6/7)^2000 < 1e-130.
    for (min, max, draws) in [
        (-3i64, 3i64, 2_000u32),
        (0, 1, 500),
        (i64::MAX - 2, i64::MAX, 1_000),
        (i64::MIN, i64::MIN + 2, 1_000),
        (-1, 1, 1_000),
    ] {
        let config = json!({ "min": min, "max": max });
        let mut seen = BTreeSet::new();
        for _ in 0..draws {
            let out = generate("random_integer", &config);
            let v = int_value(&out);
            assert!(
                (min..=max).contains(&v),
                "random_integer: a value outside [{min}, {max}]"
            );
            seen.insert(v);
            assert_eq!(out.get("min"), Some(&json!(min)));
            assert_eq!(out.get("max"), Some(&json!(max)));
        }
        let span = usize::try_from(i128::from(max) - i128::from(min) + 1).unwrap();
        assert!(
            seen.contains(&min) && seen.contains(&max) && seen.len() == span,
            "random_integer [{min}, {max}]: {} of {span} values drawn (ends: {} {})",
            seen.len(),
            seen.contains(&min),
            seen.contains(&max)
        );
    }
}

#[test]
fn integers_handle_extreme_ranges_without_overflow() {
    for v in [i64::MIN, i64::MIN + 1, -1, 0, 7, i64::MAX - 1, i64::MAX] {
        let out = generate("random_integer", &json!({ "min": v, "max": v }));
        assert!(
            int_value(&out) == v,
            "random_integer min == max == {v}: another value came out"
        );
    }
    // The full i64 range: the top 4 bits (sign flipped, so buckets follow
    // the order of the values) of 16,000 draws are uniform over 16 buckets
    // (1,000 expected each; 15 df, p = 1e-6 at 56.5). A range computed with
    // overflow (span 0, or only one half of the range) fails this.
    let full = json!({ "min": i64::MIN, "max": i64::MAX });
    let mut counts = [0u64; 16];
    for _ in 0..16_000 {
        let v = int_value(&generate("random_integer", &full));
        counts[(((v as u64) ^ (1u64 << 63)) >> 60) as usize] += 1;
    }
    assert_uniform("random_integer i64::MIN..=i64::MAX, top 4 bits", &counts);
    // Ranges wider than i64::MAX.
    for (min, max) in [(i64::MIN, 0), (-1, i64::MAX), (i64::MIN + 1, i64::MAX)] {
        let config = json!({ "min": min, "max": max });
        let mut below_middle = 0u32;
        let middle = (i128::from(min) + i128::from(max)) / 2;
        for _ in 0..2_000 {
            let v = int_value(&generate("random_integer", &config));
            assert!(
                (min..=max).contains(&v),
                "random_integer: a value outside [{min}, {max}]"
            );
            below_middle += u32::from(i128::from(v) <= middle);
        }
        // Both halves are reached (P(one missed) = 2^-1999).
        assert!(
            (1..2_000).contains(&below_middle),
            "random_integer [{min}, {max}]: {below_middle} of 2000 draws in the lower half"
        );
    }
}

/// 50,000 draws over the 100 values -50..=49 (500 expected each; 99 df,
/// p = 1e-6 at 180.8). A byte reduced modulo 100 makes 56 values 1.5 times
/// as likely (chi-square in the thousands); an exclusive `max` leaves 49
/// empty (chi-square about 600).
#[test]
fn integers_are_uniform_over_a_small_range() {
    let config = json!({ "min": -50, "max": 49 });
    let mut counts = vec![0u64; 100];
    for _ in 0..50_000 {
        let v = int_value(&generate("random_integer", &config));
        assert!(
            (-50..=49).contains(&v),
            "random_integer: a value outside [-50, 49]"
        );
        counts[usize::try_from(v + 50).unwrap()] += 1;
    }
    assert_uniform("random_integer -50..=49", &counts);
}

#[test]
fn integer_min_above_max_is_refused() {
    refuse_naming(
        "random_integer",
        &json!({ "min": 5, "max": 4 }),
        &["min", "max"],
    );
    refuse_naming(
        "random_integer",
        &json!({ "min": i64::MAX, "max": i64::MIN }),
        &["min", "max"],
    );
    // Above the default max of 100.
    refuse_naming("random_integer", &json!({ "min": 101 }), &["min", "max"]);
    let out = generate("random_integer", &json!({}));
    let v = int_value(&out);
    assert!(
        (0..=100).contains(&v),
        "random_integer default range is 0..=100"
    );
}

// --- random_bytes -----------------------------------------------------------------

const ENCODINGS: [&str; 4] = ["base64", "base64url", "base32", "hex"];

/// Strict decoding: padded base64 and base32, unpadded base64url, lowercase hex.
fn decode(encoding: &str, text: &str) -> Vec<u8> {
    let decoded = match encoding {
        "base64" => BASE64.decode(text.as_bytes()),
        "base64url" => BASE64URL_NOPAD.decode(text.as_bytes()),
        "base32" => BASE32.decode(text.as_bytes()),
        "hex" => HEXLOWER.decode(text.as_bytes()),
        other => panic!("unknown encoding {other}"),
    };
    decoded.unwrap_or_else(|_| panic!("random_bytes value is not valid {encoding}"))
}

#[test]
fn bytes_decode_to_the_requested_length_in_every_encoding() {
    for encoding in ENCODINGS {
        for length in [1u64, 2, 3, 4, 5, 6, 16, 31, 32, 33, 1000, 1023, 1024] {
            let out = generate(
                "random_bytes",
                &json!({ "length": length, "encoding": encoding }),
            );
            let text = field(&out, "value");
            let bytes = decode(encoding, text);
            assert!(
                bytes.len() as u64 == length,
                "random_bytes {encoding}: {} bytes decoded, {length} asked for",
                bytes.len()
            );
            if encoding == "base64url" {
                assert!(!text.contains('='), "random_bytes base64url is padded");
            }
        }
    }
    // The default: 16 bytes, padded base64.
    let out = generate("random_bytes", &json!({}));
    assert!(
        decode("base64", field(&out, "value")).len() == 16,
        "random_bytes default is 16 bytes of base64"
    );
}

/// 256,000 bytes per encoding (1,000 expected per value; 255 df, p = 1e-6 at
/// 377.1). A value never produced (e.g. a draw from 0..255) alone adds 1,000.
#[test]
fn bytes_are_uniform_in_every_encoding() {
    for encoding in ENCODINGS {
        let config = json!({ "length": 1024, "encoding": encoding });
        let mut counts = vec![0u64; 256];
        for _ in 0..250 {
            let out = generate("random_bytes", &config);
            for b in decode(encoding, field(&out, "value")) {
                counts[usize::from(b)] += 1;
            }
        }
        assert_uniform(&format!("random_bytes {encoding} byte values"), &counts);
    }
}

#[test]
fn bytes_length_bounds_are_enforced_with_the_key_named() {
    for length in [0, 1025, 1_000_000] {
        refuse_naming("random_bytes", &json!({ "length": length }), &["length"]);
    }
    refuse_naming("random_bytes", &json!({ "length": -1 }), &["length"]);
    refuse_naming(
        "random_bytes",
        &json!({ "encoding": "base58" }),
        &["encoding"],
    );
}

// --- random_id --------------------------------------------------------------------

#[test]
fn ids_are_the_prefix_and_lowercase_hex() {
    for prefix in ["", "id-", "tenant_ä-"] {
        for byte_length in [1u64, 8, 32, 1024] {
            let out = generate(
                "random_id",
                &json!({ "byte_length": byte_length, "prefix": prefix }),
            );
            assert_eq!(field(&out, "prefix"), prefix);
            let hex = field(&out, "value")
                .strip_prefix(prefix)
                .unwrap_or_else(|| panic!("random_id value does not start with its prefix"));
            assert!(
                hex.len() as u64 == 2 * byte_length,
                "random_id byte_length {byte_length}: {} hex digits",
                hex.len()
            );
            assert!(
                hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
                "random_id: not lowercase hex after the prefix"
            );
        }
    }
    // The default: 8 bytes, no prefix.
    let out = generate("random_id", &json!({}));
    let value = field(&out, "value");
    assert!(
        value.len() == 16 && value.bytes().all(|b| b.is_ascii_hexdigit()),
        "random_id default is 16 hex digits ({} characters)",
        value.len()
    );
    for byte_length in [0, 1025] {
        refuse_naming(
            "random_id",
            &json!({ "byte_length": byte_length }),
            &["byte_length"],
        );
    }
}

/// 204,800 hex digits, high and low nibbles counted apart (6,400 expected
/// per digit each; 15 df, p = 1e-6 at 56.5).
#[test]
fn id_hex_digits_are_uniform() {
    let mut high = [0u64; 16];
    let mut low = [0u64; 16];
    for _ in 0..100 {
        let out = generate("random_id", &json!({ "byte_length": 1024, "prefix": "x-" }));
        let hex = field(&out, "value")
            .strip_prefix("x-")
            .unwrap_or_else(|| panic!("random_id value does not start with its prefix"));
        for (i, c) in hex.chars().enumerate() {
            let digit = c
                .to_digit(16)
                .unwrap_or_else(|| panic!("random_id: not a hex digit"));
            let counts = if i.is_multiple_of(2) {
                &mut high
            } else {
                &mut low
            };
            counts[digit as usize] += 1;
        }
    }
    assert_uniform("random_id high nibbles", &high);
    assert_uniform("random_id low nibbles", &low);
}

// --- random_uuid ------------------------------------------------------------------

/// Every sample is a v4, RFC 4122 UUID, and none repeats in 10,000. Each of
/// the 122 random bits is set in 5,000 ± 300 samples (6 σ: two-sided
/// p = 2e-9 per bit, 2.4e-7 for all 122); a stuck bit fails.
#[test]
fn uuids_are_version_4_rfc_4122_unique_and_their_random_bits_fair() {
    const N: u32 = 10_000;
    let mut seen = HashSet::new();
    let mut ones = [0u32; 128];
    for _ in 0..N {
        let out = generate("random_uuid", &json!({}));
        assert_eq!(out.get("version"), Some(&json!(4)));
        assert_eq!(field(&out, "variant"), "RFC4122");
        let text = field(&out, "value");
        let bytes = text.as_bytes();
        assert!(
            bytes.len() == 36
                && [8usize, 13, 18, 23].iter().all(|&i| bytes[i] == b'-')
                && bytes
                    .iter()
                    .all(|&b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                && bytes[14] == b'4'
                && matches!(bytes[19], b'8' | b'9' | b'a' | b'b'),
            "random_uuid: not a lowercase hyphenated v4 UUID ({} characters)",
            bytes.len()
        );
        let id = uuid::Uuid::parse_str(text)
            .unwrap_or_else(|_| panic!("random_uuid value does not parse"));
        assert_eq!(id.get_version_num(), 4);
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        let bits = id.as_u128();
        for (i, n) in ones.iter_mut().enumerate() {
            *n += ((bits >> (127 - i)) & 1) as u32;
        }
        assert!(
            seen.insert(bits),
            "random_uuid: a duplicate after {} samples",
            seen.len()
        );
    }
    // Bits 48-51 are the version, 64-65 the variant.
    let fixed = |i: usize| (48..52).contains(&i) || (64..66).contains(&i);
    let half = f64::from(N) / 2.0;
    let sigma = f64::from(N).sqrt() / 2.0;
    for (i, &n) in ones.iter().enumerate() {
        if !fixed(i) {
            assert!(
                (f64::from(n) - half).abs() < 6.0 * sigma,
                "random_uuid: bit {i} set in {n} of {N} samples"
            );
        }
    }
}

// --- symmetric keys and HMAC ---------------------------------------------------------

/// The bytes of a base64 / hex field pair, which must agree.
fn key_bytes(out: &Outputs, base64_field: &str, hex_field: &str) -> Vec<u8> {
    let from_base64 = BASE64
        .decode(field(out, base64_field).as_bytes())
        .unwrap_or_else(|_| panic!("{base64_field} is not base64"));
    let from_hex = HEXLOWER
        .decode(field(out, hex_field).as_bytes())
        .unwrap_or_else(|_| panic!("{hex_field} is not lowercase hex"));
    assert!(
        from_base64 == from_hex,
        "{base64_field} and {hex_field} decode to different bytes ({} and {} bytes)",
        from_base64.len(),
        from_hex.len()
    );
    from_base64
}

#[test]
fn symmetric_keys_have_the_right_length_and_agreeing_encodings() {
    let cases = [
        ("crypto_aes_key", json!({ "key_size": 128 }), 16usize, None),
        ("crypto_aes_key", json!({ "key_size": 192 }), 24, None),
        ("crypto_aes_key", json!({ "key_size": 256 }), 32, None),
        ("crypto_aes_key", json!({}), 32, None),
        ("crypto_chacha20_key", json!({}), 32, Some("ChaCha20")),
        ("crypto_xchacha20_key", json!({}), 32, Some("XChaCha20")),
    ];
    for (type_name, config, bytes, algorithm) in cases {
        let a = generate(type_name, &config);
        let b = generate(type_name, &config);
        let key_a = key_bytes(&a, "key_base64", "key_hex");
        let key_b = key_bytes(&b, "key_base64", "key_hex");
        assert!(
            key_a.len() == bytes && key_b.len() == bytes,
            "{type_name} {config}: {} bytes, expected {bytes}",
            key_a.len()
        );
        assert_eq!(a.get("key_size"), Some(&json!(bytes * 8)), "{type_name}");
        assert_eq!(a.get_str("algorithm"), algorithm, "{type_name}");
        assert!(key_a != key_b, "{type_name}: two keys are equal");
    }
    for key_size in [0, 16, 64, 255, 512] {
        refuse_naming(
            "crypto_aes_key",
            &json!({ "key_size": key_size }),
            &["key_size"],
        );
    }
}

/// 256,000 key bytes per type (1,000 expected per value; 255 df, p = 1e-6
/// at 377.1).
#[test]
fn symmetric_key_bytes_are_uniform() {
    for (type_name, config, per_key) in [
        ("crypto_aes_key", json!({ "key_size": 256 }), 32u32),
        ("crypto_aes_key", json!({ "key_size": 128 }), 16),
        ("crypto_chacha20_key", json!({}), 32),
        ("crypto_xchacha20_key", json!({}), 32),
        ("crypto_hmac", json!({ "key_size": 1024 }), 1024),
    ] {
        let mut counts = vec![0u64; 256];
        for _ in 0..256_000 / per_key {
            let key = key_bytes(&generate(type_name, &config), "key_base64", "key_hex");
            assert!(key.len() == per_key as usize, "{type_name}: key length");
            for b in key {
                counts[usize::from(b)] += 1;
            }
        }
        assert_uniform(&format!("{type_name} {config} key bytes"), &counts);
    }
}

#[test]
fn hmac_keys_and_signatures_verify() {
    for (algorithm, name, alg, tag_len) in [
        ("sha256", "sha256", hmac::HMAC_SHA256, 32usize),
        ("SHA-256", "sha256", hmac::HMAC_SHA256, 32),
        ("sha512", "sha512", hmac::HMAC_SHA512, 64),
        ("HMAC-SHA512", "sha512", hmac::HMAC_SHA512, 64),
    ] {
        for key_size in [16u32, 32, 64, 1024] {
            for message in ["", "hello world", "grüße\nzweite Zeile: \"quoted\""] {
                let out = generate(
                    "crypto_hmac",
                    &json!({ "algorithm": algorithm, "key_size": key_size, "message": message }),
                );
                assert_eq!(field(&out, "algorithm"), name, "{algorithm}");
                let key = key_bytes(&out, "key_base64", "key_hex");
                assert!(
                    key.len() == key_size as usize,
                    "crypto_hmac {algorithm}: {} key bytes, {key_size} asked for",
                    key.len()
                );
                let tag = key_bytes(&out, "signature_base64", "signature_hex");
                assert!(
                    tag.len() == tag_len,
                    "crypto_hmac {algorithm}: {} signature bytes, expected {tag_len}",
                    tag.len()
                );
                let key = hmac::Key::new(alg, &key);
                assert!(
                    hmac::verify(&key, message.as_bytes(), &tag).is_ok(),
                    "crypto_hmac {algorithm}, {key_size}-byte key: the signature does not verify"
                );
                let mut other = message.as_bytes().to_vec();
                other.push(b'!');
                assert!(
                    hmac::verify(&key, &other, &tag).is_err(),
                    "crypto_hmac {algorithm}: the signature verifies for another message"
                );
            }
        }
    }
    // The defaults: sha256 and a 32-byte key.
    let out = generate("crypto_hmac", &json!({}));
    assert_eq!(field(&out, "algorithm"), "sha256");
    let key = key_bytes(&out, "key_base64", "key_hex");
    assert!(key.len() == 32, "crypto_hmac default key is 32 bytes");
    let tag = key_bytes(&out, "signature_base64", "signature_hex");
    assert!(
        hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, &key), b"", &tag).is_ok(),
        "crypto_hmac default: the signature of the empty message does not verify"
    );
    for key_size in [0, 15, 1025] {
        refuse_naming(
            "crypto_hmac",
            &json!({ "key_size": key_size }),
            &["key_size"],
        );
    }
    refuse_naming(
        "crypto_hmac",
        &json!({ "algorithm": "md5" }),
        &["algorithm"],
    );
}
