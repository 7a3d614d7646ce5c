//! Mirroring: create-if-absent at a deterministic remote name, ownership
//! tags, read-back of owned entries so retries converge on one value,
//! adoption only where the admin allows it, all destinations in parallel
//! under their own deadlines.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use sha2::Digest;

use crate::config::StoreConfig;
use crate::denial::{Denial, Reason};
use crate::metrics::{Metrics, StoreLabels, StoreOpLabels};
use crate::secret::{SecretData, SecretValue};
use crate::spec::{ANN_MIRROR, MirrorFormat, MirrorSpec};
use crate::store::{
    CreateOutcome, DynStore, Ownership, RemoteEntry, RemoteName, StoreError, Stores, WriteOptions,
};

/// Who is mirroring, and how.
pub struct MirrorRequest<'a> {
    pub cluster_id: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub dry_run: bool,
    /// A regeneration: the new values win over what the stores hold.
    pub regenerate: bool,
    /// When the whole review must be done.
    pub deadline: Instant,
}

/// What mirroring decided.
#[derive(Debug, Default)]
pub struct MirrorOutcome {
    /// Values the Secret must carry: the generated ones, except where a
    /// store already held an owned value for the key (a retried CREATE).
    pub values: SecretData,
    /// `store` names written (or verified), in annotation order.
    pub stores: Vec<String>,
    /// `store@version` details where the store versions values.
    pub versions: Vec<String>,
}

enum Written {
    Done(Option<String>),
    Raced(RemoteEntry),
}

/// One planned destination.
struct Destination<'a> {
    store_name: &'a str,
    config: &'a StoreConfig,
    client: &'a DynStore,
    remote: RemoteName,
    keys: Vec<String>,
    format: MirrorFormat,
    options: WriteOptions,
    deadline: Duration,
}

fn store_denial(store: &str, problem: impl std::fmt::Display) -> Denial {
    Denial::new(
        Reason::Store,
        format!("annotation {ANN_MIRROR}: store {store:?}: {problem}"),
    )
}

