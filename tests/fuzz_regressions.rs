//! The fuzz targets' checks (`fuzz/fuzz_targets/checks.rs`) in the ordinary
//! test suite: every seed in `fuzz/seeds/<target>/` and every input a fuzzer
//! once found failing, saved in `fuzz/regressions/<target>/`, must pass.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../fuzz/fuzz_targets/checks.rs"]
mod checks;

use std::path::Path;

fn inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    out.sort();
    out
}

/// One fuzz target's check.
type Check = fn(&[u8]);

#[test]
fn seeds_and_saved_failures_pass_the_fuzz_checks() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let targets: [(&str, Check); 3] = [
        ("review", checks::review),
        ("spec", checks::spec),
        ("template", checks::template),
    ];
    for (target, check) in targets {
        let seeds = inputs(&root.join("seeds").join(target));
        assert!(seeds.len() >= 3, "{target}: seeds in fuzz/seeds/{target}");
        let saved = inputs(&root.join("regressions").join(target));
        for (path, input) in seeds.iter().chain(&saved) {
            let outcome = std::panic::catch_unwind(|| check(input));
            assert!(outcome.is_ok(), "{target}: {path} fails its check");
        }
    }
}
