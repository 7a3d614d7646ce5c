//! AdmissionReview decoding and the whole review function (see `checks::review`).
#![no_main]

mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::review(data));