/// Resolves the annotation against the admin config without touching any
/// store: store exists, namespace allowed, remote name allowed, keys exist.
fn plan<'a>(
    req: &MirrorRequest<'_>,
    specs: &'a [MirrorSpec],
    stores: &'a Stores,
    generated: &SecretData,
    all: &SecretData,
) -> Result<Vec<Destination<'a>>, Denial> {
    let mut out: Vec<Destination<'a>> = Vec::with_capacity(specs.len());
    for spec in specs {
        let Some((config, client)) = stores.get(&spec.store) else {
            return Err(Denial::new(
                Reason::Store,
                format!(
                    "annotation {ANN_MIRROR}: store {:?} is not configured by the cluster admin",
                    spec.store
                ),
            ));
        };
        if !config.allows_namespace(req.namespace) {
            return Err(store_denial(
                &spec.store,
                format!(
                    "not available to namespace {:?} (the admin config allows: {})",
                    req.namespace,
                    config.namespaces.join(", ")
                ),
            ));
        }
        let logical = match &spec.key {
            Some(key) => {
                let own = format!("{}/", req.namespace);
                if !config.allow_any_key && !key.starts_with(&own) {
                    return Err(store_denial(
                        &spec.store,
                        format!(
                            "key {key:?} must start with {own:?} (the store does not allow names outside the Secret's namespace)"
                        ),
                    ));
                }
                if key.split('/').any(|seg| seg == ".." || seg == ".") || key.contains("//") {
                    return Err(store_denial(
                        &spec.store,
                        format!("key {key:?} has an empty, '.' or '..' segment"),
                    ));
                }
                format!("{}{key}", config.prefix)
            }
            None => {
                let rendered = config
                    .name_template
                    .replace("{namespace}", req.namespace)
                    .replace("{name}", req.name)
                    .replace("{cluster}", req.cluster_id);
                format!("{}{rendered}", config.prefix)
            }
        };
        let remote = client
            .remote_name(&logical)
            .map_err(|e| store_denial(&spec.store, format!("remote name {logical:?}: {e}")))?;
        if out
            .iter()
            .any(|d| d.store_name == spec.store && d.remote == remote)
        {
            return Err(store_denial(
                &spec.store,
                format!("remote name {remote} is listed twice"),
            ));
        }
        let keys: Vec<String> = match &spec.keys {
            Some(keys) => {
                if keys.is_empty() {
                    return Err(store_denial(&spec.store, "keys is empty"));
                }
                for k in keys {
                    if !all.contains_key(k) {
                        return Err(store_denial(
                            &spec.store,
                            format!("key {k:?} is not in the Secret"),
                        ));
                    }
                }
                let mut unique: Vec<String> = keys.clone();
                unique.sort();
                unique.dedup();
                unique
            }
            None => generated.keys().cloned().collect(),
        };
        if keys.is_empty() {
            return Err(store_denial(
                &spec.store,
                "nothing to mirror: no generated keys and no `keys` listed",
            ));
        }
        if spec.format == MirrorFormat::Value && keys.len() != 1 {
            return Err(store_denial(
                &spec.store,
                format!(
                    "format value needs exactly one key, got {} (list it in `keys`)",
                    keys.len()
                ),
            ));
        }
        if spec.format == MirrorFormat::Dotenv {
            let mut seen = BTreeSet::new();
            for k in &keys {
                if !seen.insert(dotenv_name(k)) {
                    return Err(store_denial(
                        &spec.store,
                        format!("keys map to the same dotenv name {}", dotenv_name(k)),
                    ));
                }
            }
        }
        let mut options = WriteOptions {
            description: Some(spec.description.clone().unwrap_or_else(|| {
                format!(
                    "Managed by secret-santa for Secret {}/{}",
                    req.namespace, req.name
                )
            })),
            tags: config.tags.clone(),
            kms_key_id: config.kms_key_id.clone(),
            content_type: match spec.format {
                MirrorFormat::Json => "application/json",
                MirrorFormat::Value | MirrorFormat::Dotenv => "text/plain",
            },
        };
        if spec.description.is_some() && !config.allows_override("description") {
            return Err(store_denial(
                &spec.store,
                "the admin config does not allow setting description",
            ));
        }
        if let Some(tags) = &spec.tags {
            if !config.allows_override("tags") {
                return Err(store_denial(
                    &spec.store,
                    "the admin config does not allow setting tags",
                ));
            }
            for (k, v) in tags {
                if k.starts_with("secret-santa") {
                    return Err(store_denial(&spec.store, format!("tag {k:?} is reserved")));
                }
                options.tags.insert(k.clone(), v.clone());
            }
        }
        if let Some(kms) = &spec.kms_key_id {
            if !config.allows_override("kmsKeyId") {
                return Err(store_denial(
                    &spec.store,
                    "the admin config does not allow setting kmsKeyId",
                ));
            }
            options.kms_key_id = Some(kms.clone());
        }
        for k in &keys {
            if spec.format != MirrorFormat::Value
                && std::str::from_utf8(all.get(k).map_or(&[][..], |v| v.expose())).is_err()
            {
                return Err(store_denial(
                    &spec.store,
                    format!("key {k:?} is binary; mirror it alone with format value"),
                ));
            }
        }
        out.push(Destination {
            store_name: &spec.store,
            config,
            client,
            remote,
            keys,
            format: spec.format,
            options,
            deadline: config.deadline.unwrap_or(Duration::from_secs(5)),
        });
    }
    Ok(out)
}

