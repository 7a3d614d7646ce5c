//! Template rendering with Tera, made unable to do harm: no environment,
//! no files, no network, no recursion, bounded loops and bounded size.
//! Error messages name the problem and never include a generated value.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use serde_json::{Map, Value};
use sha2::Digest;
use tera::{Context, Tera};

/// Most elements one template may iterate over through `range` in total.
pub const MAX_RANGE_ELEMENTS: usize = 10_000;
/// Largest rendered output accepted, in bytes.
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;
/// Highest bcrypt cost accepted by the `bcrypt` / `htpasswd` filters.
pub const MAX_BCRYPT_COST: u32 = 14;
pub const DEFAULT_BCRYPT_COST: u32 = 10;
/// The bcrypt work one template may do in all: 2^cost per hash.
pub const BCRYPT_WORK_BUDGET: u64 = 4 << MAX_BCRYPT_COST;

const TEMPLATE_NAME: &str = "__secret_santa_template__";

static PROTOTYPE: LazyLock<Tera> = LazyLock::new(build_prototype);

fn build_prototype() -> Tera {
    let mut tera = Tera::default();
    // Templates come from Secret authors: nothing may reach the process.
    tera.register_function(
        "get_env",
        |_: &HashMap<String, Value>| -> tera::Result<Value> {
            Err(tera::Error::msg(
                "get_env is disabled: templates cannot read the webhook's environment",
            ))
        },
    );
    // `range` is registered per render, with that render's budget.
    tera.register_filter("sha256", |v: &Value, _: &HashMap<String, Value>| {
        Ok(Value::String(hex::encode(sha2::Sha256::digest(bytes_of(
            v, "sha256",
        )?))))
    });
    tera.register_filter("sha512", |v: &Value, _: &HashMap<String, Value>| {
        Ok(Value::String(hex::encode(sha2::Sha512::digest(bytes_of(
            v, "sha512",
        )?))))
    });
    tera.register_filter("crc32", |v: &Value, _: &HashMap<String, Value>| {
        Ok(Value::from(crc32fast::hash(
            bytes_of(v, "crc32")?.as_bytes(),
        )))
    });
    tera.register_filter("entropy", |v: &Value, _: &HashMap<String, Value>| {
        Ok(Value::from(entropy_bits(&bytes_of(v, "entropy")?)))
    });
    tera.register_filter("b64encode", |v: &Value, _: &HashMap<String, Value>| {
        Ok(Value::String(STANDARD.encode(bytes_of(v, "b64encode")?)))
    });
    tera.register_filter("urlSafeB64", |v: &Value, _: &HashMap<String, Value>| {
        Ok(Value::String(URL_SAFE.encode(bytes_of(v, "urlSafeB64")?)))
    });
    tera.register_filter("b64decode", |v: &Value, _: &HashMap<String, Value>| {
        let s = bytes_of(v, "b64decode")?;
        let bytes = STANDARD
            .decode(s.trim())
            .or_else(|_| URL_SAFE.decode(s.trim()))
            .map_err(|_| tera::Error::msg("filter b64decode: input is not base64"))?;
        String::from_utf8(bytes)
            .map(Value::String)
            .map_err(|_| tera::Error::msg("filter b64decode: decoded bytes are not UTF-8 text"))
    });
    for name in ["hex", "toHex"] {
        tera.register_filter(name, move |v: &Value, _: &HashMap<String, Value>| {
            Ok(Value::String(hex::encode(bytes_of(v, name)?)))
        });
    }
    tera.register_filter("toBinary", |v: &Value, _: &HashMap<String, Value>| {
        let s = bytes_of(v, "toBinary")?;
        Ok(Value::String(
            s.bytes()
                .map(|b| format!("{b:08b}"))
                .collect::<Vec<_>>()
                .join(""),
        ))
    });
    tera.register_filter("removeHyphens", |v: &Value, _: &HashMap<String, Value>| {
        Ok(Value::String(
            bytes_of(v, "removeHyphens")?.replace('-', ""),
        ))
    });
    tera.register_filter("urlencode", |v: &Value, _: &HashMap<String, Value>| {
        Ok(Value::String(
            percent_encoding::utf8_percent_encode(&bytes_of(v, "urlencode")?, URL_COMPONENT)
                .to_string(),
        ))
    });
    // `json` and `yaml` quote a value so it is one valid scalar: a JSON string
    // is also a valid YAML double-quoted scalar.
    for name in ["json", "yaml"] {
        tera.register_filter(name, move |v: &Value, _: &HashMap<String, Value>| {
            serde_json::to_string(v)
                .map(Value::String)
                .map_err(|_| tera::Error::msg(format!("filter {name}: value cannot be quoted")))
        });
    }
    register_bcrypt(&mut tera, Arc::default());
    tera
}

