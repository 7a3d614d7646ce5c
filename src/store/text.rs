//! Error text from stores, made safe and short: every backend words its
//! failures from a provider's message or an error chain, and each message
//! must be one line, bounded, and hold no value that was being written.

use std::error::Error as StdError;

use base64::Engine as _;
use zeroize::Zeroize as _;

use crate::secret::SecretValue;

/// Bounds a message's length at a character boundary, marking the cut.
pub fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// Runs of whitespace, newlines included, as one space.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The messages of an error and its sources, each on one line, those
/// already said left out, joined by `: `, at most `max` bytes.
pub fn error_chain(err: Option<&(dyn StdError + 'static)>, max: usize) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = err;
    while let Some(e) = next {
        let text = one_line(&e.to_string());
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    truncate(parts.join(": "), max)
}

/// A provider's message made safe to show: one line, every form of the
/// payload being written replaced by `<redacted>` (its text, its base64,
/// each string of a JSON object payload, and `extra` forms a backend
/// sends, such as a percent-encoding), at most `max` bytes. Forms shorter
/// than 4 bytes are left alone (they would redact ordinary words).
pub fn redact(
    message: &str,
    payload: Option<&SecretValue>,
    extra: Vec<String>,
    max: usize,
) -> String {
    let mut text = one_line(message);
    let mut forms = extra;
    if let Some(p) = payload {
        forms.push(base64::engine::general_purpose::STANDARD.encode(p.expose()));
        if let Ok(plain) = std::str::from_utf8(p.expose()) {
            forms.push(plain.to_owned());
            if let Ok(serde_json::Value::Object(mut map)) =
                serde_json::from_str::<serde_json::Value>(plain)
            {
                forms.extend(
                    map.values()
                        .filter_map(serde_json::Value::as_str)
                        .map(str::to_owned),
                );
                map.values_mut().for_each(crate::secret::wipe_json);
            }
        }
    }
    // Longest first, so a value is not half-redacted by a shorter one.
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    for form in forms.iter_mut() {
        if form.len() >= 4 && text.contains(form.as_str()) {
            text = text.replace(form.as_str(), "<redacted>");
        }
        form.zeroize();
    }
    truncate(text, max)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn redacts_every_form_of_the_payload() {
        let payload = SecretValue::new(br#"{"password":"hunter2-x","user":"admin"}"#.to_vec());
        let b64 = base64::engine::general_purpose::STANDARD.encode(payload.expose());
        let message = format!(
            "bad member hunter2-x\nin {}; body {b64}; enc hunter2%2Dx",
            std::str::from_utf8(payload.expose()).unwrap()
        );
        let out = redact(&message, Some(&payload), vec!["hunter2%2Dx".into()], 300);
        assert!(!out.contains("hunter2"), "{out}");
        assert!(!out.contains(&b64), "{out}");
        assert!(!out.contains('\n'));
        assert!(out.contains("<redacted>"));
        // Short forms are not redacted out of ordinary words.
        let tiny = SecretValue::new(b"ab".to_vec());
        assert_eq!(redact("about ab", Some(&tiny), Vec::new(), 300), "about ab");
    }

    #[test]
    fn chains_and_truncates_on_char_boundaries() {
        let io = std::io::Error::other("connection refused\n(os error 111)");
        assert_eq!(
            error_chain(Some(&io), 300),
            "connection refused (os error 111)"
        );
        assert_eq!(truncate("ééé".into(), 3), "é…");
        assert_eq!(truncate("abc".into(), 3), "abc");
    }
}
