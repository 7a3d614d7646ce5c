//! The annotation parser (see `checks::spec`).
#![no_main]

mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::spec(data));
