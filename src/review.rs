//! The pure core of a review: an admission request in, a mutation or a
//! denial out. No HTTP here; the webhook and the `mutate` command both call
//! [`Reviewer::review`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kube::core::admission::Operation;
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::Digest;
use tokio::sync::Semaphore;

use std::task::Poll;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::admission::{Request, Secret};
use crate::config::AdminConfig;
use crate::denial::{Denial, Reason};
use crate::generators::Limits;
use crate::metrics::Metrics;
use crate::mirror::{MirrorOutcome, MirrorRequest};
use crate::patch::PatchBuilder;
use crate::render::{self, RenderContext};
use crate::secret::{Outputs, SecretData, SecretValue};
use crate::spec::{self, GeneratorSpec, Regenerate, SecretKey, Spec};
use crate::store::Stores;

/// Kubernetes refuses Secrets whose data exceeds 1 MiB.
pub const MAX_SECRET_BYTES: usize = 1024 * 1024;

/// What a review decided when it allows the request.
#[derive(Debug, Default)]
pub struct Mutation {
    pub patch: Option<crate::patch::JsonPatch>,
    pub warnings: Vec<String>,
    /// Keys written by this review (never values), for logs.
    pub generated_keys: Vec<String>,
    /// Keys restored from the old object on UPDATE.
    pub restored_keys: Vec<String>,
}

impl Mutation {
    fn untouched() -> Self {
        Self::default()
    }
}

/// Runs reviews. Cheap to clone. The admin config can be replaced while
/// reviews run: each review keeps the config it started with. Reading the
/// current one takes no lock and writes no shared counter (`arc-swap`), so
/// reviews on different cores do not contend for it.
#[derive(Clone)]
pub struct Reviewer {
    current: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
}

/// One admin config with its store clients.
#[derive(Clone)]
struct Snapshot {
    inner: Arc<Inner>,
}

struct Inner {
    config: AdminConfig,
    stores: Stores,
    metrics: Arc<Metrics>,
    limits: Limits,
    /// Bounds concurrent expensive generations (key pairs) on the blocking pool.
    key_workers: Semaphore,
}

/// The identity and metadata of the Secret under review.
struct Subject<'a> {
    namespace: String,
    name: String,
    generate_name: String,
    secret: &'a Secret,
}

impl Reviewer {
    /// A reviewer with the given store clients (see [`Stores::from_config`]).
    pub fn new(config: AdminConfig, stores: Stores) -> Self {
        let metrics = Arc::new(Metrics::new());
        Self {
            current: Arc::new(ArcSwap::from_pointee(Snapshot::new(
                config,
                stores,
                metrics.clone(),
            ))),
            metrics,
        }
    }

    /// Builds the store clients of `config`, then the reviewer.
    pub async fn from_config(config: AdminConfig) -> Result<Self, String> {
        let stores = Stores::from_config(&config).await?;
        Ok(Self::new(config, stores))
    }

    /// A reviewer without stores, for configs that list none.
    pub fn without_stores(config: AdminConfig) -> Self {
        Self::new(config, Stores::default())
    }

    /// Replaces the admin config and store clients; reviews already running
    /// finish with the previous ones.
    pub fn replace(&self, config: AdminConfig, stores: Stores) {
        let next = Snapshot::new(config, stores, self.metrics.clone());
        self.current.store(Arc::new(next));
    }

    fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The cluster id of the current config.
    pub fn cluster_id(&self) -> String {
        self.snapshot().inner.config.cluster_id.clone()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Reviews one request under the configured deadline.
    pub async fn review(&self, req: &Request<'_>) -> Result<Mutation, Denial> {
        self.review_within(req, None).await
    }

    /// Reviews one request under the configured deadline, or `limit` when
    /// that is shorter; past it the review is denied.
    pub async fn review_within(
        &self,
        req: &Request<'_>,
        limit: Option<Duration>,
    ) -> Result<Mutation, Denial> {
        let snapshot = self.snapshot();
        let configured = snapshot.inner.config.limits.request_deadline;
        let deadline = limit.map_or(configured, |l| l.min(configured));
        snapshot.review_within(req, deadline).await
    }
}

impl Snapshot {
    fn new(config: AdminConfig, stores: Stores, metrics: Arc<Metrics>) -> Self {
        let limits = config.limits.generator_limits();
        let workers = config.limits.key_generation_workers.max(1);
        Self {
            inner: Arc::new(Inner {
                config,
                stores,
                metrics,
                limits,
                key_workers: Semaphore::new(workers),
            }),
        }
    }

    async fn review_within(
        &self,
        req: &Request<'_>,
        deadline: Duration,
    ) -> Result<Mutation, Denial> {
        let until = Instant::now() + deadline;
        let mut review = std::pin::pin!(self.review_inner(req, until));
        // Most reviews (no store, no key pair) finish on their first poll:
        // those never arm a timer.
        if let Poll::Ready(result) =
            std::future::poll_fn(|cx| Poll::Ready(review.as_mut().poll(cx))).await
        {
            return result;
        }
        match tokio::time::timeout_at(until.into(), review).await {
            Ok(result) => result,
            Err(_) => Err(Denial::new(
                Reason::Deadline,
                format!(
                    "review did not finish within {} ms; nothing was changed",
                    deadline.as_millis()
                ),
            )),
        }
    }

    async fn review_inner(&self, req: &Request<'_>, until: Instant) -> Result<Mutation, Denial> {
        if !req.is_secret() {
            // Not ours: the shipped configuration never sends these.
            return Ok(Mutation::untouched());
        }
        match req.operation {
            Operation::Create => {
                let secret = parse_secret(req.object, "object")?;
                if !spec::is_opted_in(secret.metadata.labels.as_ref()) {
                    return Ok(Mutation::untouched());
                }
                let subject = subject(req, &secret);
                self.fill_missing(req, &subject, until).await
            }
            Operation::Update => {
                let secret = parse_secret(req.object, "object")?;
                if !spec::is_opted_in(secret.metadata.labels.as_ref()) {
                    return Ok(Mutation::untouched());
                }
                let old = parse_secret(req.old_object, "oldObject")?;
                let subject = subject(req, &secret);
                self.update(req, &subject, &old, until).await
            }
            _ => Ok(Mutation::untouched()),
        }
    }

    /// CREATE (and the first UPDATE of a Secret that was never processed):
    /// every key the annotations define that is missing gets generated.
    async fn fill_missing(
        &self,
        req: &Request<'_>,
        subject: &Subject<'_>,
        until: Instant,
    ) -> Result<Mutation, Denial> {
        let no_annotations = BTreeMap::new();
        let annotations = subject
            .secret
            .metadata
            .annotations
            .as_ref()
            .unwrap_or(&no_annotations);
        let spec = Spec::parse(annotations)?;
        if spec.is_empty() {
            let mut m = Mutation::untouched();
            if !spec.mirror.is_empty() || spec.regenerate.is_some() {
                m.warnings.push(format!(
                    "secret-santa: nothing to generate: add {} or {}",
                    spec::ANN_AUTOGENERATE,
                    spec::ANN_GENERATORS
                ));
            }
            return Ok(m);
        }
        let present = present_keys(subject.secret);
        let generated = self.generate(&spec, subject, &present).await?;
        let mut missing: SecretData = generated
            .values
            .into_iter()
            .filter(|(k, _)| !present.contains(k.as_str()))
            .collect();
        let mut mutation = Mutation::untouched();
        if missing.is_empty() {
            return Ok(mutation);
        }
        check_size(subject.secret, &missing)?;
        let all = final_data(subject.secret, &missing);
        crate::typed::validate(subject.secret.type_.as_deref(), &all)?;
        let outcome = self
            .mirror(
                req,
                subject,
                &spec,
                &missing,
                &all,
                false,
                until,
                &mut mutation.warnings,
            )
            .await?;
        missing = outcome.values;
        let mirrored = outcome.stores;
        let versions = outcome.versions;

        let mut ann = BTreeMap::new();
        ann.insert(
            spec::ANN_GENERATED_AT.to_owned(),
            crate::generators::now_rfc3339(),
        );
        ann.insert(
            spec::ANN_GENERATED_KEYS.to_owned(),
            join_keys(missing.keys()),
        );
        ann.insert(
            spec::ANN_GENERATOR_TYPES.to_owned(),
            spec.generator_types().join(","),
        );
        if let Some(t) = &spec.template {
            ann.insert(
                spec::ANN_TEMPLATE_CHECKSUM.to_owned(),
                hex::encode(sha2::Sha256::digest(t.as_bytes())),
            );
        }
        mirror_annotations(&mut ann, &mirrored, &versions);
        let mut patch = PatchBuilder::new();
        patch.set_data(subject.secret.data.is_some(), &missing);
        patch.set_annotations(subject.secret.metadata.annotations.is_some(), &ann);
        mutation.generated_keys = missing.keys().cloned().collect();
        mutation.patch = Some(patch.build());
        if req.dry_run {
            mutation.warnings.push(
                "secret-santa: dry run: values were generated for preview only and no external store was written".into(),
            );
        }
        Ok(mutation)
    }