/// The `bcrypt` and `htpasswd` filters, sharing one render's hashing
/// budget: a hash of cost `c` spends 2^c, and one template may spend
/// [`BCRYPT_WORK_BUDGET`] in all, so a loop cannot hash for minutes.
fn register_bcrypt(tera: &mut Tera, budget: Arc<AtomicU64>) {
    let spend = move |cost: u32, filter: &str| -> tera::Result<()> {
        let work = 1u64 << cost;
        let spent = budget.fetch_add(work, Ordering::Relaxed) + work;
        if spent > BCRYPT_WORK_BUDGET {
            return Err(tera::Error::msg(format!(
                "filter {filter}: this template hashes more than the limit per template (four hashes of cost {MAX_BCRYPT_COST}, or 64 of cost {DEFAULT_BCRYPT_COST})"
            )));
        }
        Ok(())
    };
    let bcrypt_spend = spend.clone();
    tera.register_filter("bcrypt", move |v: &Value, args: &HashMap<String, Value>| {
        let cost = bcrypt_cost(args, "bcrypt")?;
        bcrypt_spend(cost, "bcrypt")?;
        bcrypt_hash(&bytes_of(v, "bcrypt")?, cost, "bcrypt").map(Value::String)
    });
    tera.register_filter("htpasswd", move |v: &Value, args: &HashMap<String, Value>| {
        let cost = bcrypt_cost(args, "htpasswd")?;
        let user = args
            .get("user")
            .or_else(|| args.get("username"))
            .and_then(Value::as_str)
            .ok_or_else(|| tera::Error::msg("filter htpasswd needs a `user` argument: {{ pass.value | htpasswd(user=\"admin\") }}"))?;
        if user.contains(':') || user.contains('\n') {
            return Err(tera::Error::msg("filter htpasswd: user must not contain ':' or a newline"));
        }
        spend(cost, "htpasswd")?;
        let hash = bcrypt_hash(&bytes_of(v, "htpasswd")?, cost, "htpasswd")?;
        Ok(Value::String(format!("{user}:{hash}")))
    });
}

/// RFC 3986 unreserved characters stay; everything else is encoded, so the
/// result is safe in any URL component (userinfo, path segment, query).
const URL_COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn bytes_of(v: &Value, filter: &str) -> tera::Result<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(tera::Error::msg(format!(
            "filter {filter} expects a string, got {}",
            kind_of(v)
        ))),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn bcrypt_cost(args: &HashMap<String, Value>, filter: &str) -> tera::Result<u32> {
    match args.get("cost") {
        None => Ok(DEFAULT_BCRYPT_COST),
        Some(v) => v
            .as_u64()
            .and_then(|c| u32::try_from(c).ok())
            .filter(|c| (4..=MAX_BCRYPT_COST).contains(c))
            .ok_or_else(|| {
                tera::Error::msg(format!(
                    "filter {filter}: cost must be a whole number from 4 to {MAX_BCRYPT_COST}"
                ))
            }),
    }
}

fn bcrypt_hash(input: &str, cost: u32, filter: &str) -> tera::Result<String> {
    if input.len() > 72 {
        return Err(tera::Error::msg(format!(
            "filter {filter}: bcrypt uses only the first 72 bytes of its input; this value is {} bytes",
            input.len()
        )));
    }
    // `$2y$`, as `basic_auth` and Apache's htpasswd write it.
    bcrypt::hash_with_result(input, cost)
        .map(|h| h.format_for_version(bcrypt::Version::TwoY))
        .map_err(|_| tera::Error::msg(format!("filter {filter}: hashing failed")))
}

