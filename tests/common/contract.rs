//! The shared store contract suite: create-if-absent, read-back with
//! ownership tags, put of a new value, absent reads.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use super::owner;
use secret_santa::secret::SecretValue;
use secret_santa::store::{CreateOutcome, DynStore, WriteOptions};

/// Runs the contract against `store`; remote names are made under `prefix`
/// so several runs can share one server.
pub async fn run(store: DynStore, prefix: &str) {
    let options = WriteOptions {
        description: Some("contract test".into()),
        tags: [("team".to_string(), "payments".to_string())].into(),
        kms_key_id: None,
        content_type: "application/json",
    };
    let name = store.remote_name(&format!("{prefix}/shop/db")).unwrap();
    let me = owner("db");

    // Absent → None.
    assert!(
        store.read(&name).await.unwrap().is_none(),
        "fresh name reads as absent"
    );

    // Create-if-absent creates.
    let first = SecretValue::new(br#"{"password":"first"}"#.to_vec());
    match store
        .create_if_absent(&name, &first, &me, &options)
        .await
        .unwrap()
    {
        CreateOutcome::Created { .. } => {}
        CreateOutcome::Exists(_) => panic!("fresh name must be created"),
    }

    // Read back: the same bytes and our ownership.
    let entry = store
        .read(&name)
        .await
        .unwrap()
        .expect("created entry reads back");
    assert!(entry.payload == first, "payload reads back unchanged");
    assert_eq!(entry.owner(), Some(me.clone()));
    assert_eq!(entry.tags.get("team").map(String::as_str), Some("payments"));

    // Create-if-absent again does not overwrite: it reports what is there.
    let second = SecretValue::new(br#"{"password":"second"}"#.to_vec());
    match store
        .create_if_absent(&name, &second, &me, &options)
        .await
        .unwrap()
    {
        CreateOutcome::Exists(existing) => {
            assert!(
                existing.payload == first,
                "existing value is reported, not replaced"
            );
            assert_eq!(existing.owner(), Some(me.clone()));
        }
        CreateOutcome::Created { .. } => panic!("create-if-absent overwrote an entry"),
    }
    assert!(store.read(&name).await.unwrap().unwrap().payload == first);

    // Put writes a new value (a new version where versioned).
    store.put(&name, &second, &me, &options).await.unwrap();
    let entry = store.read(&name).await.unwrap().unwrap();
    assert!(entry.payload == second, "put replaces the current value");
    assert_eq!(entry.owner(), Some(me.clone()));

    // Another Secret's entry is not ours.
    let other_name = store.remote_name(&format!("{prefix}/shop/other")).unwrap();
    let other = owner("other");
    store
        .create_if_absent(&other_name, &first, &other, &options)
        .await
        .unwrap();
    let entry = store.read(&other_name).await.unwrap().unwrap();
    assert!(!entry.owner().unwrap().same_secret(&me));

    // Binary-safe raw values.
    let raw_name = store.remote_name(&format!("{prefix}/shop/raw")).unwrap();
    let raw = SecretValue::new("line one\nline \"two\" = ü".as_bytes().to_vec());
    store
        .create_if_absent(
            &raw_name,
            &raw,
            &me,
            &WriteOptions {
                content_type: "text/plain",
                ..options.clone()
            },
        )
        .await
        .unwrap();
    assert!(store.read(&raw_name).await.unwrap().unwrap().payload == raw);
}

/// Names every store refuses, with what its message says: characters
/// outside the provider's alphabet, and the empty name.
pub const REFUSED_NAMES: [(&str, &str); 4] = [
    ("shop/db#1", "'#' is not allowed"),
    ("shop/db name", "' ' is not allowed"),
    ("shop/dé", "'é' is not allowed"),
    ("", "empty"),
];

/// A store's name rules: `logical` maps to `remote`; every name of
/// [`REFUSED_NAMES`] and `also_refused` is refused with a message that
/// contains its reason; `max` characters are accepted, one more is refused
/// with a message that contains `too_long`.
pub fn assert_name_rules(
    store: &DynStore,
    (logical, remote): (&str, &str),
    also_refused: &[(&str, &str)],
    max: usize,
    too_long: &str,
) {
    assert_eq!(store.remote_name(logical).unwrap().as_str(), remote);
    for (bad, why) in REFUSED_NAMES.iter().chain(also_refused) {
        let err = store.remote_name(bad).unwrap_err();
        assert!(err.contains(why), "{bad:?}: {err}");
    }
    assert!(store.remote_name(&"a".repeat(max)).is_ok());
    let err = store.remote_name(&"a".repeat(max + 1)).unwrap_err();
    assert!(err.contains(too_long), "{err}");
}