/// `api-token` → `API_TOKEN`.
pub fn dotenv_name(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Lays the chosen keys out in the destination's format.
pub fn encode(format: MirrorFormat, keys: &[String], values: &SecretData) -> SecretValue {
    match format {
        MirrorFormat::Value => keys
            .first()
            .and_then(|k| values.get(k))
            .cloned()
            .unwrap_or_else(|| SecretValue::new(Vec::new())),
        MirrorFormat::Json => {
            let map: serde_json::Map<String, serde_json::Value> = keys
                .iter()
                .filter_map(|k| {
                    values.get(k).map(|v| {
                        (
                            k.clone(),
                            serde_json::Value::String(
                                String::from_utf8_lossy(v.expose()).into_owned(),
                            ),
                        )
                    })
                })
                .collect();
            let mut value = serde_json::Value::Object(map);
            let bytes = serde_json::to_vec(&value).unwrap_or_default();
            crate::secret::wipe_json(&mut value);
            SecretValue::new(bytes)
        }
        MirrorFormat::Dotenv => {
            let mut out = String::new();
            for k in keys {
                if let Some(v) = values.get(k) {
                    let text = String::from_utf8_lossy(v.expose());
                    let quoted = serde_json::to_string(&text).unwrap_or_default();
                    out.push_str(&dotenv_name(k));
                    out.push('=');
                    out.push_str(&quoted);
                    out.push('\n');
                }
            }
            SecretValue::from_string(out)
        }
    }
}

/// Reads the chosen keys back from a stored payload; `None` when the payload
/// does not have the expected shape.
pub fn decode(format: MirrorFormat, keys: &[String], payload: &SecretValue) -> Option<SecretData> {
    match format {
        MirrorFormat::Value => Some(BTreeMap::from([(keys.first()?.clone(), payload.clone())])),
        MirrorFormat::Json => {
            let mut doc: serde_json::Value = serde_json::from_slice(payload.expose()).ok()?;
            let mut out = BTreeMap::new();
            for k in keys {
                let v = doc.get(k)?.as_str()?;
                out.insert(k.clone(), SecretValue::from_string(v.to_owned()));
            }
            crate::secret::wipe_json(&mut doc);
            Some(out)
        }
        MirrorFormat::Dotenv => {
            let text = std::str::from_utf8(payload.expose()).ok()?;
            let mut lines: BTreeMap<&str, &str> = BTreeMap::new();
            for line in text.lines() {
                if let Some((k, v)) = line.split_once('=') {
                    lines.insert(k, v);
                }
            }
            let mut out = BTreeMap::new();
            for k in keys {
                let raw = lines.get(dotenv_name(k).as_str())?;
                let v: String = serde_json::from_str(raw).ok()?;
                out.insert(k.clone(), SecretValue::from_string(v));
            }
            Some(out)
        }
    }
}

/// SHA-256 of the sorted key names, first 16 hex characters.
pub fn key_set_hash(keys: &[String]) -> String {
    let mut sorted: Vec<&str> = keys.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    let digest = sha2::Sha256::digest(sorted.join(",").as_bytes());
    hex::encode(&digest[..8])
}

async fn timed<T>(
    metrics: &Metrics,
    dest: &Destination<'_>,
    operation: &'static str,
    deadline: Instant,
    fut: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let budget = dest
        .deadline
        .min(deadline.saturating_duration_since(Instant::now()));
    let started = Instant::now();
    let span = tracing::info_span!("store", store = dest.store_name, kind = dest.client.kind(), operation, remote = %dest.remote);
    let result =
        match tokio::time::timeout(budget, tracing::Instrument::instrument(fut, span)).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Unavailable(format!(
                "no answer within {} ms",
                budget.as_millis()
            ))),
        };
    let result_label = match &result {
        Ok(_) => "success",
        Err(e) => e.reason(),
    };
    metrics
        .store_operations
        .get_or_create(&StoreOpLabels {
            store: dest.store_name.to_owned(),
            operation,
            result: result_label,
        })
        .inc();
    metrics
        .store_duration
        .get_or_create(&StoreLabels {
            store: dest.store_name.to_owned(),
            operation,
        })
        .observe(started.elapsed().as_secs_f64());
    result
}

fn describe(dest: &Destination<'_>, e: &StoreError) -> String {
    format!(
        "store {:?} ({}): {}: {e}",
        dest.store_name,
        dest.client.kind(),
        dest.remote
    )
}