/// Shannon entropy of the string, in bits, over its own symbol frequencies
/// (per-symbol entropy × length), rounded to two decimals.
pub fn entropy_bits(s: &str) -> f64 {
    let mut counts: HashMap<char, usize> = HashMap::new();
    let mut n = 0usize;
    for c in s.chars() {
        *counts.entry(c).or_default() += 1;
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    let n_f = n as f64;
    let per_symbol: f64 = counts
        .values()
        .map(|&c| {
            let p = c as f64 / n_f;
            -p * p.log2()
        })
        .sum();
    (per_symbol * n_f * 100.0).round() / 100.0
}

/// `range` with a budget shared by every call of one render: nested loops
/// cannot multiply past [`MAX_RANGE_ELEMENTS`].
fn bounded_range(args: &HashMap<String, Value>, budget: &AtomicU64) -> tera::Result<Value> {
    let num = |key: &str, default: Option<u64>| -> tera::Result<u64> {
        match args.get(key) {
            Some(v) => v.as_u64().ok_or_else(|| {
                tera::Error::msg(format!(
                    "function range: `{key}` must be a non-negative whole number"
                ))
            }),
            None => {
                default.ok_or_else(|| tera::Error::msg("function range needs an `end` argument"))
            }
        }
    };
    let start = num("start", Some(0))?;
    let end = num("end", None)?;
    let step = num("step_by", Some(1))?.max(1);
    if start > end {
        return Err(tera::Error::msg(
            "function range: start is greater than end",
        ));
    }
    let count = (end - start).div_ceil(step);
    let spent = budget.fetch_add(count, Ordering::Relaxed);
    if spent.saturating_add(count) > MAX_RANGE_ELEMENTS as u64 {
        return Err(tera::Error::msg(format!(
            "function range: {} elements in all is more than the limit of {MAX_RANGE_ELEMENTS} per template",
            spent.saturating_add(count)
        )));
    }
    Ok(Value::Array(
        (start..end)
            .step_by(step as usize)
            .map(Value::from)
            .collect(),
    ))
}

/// What a template sees.
#[derive(Default)]
pub struct RenderContext {
    vars: Map<String, Value>,
}

impl RenderContext {
    /// The `secret` object: the incoming Secret's identity and metadata.
    pub fn new(
        name: &str,
        generate_name: &str,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        annotations: &BTreeMap<String, String>,
    ) -> Self {
        let mut vars = Map::new();
        vars.insert(
            "secret".into(),
            serde_json::json!({
                "name": name,
                "generateName": generate_name,
                "namespace": namespace,
                "labels": labels,
                "annotations": annotations,
            }),
        );
        Self { vars }
    }

    /// Makes a generator's outputs visible as `{{ name.field }}`.
    pub fn insert(&mut self, name: &str, outputs: &crate::secret::Outputs) {
        self.vars
            .insert(name.to_owned(), Value::Object(outputs.as_map().clone()));
    }

    fn tera_context(&self) -> tera::Result<Context> {
        Context::from_value(Value::Object(self.vars.clone()))
    }
}

impl Drop for RenderContext {
    fn drop(&mut self) {
        fn wipe(v: &mut Value) {
            match v {
                Value::String(s) => zeroize::Zeroize::zeroize(s),
                Value::Array(a) => a.iter_mut().for_each(wipe),
                Value::Object(o) => o.values_mut().for_each(wipe),
                _ => {}
            }
        }
        self.vars.values_mut().for_each(wipe);
    }
}

/// Renders one template against the context. The error text is Tera's
/// chain of causes (naming the line and the missing variable or failing
/// filter); callers scrub it of generated values before showing it.
pub fn render(template: &str, ctx: &RenderContext) -> Result<String, String> {
    let parsed = parse_cached(template)?;
    let mut tera = PROTOTYPE.clone();
    let budget = AtomicU64::new(0);
    tera.register_function("range", move |args: &HashMap<String, Value>| {
        bounded_range(args, &budget)
    });
    register_bcrypt(&mut tera, Arc::default());
    // Parsed once (parsing is most of a render's cost), then added as
    // `add_raw_template` would add it.
    tera.templates.insert(TEMPLATE_NAME.to_owned(), parsed);
    tera.build_inheritance_chains().map_err(|e| describe(&e))?;
    let context = ctx.tera_context().map_err(|e| describe(&e))?;
    let out = tera
        .render(TEMPLATE_NAME, &context)
        .map_err(|e| describe(&e))?;
    if out.len() > MAX_OUTPUT_BYTES {
        return Err(format!(
            "rendered output is {} bytes, more than the limit of {MAX_OUTPUT_BYTES}",
            out.len()
        ));
    }
    Ok(out)
}

/// True when rendering `template` may take long enough to hold up an async
/// worker (bcrypt hashing, loops): such templates render on the bounded key
/// generation pool, where the review's deadline still answers in time.
pub fn may_be_slow(template: &str) -> bool {
    ["bcrypt", "htpasswd", "range"]
        .iter()
        .any(|word| template.contains(word))
}

/// Parses a template without rendering it: syntax errors and the features
/// we refuse (macros, which can recurse without bound; extends/import).
pub fn check_syntax(template: &str) -> Result<(), String> {
    parse(template).map(drop)
}

/// Parsed templates by their text: the same few templates come back on
/// every review of the same manifests, and parsing is the dearest part of a
/// render. Bounded by the text it holds; emptied when full.
static PARSED: LazyLock<std::sync::Mutex<ParseCache>> = LazyLock::new(Default::default);

/// Most template text the parse cache holds, in bytes.
const PARSE_CACHE_BYTES: usize = 4 * 1024 * 1024;

#[derive(Default)]
struct ParseCache {
    templates: HashMap<String, Arc<tera::Template>>,
    bytes: usize,
}

fn parse_cached(template: &str) -> Result<tera::Template, String> {
    let cache = |f: &mut dyn FnMut(&mut ParseCache)| {
        if let Ok(mut guard) = PARSED.lock() {
            f(&mut guard);
        }
    };
    let mut hit = None;
    cache(&mut |c| hit = c.templates.get(template).cloned());
    if let Some(parsed) = hit {
        return Ok(tera::Template::clone(&parsed));
    }
    let parsed = Arc::new(parse(template)?);
    cache(&mut |c| {
        if c.bytes + template.len() > PARSE_CACHE_BYTES {
            c.templates.clear();
            c.bytes = 0;
        }
        if template.len() <= PARSE_CACHE_BYTES {
            c.bytes += template.len();
            c.templates.insert(template.to_owned(), Arc::clone(&parsed));
        }
    });
    Ok(tera::Template::clone(&parsed))
}

fn parse(template: &str) -> Result<tera::Template, String> {
    let parsed = tera::Template::new(TEMPLATE_NAME, None, template).map_err(|e| describe(&e))?;
    if !parsed.macros.is_empty() || !parsed.imported_macro_files.is_empty() {
        return Err("macros are not supported in templates".into());
    }
    if parsed.parent.is_some() {
        return Err("extends is not supported in templates".into());
    }
    Ok(parsed)
}

fn describe(e: &tera::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts
        .into_iter()
        .map(|p| {
            p.replace(&format!("'{TEMPLATE_NAME}'"), "the template")
                .replace(TEMPLATE_NAME, "the template")
        })
        .collect::<Vec<_>>()
        .join(": ")
}

/// Removes every occurrence of the given secret strings (and their JSON-escaped
/// forms) from a message.
pub fn scrub(message: &str, secrets: &[&str]) -> String {
    let mut out = message.to_owned();
    for s in secrets {
        if s.len() < 4 {
            continue;
        }
        out = out.replace(s, "<redacted>");
        if let Ok(quoted) = serde_json::to_string(s) {
            let inner = &quoted[1..quoted.len() - 1];
            if inner != *s {
                out = out.replace(inner, "<redacted>");
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::secret::Outputs;

    fn ctx() -> RenderContext {
        let mut c = RenderContext::new("db", "", "shop", &BTreeMap::new(), &BTreeMap::new());
        c.insert("pass", &Outputs::new().with("value", "p@ss:w/rd#1"));
        c
    }

    #[test]
    fn filters_work() {
        let out = render(
            "{{ pass.value | urlencode }} {{ 'a-b-c' | removeHyphens }} {{ 'hi' | toHex }} {{ 'hi' | b64encode }} {{ 'aGk=' | b64decode }} {{ 'A' | toBinary }} {{ pass.value | json }}",
            &ctx(),
        )
        .unwrap();
        assert_eq!(
            out,
            "p%40ss%3Aw%2Frd%231 abc 6869 aGk= hi 01000001 \"p@ss:w/rd#1\""
        );
        let out = render("{{ 'abc' | sha256 }}", &ctx()).unwrap();
        assert_eq!(
            out,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let out = render("{{ pass.value | htpasswd(user='admin', cost=4) }}", &ctx()).unwrap();
        let hash = out.strip_prefix("admin:").unwrap();
        assert!(bcrypt::verify("p@ss:w/rd#1", hash).unwrap());
    }

    #[test]
    fn environment_and_recursion_are_refused() {
        let err = render("{{ get_env(name='HOME') }}", &ctx()).unwrap_err();
        assert!(err.contains("get_env is disabled"), "{err}");
        let err = render(
            "{% macro f() %}{{ self::f() }}{% endmacro %}{{ self::f() }}",
            &ctx(),
        )
        .unwrap_err();
        assert!(err.contains("macros"), "{err}");
        let err = render("{% for i in range(end=100000000) %}x{% endfor %}", &ctx()).unwrap_err();
        assert!(err.contains("limit"), "{err}");
        // The limit holds for the whole template, not per call: nested
        // loops of 200 each (40,000 in all) are refused; 100 in all is fine.
        let nested =
            "{% for i in range(end=200) %}{% for j in range(end=200) %}x{% endfor %}{% endfor %}";
        let err = render(nested, &ctx()).unwrap_err();
        assert!(err.contains("in all"), "{err}");
        // bcrypt work is bounded per template too.
        let hashes = "{% for i in range(end=64) %}{{ pass.value | bcrypt(cost=4) }}{% endfor %}";
        assert!(
            render(hashes, &ctx()).is_ok(),
            "64 hashes of cost 4 are cheap"
        );
        // A budget that is all but spent refuses the next hash before hashing.
        for filter in ["bcrypt(cost=4)", "htpasswd(user='a', cost=4)"] {
            let mut tera = PROTOTYPE.clone();
            let spent = BCRYPT_WORK_BUDGET - (1 << 4) + 1;
            register_bcrypt(&mut tera, Arc::new(AtomicU64::new(spent)));
            tera.add_raw_template("t", &format!("{{{{ pass.value | {filter} }}}}"))
                .unwrap();
            let err = describe(
                &tera
                    .render("t", &ctx().tera_context().unwrap())
                    .unwrap_err(),
            );
            assert!(err.contains("limit per template"), "{filter}: {err}");
        }
        let small =
            "{% for i in range(end=10) %}{% for j in range(end=9) %}x{% endfor %}{% endfor %}";
        assert_eq!(render(small, &ctx()).unwrap().len(), 90);
    }

    #[test]
    fn missing_fields_are_named() {
        let err = render("password: {{ pass.vaule }}", &ctx()).unwrap_err();
        assert!(err.contains("pass.vaule"), "{err}");
        assert!(!err.contains("p@ss"), "{err}");
    }

    #[test]
    fn entropy_of_uniform_string() {
        assert_eq!(entropy_bits("abcd"), 8.0);
        assert_eq!(entropy_bits("aaaa"), 0.0);
    }

    #[test]
    fn scrub_removes_values() {
        assert_eq!(
            scrub("bad value s3cr3t\"x here", &["s3cr3t\"x"]),
            "bad value <redacted> here"
        );
        assert_eq!(scrub("esc s3cr3t\\\"x", &["s3cr3t\"x"]), "esc <redacted>");
    }
}