    /// UPDATE: never regenerate; restore what the new object dropped; honour
    /// an explicit `regenerate` annotation.
    async fn update(
        &self,
        req: &Request<'_>,
        subject: &Subject<'_>,
        old: &Secret,
        until: Instant,
    ) -> Result<Mutation, Denial> {
        let old_ann = old.metadata.annotations.clone().unwrap_or_default();
        let Some(old_generated) = old_ann.get(spec::ANN_GENERATED_KEYS) else {
            // Never processed (opted in after creation): generate what is missing.
            return self.fill_missing(req, subject, until).await;
        };
        let new_secret = subject.secret;
        let new_ann = new_secret.metadata.annotations.clone().unwrap_or_default();
        let present = present_keys(new_secret);
        let old_data = old.data.clone().unwrap_or_default();

        let mut data: SecretData = BTreeMap::new();
        let mut restored_keys = Vec::new();
        for key in split_keys(old_generated) {
            if !present.contains(key.as_str())
                && let Some(v) = old_data.get(&key)
            {
                data.insert(key.clone(), SecretValue::new(v.0.clone()));
                restored_keys.push(key);
            }
        }
        let mut ann: BTreeMap<String, String> = BTreeMap::new();
        for name in spec::METADATA_ANNOTATIONS {
            if !new_ann.contains_key(name)
                && let Some(v) = old_ann.get(name)
            {
                ann.insert(name.to_owned(), v.clone());
            }
        }

        let mut mutation = Mutation::untouched();
        let mut patch = PatchBuilder::new();
        if new_ann.contains_key(spec::ANN_REGENERATE) {
            let spec = Spec::parse(&new_ann)?;
            let Some(which) = &spec.regenerate else {
                return Err(Denial::internal("regenerate annotation vanished"));
            };
            if spec.is_empty() {
                return Err(Denial::annotation(
                    spec::ANN_REGENERATE,
                    "nothing to regenerate: the Secret has no generation annotations",
                ));
            }
            let generated = self.generate(&spec, subject, &BTreeSet::new()).await?;
            let chosen: SecretData = match which {
                Regenerate::All => generated.values.clone(),
                Regenerate::Keys(keys) => {
                    let mut chosen = BTreeMap::new();
                    for key in keys {
                        let v = generated.values.get(key.as_str()).ok_or_else(|| {
                            Denial::annotation(
                                spec::ANN_REGENERATE,
                                format!(
                                    "key {:?} is not generated by this Secret's annotations (generated keys: {})",
                                    key.as_str(),
                                    join_keys(generated.values.keys())
                                ),
                            )
                        })?;
                        chosen.insert(key.as_str().to_owned(), v.clone());
                    }
                    chosen
                }
            };
            check_size(new_secret, &chosen)?;
            let mut merged = data.clone();
            merged.extend(chosen.iter().map(|(k, v)| (k.clone(), v.clone())));
            let all = final_data(new_secret, &merged);
            crate::typed::validate(new_secret.type_.as_deref(), &all)?;
            // Destinations hold every generated key, not just the regenerated ones.
            let generated_now: SecretData = split_keys(old_generated)
                .into_iter()
                .chain(chosen.keys().cloned())
                .filter_map(|k| all.get(&k).map(|v| (k, v.clone())))
                .collect();
            let outcome = self
                .mirror(
                    req,
                    subject,
                    &spec,
                    &generated_now,
                    &all,
                    true,
                    until,
                    &mut mutation.warnings,
                )
                .await?;
            let (mirrored, versions) = (outcome.stores, outcome.versions);
            let mut all_generated: BTreeSet<String> =
                split_keys(old_generated).into_iter().collect();
            all_generated.extend(chosen.keys().cloned());
            ann.insert(
                spec::ANN_GENERATED_AT.to_owned(),
                crate::generators::now_rfc3339(),
            );
            ann.insert(
                spec::ANN_GENERATED_KEYS.to_owned(),
                join_keys(all_generated.iter()),
            );
            mirror_annotations(&mut ann, &mirrored, &versions);
            mutation.generated_keys = chosen.keys().cloned().collect();
            restored_keys.retain(|k| !chosen.contains_key(k));
            data.retain(|k, _| !chosen.contains_key(k));
            data.extend(chosen);
            patch.remove_annotation(spec::ANN_REGENERATE);
            if req.dry_run {
                mutation.warnings.push(
                    "secret-santa: dry run: values were regenerated for preview only and no external store was written".into(),
                );
            }
        }
        if data.is_empty() && ann.is_empty() && patch.is_empty() {
            return Ok(mutation);
        }
        patch.set_data(new_secret.data.is_some(), &data);
        // Removing the regenerate annotation needs the map to exist, so it is
        // known to exist whenever the patch already has that removal.
        patch.set_annotations(new_secret.metadata.annotations.is_some(), &ann);
        mutation.restored_keys = restored_keys;
        mutation.patch = Some(patch.build());
        Ok(mutation)
    }

