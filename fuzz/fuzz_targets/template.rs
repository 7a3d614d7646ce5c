//! Template rendering with hostile templates (see `checks::template`).
#![no_main]

mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::template(data));