/// Mirrors `generated` (the keys this review filled or regenerates) to the
/// destinations of the annotation. `all` is the Secret's final data, for
/// destinations that list other keys.
pub async fn mirror(
    req: &MirrorRequest<'_>,
    specs: &[MirrorSpec],
    stores: &Stores,
    metrics: &Metrics,
    generated: &SecretData,
    all: &SecretData,
) -> Result<MirrorOutcome, Denial> {
    let dests = plan(req, specs, stores, generated, all)?;
    if req.dry_run || dests.is_empty() {
        return Ok(MirrorOutcome {
            values: generated.clone(),
            ..Default::default()
        });
    }
    let owner_for = |d: &Destination<'_>| Ownership {
        cluster_id: req.cluster_id.to_owned(),
        namespace: req.namespace.to_owned(),
        name: req.name.to_owned(),
        key_set: key_set_hash(&d.keys),
    };

    // 0. A fresh CREATE with one destination whose store creates atomically
    //    needs no probe: the create itself tells whether something is there
    //    (and returns it), and only then do the steps below run on it.
    let mut errors = Vec::new();
    let mut fast: Option<Vec<Option<RemoteEntry>>> = None;
    if !req.regenerate
        && let [d] = dests.as_slice()
        && d.client.atomic_create()
    {
        let mut final_all = all.clone();
        final_all.extend(generated.iter().map(|(k, v)| (k.clone(), v.clone())));
        let payload = encode(d.format, &d.keys, &final_all);
        let owner = owner_for(d);
        let create = d
            .client
            .create_if_absent(&d.remote, &payload, &owner, &d.options);
        match timed(metrics, d, "create", req.deadline, create).await {
            Ok(CreateOutcome::Created { version }) => {
                return Ok(finish(&dests, vec![Some(version)], generated.clone()));
            }
            Ok(CreateOutcome::Exists(entry)) => fast = Some(vec![Some(entry)]),
            Err(e) => return Err(store_failure(&[describe(d, &e)])),
        }
    }

    // 1. Probe every destination in parallel.
    let existing: Vec<Option<RemoteEntry>> = match fast {
        Some(existing) => existing,
        None => {
            let probes = join_all(
                dests
                    .iter()
                    .map(|d| timed(metrics, d, "read", req.deadline, d.client.read(&d.remote))),
            )
            .await;
            let mut existing = Vec::with_capacity(dests.len());
            for (d, p) in dests.iter().zip(probes) {
                match p {
                    Ok(e) => existing.push(e),
                    Err(e) => {
                        errors.push(describe(d, &e));
                        existing.push(None);
                    }
                }
            }
            existing
        }
    };
    if !errors.is_empty() {
        return Err(Denial::new(Reason::Store, errors.join("; ")));
    }

    // 2. Ownership: an entry owned by someone else is refused unless the
    //    store allows adoption.
    for (d, e) in dests.iter().zip(&existing) {
        if let Some(entry) = e {
            let owned = entry.owner().is_some_and(|o| o.same_secret(&owner_for(d)));
            if !owned && !d.config.allow_adoption {
                let who = match entry.owner() {
                    Some(o) => format!(
                        "Secret {}/{} of cluster {}",
                        o.namespace, o.name, o.cluster_id
                    ),
                    None => "nobody we know (no secret-santa ownership tags)".to_owned(),
                };
                return Err(store_denial(
                    d.store_name,
                    format!(
                        "{} already exists and is owned by {who}; the store does not allow adoption",
                        d.remote
                    ),
                ));
            }
        }
    }

    // 3. Converge: values an owned entry already holds win (a retried or
    //    re-created CREATE), first destination first; a regeneration wins
    //    over everything.
    let mut values = generated.clone();
    if !req.regenerate {
        let mut pinned: BTreeSet<String> = BTreeSet::new();
        for (d, e) in dests.iter().zip(&existing) {
            let Some(entry) = e else { continue };
            if !entry.owner().is_some_and(|o| o.same_secret(&owner_for(d))) {
                continue;
            }
            if let Some(stored) = decode(d.format, &d.keys, &entry.payload) {
                for (k, v) in stored {
                    if generated.contains_key(&k) && pinned.insert(k.clone()) {
                        values.insert(k, v);
                    }
                }
            }
        }
    }
    let mut final_all = all.clone();
    final_all.extend(values.iter().map(|(k, v)| (k.clone(), v.clone())));

    // 4. Write what differs, in parallel.
    let writes = join_all(dests.iter().zip(&existing).map(|(d, e)| {
        let payload = encode(d.format, &d.keys, &final_all);
        let owner = owner_for(d);
        async move {
            match e {
                None => match timed(
                    metrics,
                    d,
                    "create",
                    req.deadline,
                    d.client
                        .create_if_absent(&d.remote, &payload, &owner, &d.options),
                )
                .await?
                {
                    CreateOutcome::Created { version } => Ok(Written::Done(version)),
                    // Another replica created it between our probe and our create.
                    CreateOutcome::Exists(raced) => Ok(Written::Raced(raced)),
                },
                Some(entry) => {
                    if entry.payload == payload && entry.owner().as_ref() == Some(&owner) {
                        Ok(Written::Done(entry.version.clone()))
                    } else {
                        timed(
                            metrics,
                            d,
                            "put",
                            req.deadline,
                            d.client.put(&d.remote, &payload, &owner, &d.options),
                        )
                        .await
                        .map(Written::Done)
                    }
                }
            }
        }
    }))
    .await;

    // 5. A replica that lost a create race (another replica of the same
    //    webhook admitting the same Secret) re-reads every destination and
    //    takes the values of the first destination, in annotation order, that
    //    holds them: both replicas pick the same winner, whoever won which
    //    race, and write it wherever it differs.
    let mut versions: Vec<Option<Option<String>>> = Vec::with_capacity(dests.len());
    let mut raced_any = false;
    for (d, w) in dests.iter().zip(writes) {
        match w {
            Ok(Written::Done(version)) => versions.push(Some(version)),
            Ok(Written::Raced(raced)) => {
                if raced.owner().is_some_and(|o| o.same_secret(&owner_for(d))) {
                    raced_any = true;
                } else {
                    errors.push(describe(
                        d,
                        &StoreError::Other("created concurrently by another owner".into()),
                    ));
                }
                versions.push(Some(raced.version));
            }
            Err(e) => {
                errors.push(describe(d, &e));
                versions.push(None);
            }
        }
    }
    if raced_any && errors.is_empty() {
        let fresh = join_all(
            dests
                .iter()
                .map(|d| timed(metrics, d, "read", req.deadline, d.client.read(&d.remote))),
        )
        .await;
        let mut fresh_entries = Vec::with_capacity(dests.len());
        for (d, f) in dests.iter().zip(fresh) {
            match f {
                Ok(e) => fresh_entries.push(e),
                Err(e) => {
                    errors.push(describe(d, &e));
                    fresh_entries.push(None);
                }
            }
        }
        if errors.is_empty() {
            values = generated.clone();
            let mut pinned: BTreeSet<String> = BTreeSet::new();
            for (d, e) in dests.iter().zip(&fresh_entries) {
                let Some(entry) = e else { continue };
                if !entry.owner().is_some_and(|o| o.same_secret(&owner_for(d))) {
                    continue;
                }
                for (k, v) in decode(d.format, &d.keys, &entry.payload).unwrap_or_default() {
                    if generated.contains_key(&k) && pinned.insert(k.clone()) {
                        values.insert(k, v);
                    }
                }
            }
            final_all.extend(values.iter().map(|(k, v)| (k.clone(), v.clone())));
            let fixes = join_all(dests.iter().zip(&fresh_entries).map(|(d, e)| {
                let payload = encode(d.format, &d.keys, &final_all);
                let owner = owner_for(d);
                async move {
                    match e {
                        Some(entry) if entry.payload == payload => Ok(entry.version.clone()),
                        _ => {
                            timed(
                                metrics,
                                d,
                                "put",
                                req.deadline,
                                d.client.put(&d.remote, &payload, &owner, &d.options),
                            )
                            .await
                        }
                    }
                }
            }))
            .await;
            for ((d, f), slot) in dests.iter().zip(fixes).zip(versions.iter_mut()) {
                match f {
                    Ok(v) => *slot = Some(v),
                    Err(e) => errors.push(describe(d, &e)),
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(store_failure(&errors));
    }
    Ok(finish(&dests, versions, values))
}

/// The denial for failed store calls after some may have been written.
fn store_failure(errors: &[String]) -> Denial {
    Denial::new(
        Reason::Store,
        format!(
            "{}; nothing was admitted, a retry converges on the values already written",
            errors.join("; ")
        ),
    )
}

/// What a mirror that wrote every destination reports: the store names
/// (once each) and the version ids the stores gave.
fn finish(
    dests: &[Destination<'_>],
    versions: Vec<Option<Option<String>>>,
    values: SecretData,
) -> MirrorOutcome {
    let mut outcome = MirrorOutcome {
        values,
        ..Default::default()
    };
    for (d, v) in dests.iter().zip(versions) {
        if !outcome.stores.iter().any(|s| s == d.store_name) {
            outcome.stores.push(d.store_name.to_owned());
        }
        if let Some(Some(v)) = v {
            outcome.versions.push(format!("{}@{v}", d.store_name));
        }
    }
    outcome
}