    /// Runs the generators and the template; returns every key the spec
    /// defines. Generators whose outputs cannot matter (no template, key
    /// already present) are skipped.
    async fn generate(
        &self,
        spec: &Spec,
        subject: &Subject<'_>,
        present: &BTreeSet<String>,
    ) -> Result<Generated, Denial> {
        let expensive = spec.generators.iter().any(|g| g.entry.expensive)
            || spec
                .template
                .as_deref()
                .is_some_and(crate::render::may_be_slow);
        let labels = subject.secret.metadata.labels.as_ref();
        let annotations = subject.secret.metadata.annotations.as_ref();
        if !expensive {
            // Cheap generators run right here, on borrowed inputs.
            return Generation {
                spec,
                limits: &self.inner.limits,
                present,
                name: &subject.name,
                generate_name: &subject.generate_name,
                namespace: &subject.namespace,
                labels: labels.unwrap_or(&EMPTY_MAP),
                annotations: annotations.unwrap_or(&EMPTY_MAP),
            }
            .run();
        }
        let job = GenerationJob {
            spec: spec.clone(),
            limits: self.inner.limits.clone(),
            present: present.clone(),
            name: subject.name.clone(),
            generate_name: subject.generate_name.clone(),
            namespace: subject.namespace.clone(),
            labels: labels.cloned().unwrap_or_default(),
            annotations: annotations.cloned().unwrap_or_default(),
        };
        let _permit = self
            .inner
            .key_workers
            .acquire()
            .await
            .map_err(|_| Denial::internal("key generation pool closed"))?;
        tokio::task::spawn_blocking(move || job.generation().run())
            .await
            .map_err(|_| Denial::internal("a generator panicked"))?
    }

    /// Mirrors the values to the stores the `mirror` annotation names.
    /// Returns the values the Secret must carry (converged with what the
    /// stores already hold) and the store names written.
    #[allow(clippy::too_many_arguments)]
    async fn mirror(
        &self,
        req: &Request<'_>,
        subject: &Subject<'_>,
        spec: &Spec,
        values: &SecretData,
        all: &SecretData,
        regenerate: bool,
        until: Instant,
        warnings: &mut Vec<String>,
    ) -> Result<MirrorOutcome, Denial> {
        if spec.mirror.is_empty() {
            return Ok(MirrorOutcome {
                values: values.clone(),
                ..Default::default()
            });
        }
        if subject.name.is_empty() {
            // Remote names derive from metadata.name; generateName Secrets get
            // theirs only after admission.
            return Err(Denial::new(
                Reason::Store,
                format!(
                    "annotation {}: mirroring needs metadata.name; a Secret created with generateName cannot be mirrored",
                    spec::ANN_MIRROR
                ),
            ));
        }
        let request = MirrorRequest {
            cluster_id: &self.inner.config.cluster_id,
            namespace: &subject.namespace,
            name: &subject.name,
            dry_run: req.dry_run,
            regenerate,
            deadline: until,
        };
        let outcome = crate::mirror::mirror(
            &request,
            &spec.mirror,
            &self.inner.stores,
            &self.inner.metrics,
            values,
            all,
        )
        .await?;
        if req.dry_run {
            warnings.push("secret-santa: dry run: mirrors were checked against the admin config but not written".into());
        }
        Ok(outcome)
    }
}

impl Denial {
    pub fn internal(what: &str) -> Self {
        Denial::new(Reason::Internal, format!("internal error: {what}"))
    }
}

/// Everything a generation needs, owned, so it can run on the blocking pool.
struct GenerationJob {
    spec: Spec,
    limits: Limits,
    present: BTreeSet<String>,
    name: String,
    generate_name: String,
    namespace: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

/// Fresh values for every key a spec defines.
pub struct Generated {
    pub values: SecretData,
}

static EMPTY_MAP: BTreeMap<String, String> = BTreeMap::new();

impl GenerationJob {
    fn generation(&self) -> Generation<'_> {
        Generation {
            spec: &self.spec,
            limits: &self.limits,
            present: &self.present,
            name: &self.name,
            generate_name: &self.generate_name,
            namespace: &self.namespace,
            labels: &self.labels,
            annotations: &self.annotations,
        }
    }
}

/// What a generation reads: borrowed from the review when it runs inline,
/// from a [`GenerationJob`] on the blocking pool.
struct Generation<'a> {
    spec: &'a Spec,
    limits: &'a Limits,
    present: &'a BTreeSet<String>,
    name: &'a str,
    generate_name: &'a str,
    namespace: &'a str,
    labels: &'a BTreeMap<String, String>,
    annotations: &'a BTreeMap<String, String>,
}

impl Generation<'_> {
    fn run(self) -> Result<Generated, Denial> {
        let spec = self.spec;
        let mut values: SecretData = BTreeMap::new();
        // Shorthand keys: one random password each (`random_password` with
        // its default classes).
        for key in &spec.autogenerate {
            if self.present.contains(key.as_str()) {
                continue;
            }
            let password = crate::generators::random::autogenerated_password();
            values.insert(key.as_str().to_owned(), SecretValue::from_string(password));
        }
        if spec.generators.is_empty() && spec.template.is_none() {
            return Ok(Generated { values });
        }

        let mut ctx = RenderContext::new(
            self.name,
            self.generate_name,
            self.namespace,
            self.labels,
            self.annotations,
        );
        let mut secrets: Vec<String> = Vec::new();
        for g in &spec.generators {
            if spec.template.is_none() && self.present.contains(g.name.as_str()) {
                continue;
            }
            let out = run_generator(g, &ctx, self.limits, &secrets)?;
            for v in out.as_map().values() {
                if let Value::String(s) = v {
                    secrets.push(s.clone());
                }
            }
            ctx.insert(g.name.as_str(), &out);
            if spec.template.is_none() {
                values.insert(g.name.as_str().to_owned(), value_field(&out));
            }
        }

        if let Some(template) = &spec.template {
            let scrub = |m: &str| {
                let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
                render::scrub(m, &refs)
            };
            let rendered = render::render(template, &ctx).map_err(|e| {
                Denial::new(
                    Reason::Template,
                    format!("annotation {}: {}", spec::ANN_TEMPLATE, scrub(&e)),
                )
            })?;
            let parsed = parse_template_output(&rendered).map_err(|e| {
                Denial::new(
                    Reason::Template,
                    format!("annotation {}: {}", spec::ANN_TEMPLATE, scrub(&e)),
                )
            })?;
            for (key, value) in parsed {
                if spec.autogenerate.iter().any(|k| k.as_str() == key) {
                    return Err(Denial::annotation(
                        spec::ANN_TEMPLATE,
                        format!(
                            "key {key:?} is defined by both {} and the template",
                            spec::ANN_AUTOGENERATE
                        ),
                    ));
                }
                values.insert(key, value);
            }
        }
        for s in &mut secrets {
            zeroize::Zeroize::zeroize(s);
        }
        Ok(Generated { values })
    }
}

fn value_field(out: &Outputs) -> SecretValue {
    let text = match out.get("value") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    SecretValue::from_string(text)
}

/// Runs one generator after rendering template expressions in its string
/// config values with the outputs of the generators before it.
fn run_generator(
    g: &GeneratorSpec,
    ctx: &RenderContext,
    limits: &Limits,
    secrets: &[String],
) -> Result<Outputs, Denial> {
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let config = render_config(&g.config, ctx).map_err(|e| {
        Denial::generator(
            g.name.as_str(),
            g.type_name(),
            format!("config: {}", render::scrub(&e, &refs)),
        )
    })?;
    g.entry
        .generate(&config, limits)
        .map_err(|e| Denial::generator(g.name.as_str(), g.type_name(), render::scrub(&e, &refs)))
}

fn render_config(value: &Value, ctx: &RenderContext) -> Result<Value, String> {
    Ok(match value {
        Value::String(s) if s.contains("{{") || s.contains("{%") => {
            Value::String(render::render(s, ctx)?)
        }
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|v| render_config(v, ctx))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| Ok((k.clone(), render_config(v, ctx)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// The rendered template must be a YAML mapping of Secret key → string.
fn parse_template_output(rendered: &str) -> Result<BTreeMap<String, SecretValue>, String> {
    if rendered.trim().is_empty() {
        return Err("the template rendered to nothing; it must produce `key: value` lines".into());
    }
    let doc: Value = crate::yaml::from_str(rendered)
        .map_err(|e| format!("rendered output is not valid YAML: {e} (quote values, e.g. `password: {{{{ pass.value | json }}}}`)"))?;
    let Value::Object(map) = doc else {
        return Err("rendered output must be a YAML mapping of `key: string value`".into());
    };
    let mut out = BTreeMap::new();
    for (key, value) in map {
        let key = SecretKey::parse(&key)?;
        let text = match value {
            Value::String(s) => s,
            Value::Number(_) | Value::Bool(_) => {
                return Err(format!(
                    "key {:?}: value is a YAML {}, not a string; quote it so it is kept exactly",
                    key.as_str(),
                    if value.is_number() {
                        "number"
                    } else {
                        "boolean"
                    }
                ));
            }
            Value::Null => return Err(format!("key {:?}: value is empty (null)", key.as_str())),
            Value::Array(_) | Value::Object(_) => {
                return Err(format!(
                    "key {:?}: value must be a string, not a list or mapping",
                    key.as_str()
                ));
            }
        };
        out.insert(key.as_str().to_owned(), SecretValue::from_string(text));
    }
    Ok(out)
}

fn parse_secret(raw: Option<&RawValue>, field: &str) -> Result<Secret, Denial> {
    let raw =
        raw.ok_or_else(|| Denial::new(Reason::Request, format!("the review has no {field}")))?;
    let secret: Secret = serde_json::from_str(raw.get()).map_err(|e| {
        Denial::new(
            Reason::Request,
            format!(
                "{field} is not a valid Secret: {}",
                crate::generators::redact_serde_error(&e.to_string())
            ),
        )
    })?;
    secret.check_kind().map_err(|why| {
        Denial::new(
            Reason::Request,
            format!("{field} is not a valid Secret: {why}"),
        )
    })?;
    Ok(secret)
}

fn subject<'a>(req: &Request<'_>, secret: &'a Secret) -> Subject<'a> {
    let namespace = req
        .namespace
        .as_deref()
        .map(str::to_owned)
        .or_else(|| secret.metadata.namespace.clone())
        .unwrap_or_else(|| "default".into());
    let name = secret
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| req.name.clone().into_owned());
    Subject {
        namespace,
        name,
        generate_name: secret.metadata.generate_name.clone().unwrap_or_default(),
        secret,
    }
}

/// Keys present in `.data` or `.stringData`.
fn present_keys(secret: &Secret) -> BTreeSet<String> {
    let mut keys: BTreeSet<String> = secret.data.iter().flat_map(|d| d.keys().cloned()).collect();
    keys.extend(secret.string_data.iter().flat_map(|d| d.keys().cloned()));
    keys
}

fn check_size(secret: &Secret, adding: &SecretData) -> Result<(), Denial> {
    let existing: usize = secret
        .data
        .iter()
        .flat_map(|d| d.iter())
        .filter(|(k, _)| !adding.contains_key(*k))
        .map(|(k, v)| k.len() + v.0.len())
        .sum::<usize>()
        + secret
            .string_data
            .iter()
            .flat_map(|d| d.iter())
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
    let added: usize = adding.iter().map(|(k, v)| k.len() + v.len()).sum();
    let total = existing + added;
    if total > MAX_SECRET_BYTES {
        return Err(Denial::new(
            Reason::SecretKey,
            format!(
                "the Secret's data would be {total} bytes, more than Kubernetes' limit of {MAX_SECRET_BYTES}"
            ),
        ));
    }
    Ok(())
}

/// The Secret's data as it will be stored: `.data`, `.stringData` over it,
/// then `adding` over both.
fn final_data(secret: &Secret, adding: &SecretData) -> SecretData {
    let mut out: SecretData = secret
        .data
        .iter()
        .flat_map(|d| d.iter())
        .map(|(k, v)| (k.clone(), SecretValue::new(v.0.clone())))
        .collect();
    for (k, v) in secret.string_data.iter().flat_map(|d| d.iter()) {
        out.insert(k.clone(), SecretValue::new(v.clone().into_bytes()));
    }
    for (k, v) in adding {
        out.insert(k.clone(), v.clone());
    }
    out
}

fn join_keys<'a>(keys: impl Iterator<Item = &'a String>) -> String {
    keys.map(String::as_str).collect::<Vec<_>>().join(",")
}

fn split_keys(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `mirrored-to` (the store names) and `mirrored-versions` (`store@version`
/// where the store gave one: Azure's version id, a Vault or GCP version
/// number, an S3 version id) for a mirror that wrote something.
fn mirror_annotations(ann: &mut BTreeMap<String, String>, stores: &[String], versions: &[String]) {
    if !stores.is_empty() {
        ann.insert(spec::ANN_MIRRORED_TO.to_owned(), stores.join(","));
    }
    if !versions.is_empty() {
        ann.insert(spec::ANN_MIRRORED_VERSIONS.to_owned(), versions.join(","));
    }
}
