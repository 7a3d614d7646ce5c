//! The `s3` store on moto's S3 (moto in server mode, started per test on a
//! free port): the shared store contract, moto's `If-None-Match: *`, then
//! CONTRACT §4 through the whole review pipeline, encryption headers, and
//! the settings. Values are compared with `assert!(a == b)` so a failure
//! never prints them.
#![cfg(feature = "s3")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLocationConstraint, CreateBucketConfiguration, ServerSideEncryption,
};
use base64::Engine as _;
use common::moto::{Moto, REGION, free_port};
use common::*;
use secret_santa::config::AdminConfig;
use secret_santa::secret::SecretValue;
use secret_santa::store::s3::S3Store;
use secret_santa::store::{CreateOutcome, Ownership, SecretStore, Stores, WriteOptions};
use secret_santa::{App, Reviewer};
use serde_json::{Value, json};

const BUCKET: &str = "cluster-secrets";
/// The SSE-C key the `s3-ssec` store reads from its key file.
const SSE_C_KEY: [u8; 32] = [42; 32];

/// moto, a request-recording proxy in front of it, credential and SSE-C
/// key files, and the webhook built from an admin config pointing at them.
struct World {
    _moto: Moto,
    proxy: RecordingProxy,
    closed_port: u16,
    _files: tempfile::TempDir,
    /// The webhook under test and its admin config.
    hook: Webhook,
    s3: aws_sdk_s3::Client,
}

impl std::ops::Deref for World {
    type Target = Webhook;

    fn deref(&self) -> &Webhook {
        &self.hook
    }
}

fn config_yaml(endpoint: &str, proxy: &str, closed: &str, files: &std::path::Path) -> String {
    let auth = format!(
        "{{ method: accessKey, accessKeyIdFile: {}, secretAccessKeyFile: {} }}",
        files.join("id").display(),
        files.join("secret").display()
    );
    let common = format!(
        "    region: {REGION}\n    bucket: {BUCKET}\n    forcePathStyle: true\n    auth: {auth}\n    namespaces: [\"shop\"]\n"
    );
    format!(
        r#"
clusterId: test-cluster
limits: {{ requestDeadline: 6s }}
stores:
  - name: s3
    type: s3
    endpoint: {endpoint}
{common}    prefix: "k8s/"
    deadline: 3s
    tags: {{ team: platform }}
  - name: s3-sse
    type: s3
    endpoint: {endpoint}
    serverSideEncryption: sse-s3
{common}    prefix: "sse/"
    deadline: 3s
  - name: s3-kms
    type: s3
    endpoint: {endpoint}
    serverSideEncryption: sse-kms
    kmsKeyId: alias/secret-santa
{common}    prefix: "kms/"
    deadline: 3s
  - name: s3-ssec
    type: s3
    endpoint: {proxy}
    serverSideEncryption: sse-c
    sseCustomerKeyFile: {ssec}
{common}    prefix: "ssec/"
    deadline: 3s
  - name: s3-nobucket
    type: s3
    endpoint: {endpoint}
    region: {REGION}
    bucket: no-such-bucket
    forcePathStyle: true
    auth: {auth}
    namespaces: ["shop"]
    deadline: 3s
  - name: s3-down
    type: s3
    endpoint: {closed}
{common}    deadline: 1s
"#,
        ssec = files.join("sse-c.key").display(),
    )
}

fn credentials() -> Credentials {
    Credentials::new("test", "test", None, None, "moto")
}

impl World {
    async fn new() -> World {
        let moto = Moto::start();
        let proxy = RecordingProxy::start(moto.port);
        let closed_port = free_port();
        let files = tempfile::tempdir().unwrap();
        std::fs::write(files.path().join("id"), "test\n").unwrap();
        std::fs::write(files.path().join("secret"), "test\n").unwrap();
        std::fs::write(
            files.path().join("sse-c.key"),
            base64::engine::general_purpose::STANDARD.encode(SSE_C_KEY) + "\n",
        )
        .unwrap();
        let yaml = config_yaml(
            &moto.endpoint,
            &proxy.endpoint,
            &format!("http://127.0.0.1:{closed_port}"),
            files.path(),
        );
        let config = AdminConfig::parse(&yaml).unwrap();
        let stores = Stores::from_config(&config).await.unwrap();
        let app = App::new(Reviewer::new(config.clone(), stores), 3 * 1024 * 1024);
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::Config::builder()
                .behavior_version_latest()
                .region(Region::new(REGION))
                .endpoint_url(&moto.endpoint)
                .force_path_style(true)
                .credentials_provider(credentials())
                .build(),
        );
        s3.create_bucket()
            .bucket(BUCKET)
            .create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(REGION))
                    .build(),
            )
            .send()
            .await
            .unwrap();
        World {
            _moto: moto,
            proxy,
            closed_port,
            _files: files,
            hook: Webhook { config, app },
            s3,
        }
    }

    /// An object's body and user metadata, read directly; `None` if absent.
    async fn get(&self, key: &str) -> Option<(String, BTreeMap<String, String>)> {
        match self.s3.get_object().bucket(BUCKET).key(key).send().await {
            Ok(out) => {
                let meta = out
                    .metadata()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                let body = out.body.collect().await.unwrap().into_bytes();
                Some((String::from_utf8(body.to_vec()).unwrap(), meta))
            }
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => None,
            Err(e) => panic!("GetObject {key}: {e:?}"),
        }
    }

    async fn head(&self, key: &str) -> aws_sdk_s3::operation::head_object::HeadObjectOutput {
        self.s3
            .head_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .unwrap()
    }

    /// Keys in the bucket.
    async fn keys(&self) -> Vec<String> {
        self.s3
            .list_objects_v2()
            .bucket(BUCKET)
            .send()
            .await
            .unwrap()
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
    }
}

fn mirrored(mirror: &str) -> Value {
    SecretDoc::new("db")
        .labelled()
        .autogenerate("password, token")
        .annotate("secret-santa.io/mirror", mirror)
        .value()
}

fn json_map(text: &str) -> BTreeMap<String, String> {
    serde_json::from_str(text).expect("the stored value is a JSON object of strings")
}

fn assert_owned(meta: &BTreeMap<String, String>, what: &str) {
    for (k, v) in [
        ("secret-santa-managed-by", "secret-santa"),
        ("secret-santa-cluster", "test-cluster"),
        ("secret-santa-namespace", "shop"),
        ("secret-santa-name", "db"),
    ] {
        assert_eq!(meta.get(k).map(String::as_str), Some(v), "{what}: {k}");
    }
}

fn owner(name: &str) -> Ownership {
    Ownership {
        cluster_id: "test-cluster".into(),
        namespace: "shop".into(),
        name: name.into(),
        key_set: "k".into(),
    }
}

// ---------------------------------------------------------------------------
// A loopback proxy in front of moto that records each request's head (the
// request line and headers), to see what the store sends, and can answer
// chosen requests with an S3 error instead. One request per connection.

struct RecordingProxy {
    port: u16,
    endpoint: String,
    heads: Arc<Mutex<Vec<String>>>,
    faults: Arc<Mutex<Vec<Fault>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

struct Fault {
    method: &'static str,
    status: u16,
    code: &'static str,
    remaining: usize,
}

impl RecordingProxy {
    fn start(upstream: u16) -> RecordingProxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let heads: Arc<Mutex<Vec<String>>> = Default::default();
        let faults: Arc<Mutex<Vec<Fault>>> = Default::default();
        let stop: Arc<std::sync::atomic::AtomicBool> = Default::default();
        let (h, f, s) = (heads.clone(), faults.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (h, f) = (h.clone(), f.clone());
                std::thread::spawn(move || {
                    let _ = forward(conn, upstream, &h, &f);
                });
            }
        });
        RecordingProxy {
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            heads,
            faults,
            stop,
        }
    }

    /// The next `times` requests with `method` get `status` and the S3
    /// error `code` (an XML error body, as S3 sends it).
    fn fail(&self, method: &'static str, status: u16, code: &'static str, times: usize) {
        self.faults.lock().unwrap().push(Fault {
            method,
            status,
            code,
            remaining: times,
        });
    }

    /// Heads of the requests whose request line starts with `method`.
    fn requests(&self, method: &str) -> Vec<String> {
        self.heads
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.starts_with(&format!("{method} ")))
            .cloned()
            .collect()
    }
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The head with any Connection header replaced by `Connection: close`.
fn closing(head: &str) -> String {
    let mut out = String::new();
    for line in head.trim_end_matches("\r\n").split("\r\n") {
        if line
            .split_once(':')
            .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("connection"))
        {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out
}

fn forward(
    mut client: TcpStream,
    upstream: u16,
    heads: &Mutex<Vec<String>>,
    faults: &Mutex<Vec<Fault>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = client.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = client.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    heads.lock().unwrap().push(head.clone());
    let injected = faults
        .lock()
        .unwrap()
        .iter_mut()
        .find(|f| f.remaining > 0 && head.starts_with(&format!("{} ", f.method)))
        .map(|f| {
            f.remaining -= 1;
            (f.status, f.code)
        });
    if let Some((status, code)) = injected {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
             <Message>injected by the test proxy</Message><RequestId>1</RequestId></Error>"
        );
        write!(
            client,
            "HTTP/1.1 {status} Injected\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )?;
        return client.flush();
    }
    let mut up = TcpStream::connect((Ipv4Addr::LOCALHOST, upstream))?;
    up.write_all(closing(&head).as_bytes())?;
    up.write_all(&body)?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(answer.len(), |i| i + 4);
    let answer_head = String::from_utf8_lossy(&answer[..split]).into_owned();
    client.write_all(closing(&answer_head).as_bytes())?;
    client.write_all(&answer[split..])?;
    client.flush()
}

// ---------------------------------------------------------------------------
// The shared contract, and what the create-only write relies on.

#[tokio::test]
async fn s3_satisfies_the_store_contract() {
    let w = World::new().await;
    common::contract::run(w.store("s3").await, "contract").await;
}

#[tokio::test]
async fn moto_honours_if_none_match_star_with_412() {
    let w = World::new().await;
    let put = |body: &'static str| {
        w.s3.put_object()
            .bucket(BUCKET)
            .key("conditional")
            .body(ByteStream::from_static(body.as_bytes()))
            .if_none_match("*")
            .send()
    };
    put("first").await.unwrap();
    let err = put("second").await.unwrap_err();
    let raw = err.raw_response().map(|r| r.status().as_u16());
    assert_eq!(raw, Some(412), "{err:?}");
    assert_eq!(
        aws_sdk_s3::error::ProvideErrorMetadata::code(&err),
        Some("PreconditionFailed")
    );
    assert!(w.get("conditional").await.unwrap().0 == "first");
}

#[tokio::test]
async fn create_if_absent_sends_if_none_match_and_reads_back_on_412() {
    let w = World::new().await;
    // The SSE-C store goes through the recording proxy.
    let store = w.store("s3-ssec").await;
    let name = store.remote_name("ssec/shop/db").unwrap();
    let options = WriteOptions {
        content_type: "application/json",
        ..Default::default()
    };
    let first = SecretValue::new(br#"{"password":"first"}"#.to_vec());
    let second = SecretValue::new(br#"{"password":"second"}"#.to_vec());
    assert!(matches!(
        store
            .create_if_absent(&name, &first, &owner("db"), &options)
            .await
            .unwrap(),
        CreateOutcome::Created { .. }
    ));
    // Someone else's create lands between our read and our write: the
    // conditional PUT is refused (412) and the object is read back.
    match store
        .create_if_absent(&name, &second, &owner("other"), &options)
        .await
        .unwrap()
    {
        CreateOutcome::Exists(entry) => {
            assert!(entry.payload == first, "the first value stays");
            assert!(entry.owner().unwrap().same_secret(&owner("db")));
        }
        CreateOutcome::Created { .. } => panic!("create-if-absent overwrote an object"),
    }
    let puts = w.proxy.requests("PUT");
    assert_eq!(puts.len(), 2, "two conditional PUTs");
    for head in &puts {
        assert_eq!(header(head, "if-none-match"), Some("*"), "{head}");
    }
    // `put` (regenerate) is unconditional.
    store
        .put(&name, &second, &owner("db"), &options)
        .await
        .unwrap();
    let puts = w.proxy.requests("PUT");
    assert_eq!(header(&puts[2], "if-none-match"), None);
    assert!(store.read(&name).await.unwrap().unwrap().payload == second);
}

#[tokio::test]
async fn s3_errors_map_to_store_errors_naming_bucket_and_key() {
    let w = World::new().await;
    let store = w.store("s3-ssec").await;
    let name = store.remote_name("ssec/shop/db").unwrap();
    let value = SecretValue::new(br#"{"password":"p4ssw0rd-value"}"#.to_vec());
    let options = WriteOptions::default();

    w.proxy.fail("GET", 403, "AccessDenied", 1);
    let err = store.read(&name).await.unwrap_err();
    assert_eq!(err.reason(), "permission_denied", "{err}");
    assert!(
        err.to_string()
            .contains("GetObject s3://cluster-secrets/ssec/shop/db: AccessDenied"),
        "{err}"
    );

    // Throttled twice: both attempts fail.
    w.proxy.fail("PUT", 503, "SlowDown", 2);
    let err = store
        .create_if_absent(&name, &value, &owner("db"), &options)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "throttled", "{err}");
    assert!(
        err.to_string()
            .contains("PutObject s3://cluster-secrets/ssec/shop/db: SlowDown")
    );
    assert!(!err.to_string().contains("p4ssw0rd"));

    // Throttled once: the retry succeeds.
    w.proxy.fail("PUT", 503, "SlowDown", 1);
    assert!(matches!(
        store
            .create_if_absent(&name, &value, &owner("db"), &options)
            .await
            .unwrap(),
        CreateOutcome::Created { .. }
    ));

    // 409: another conditional write is in flight; what landed is read back.
    w.proxy.fail("PUT", 409, "ConditionalRequestConflict", 1);
    let other = SecretValue::new(br#"{"password":"other"}"#.to_vec());
    match store
        .create_if_absent(&name, &other, &owner("db"), &options)
        .await
        .unwrap()
    {
        CreateOutcome::Exists(entry) => assert!(entry.payload == value),
        CreateOutcome::Created { .. } => panic!("a 409 is not a create"),
    }

    w.proxy.fail("PUT", 400, "InvalidArgument", 1);
    let err = store
        .put(&name, &other, &owner("db"), &options)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "invalid", "{err}");
}

// ---------------------------------------------------------------------------
// Backend specifics.

#[tokio::test]
async fn object_keys_binary_bodies_and_metadata() {
    let w = World::new().await;
    let s3 = w.store("s3").await;
    assert!(s3.remote_name("k8s/shop/db-1_2.x!*'()").is_ok());
    for (bad, why) in [
        ("shop/db name", "not allowed"),
        ("shop/db+1", "not allowed"),
        ("shop/ü", "not allowed"),
        ("/shop/db", "segment"),
        ("shop//db", "segment"),
        ("shop/db/", "segment"),
        ("shop/../db", "segment"),
    ] {
        let err = s3.remote_name(bad).unwrap_err();
        assert!(err.contains(why), "{bad}: {err}");
    }
    assert!(
        s3.remote_name(&"a".repeat(1025))
            .unwrap_err()
            .contains("1024")
    );

    // Non-UTF-8 bodies read back byte for byte, with the content type.
    let name = s3.remote_name("shop/bin").unwrap();
    let raw = SecretValue::new(vec![0, 159, 146, 150, 255]);
    let options = WriteOptions {
        content_type: "application/octet-stream",
        tags: [("team".to_string(), "payments".to_string())].into(),
        ..Default::default()
    };
    s3.create_if_absent(&name, &raw, &owner("bin"), &options)
        .await
        .unwrap();
    assert!(s3.read(&name).await.unwrap().unwrap().payload == raw);
    let head = w.head("shop/bin").await;
    assert_eq!(head.content_type(), Some("application/octet-stream"));
    let meta = head.metadata().unwrap();
    assert_eq!(
        meta.get("secret-santa-name").map(String::as_str),
        Some("bin")
    );
    assert_eq!(meta.get("team").map(String::as_str), Some("payments"));

    // Tags S3 metadata cannot carry are refused before anything is sent.
    let bad = WriteOptions {
        tags: [("Team Name".to_string(), "x".to_string())].into(),
        ..options.clone()
    };
    let err = s3
        .create_if_absent(
            &s3.remote_name("shop/bad").unwrap(),
            &raw,
            &owner("bad"),
            &bad,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("\"Team Name\""), "{err}");
    let err = s3
        .create_if_absent(
            &s3.remote_name("shop/bad").unwrap(),
            &raw,
            &owner("bad"),
            &WriteOptions {
                kms_key_id: Some("alias/x".into()),
                ..options
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("kmsKeyId"), "{err}");
    assert!(w.get("shop/bad").await.is_none());
}

#[tokio::test]
async fn a_missing_bucket_is_named_in_the_denial() {
    let w = World::new().await;
    let (answer, _) = w.create(&mirrored("- store: s3-nobucket\n")).await;
    assert!(!allowed(&answer));
    let msg = message(&answer);
    assert!(
        msg.contains("store \"s3-nobucket\"")
            && msg.contains("GetObject s3://no-such-bucket/shop/db")
            && msg.contains("NoSuchBucket"),
        "{msg}"
    );
}

// ---------------------------------------------------------------------------
// Through the review pipeline.

#[tokio::test]
async fn fresh_create_fills_the_secret_and_the_bucket_holds_it_owned() {
    let w = World::new().await;
    let (answer, result) = w.create(&mirrored("- store: s3\n")).await;
    assert!(allowed(&answer), "{answer}");
    let secret = as_secret(&result);
    let data = data_of(&secret);
    assert_eq!(data.len(), 2);
    let (body, meta) = w
        .get("k8s/shop/db")
        .await
        .expect("the bucket holds k8s/shop/db");
    assert!(
        json_map(&body) == data,
        "the object holds the Secret's values"
    );
    assert_owned(&meta, "object metadata");
    assert_eq!(
        meta.get("team").map(String::as_str),
        Some("platform"),
        "the store's extra tags"
    );
    assert_eq!(
        w.head("k8s/shop/db").await.content_type(),
        Some("application/json")
    );
    assert_eq!(annotations_of(&secret)["secret-santa.io/mirrored-to"], "s3");
    assert_eq!(w.keys().await, vec!["k8s/shop/db".to_string()]);
}

#[tokio::test]
async fn a_retried_create_converges_on_the_stored_value() {
    let w = World::new().await;
    let doc = mirrored("- store: s3\n");
    let (a1, r1) = w.create(&doc).await;
    assert!(allowed(&a1), "{a1}");
    let etag = w.head("k8s/shop/db").await.e_tag().map(str::to_owned);
    // The apiserver retries, or the Secret was deleted and re-created.
    let (a2, r2) = w.create(&doc).await;
    assert!(allowed(&a2), "{a2}");
    let first = data_of(&as_secret(&r1));
    assert!(
        first == data_of(&as_secret(&r2)),
        "the retry admits the stored values, not new ones"
    );
    assert_eq!(
        w.head("k8s/shop/db").await.e_tag().map(str::to_owned),
        etag,
        "the object was not rewritten"
    );
    assert!(json_map(&w.get("k8s/shop/db").await.unwrap().0) == first);
}

#[tokio::test]
async fn unowned_objects_are_refused_and_left_alone() {
    let w = World::new().await;
    w.s3.put_object()
        .bucket(BUCKET)
        .key("k8s/shop/db")
        .body(ByteStream::from_static(br#"{"password":"theirs"}"#))
        .send()
        .await
        .unwrap();
    let etag = w.head("k8s/shop/db").await.e_tag().map(str::to_owned);
    let (answer, _) = w.create(&mirrored("- store: s3\n")).await;
    assert!(!allowed(&answer), "{}", shown(&answer));
    let msg = message(&answer);
    assert!(
        msg.contains("store \"s3\"")
            && msg.contains("k8s/shop/db")
            && msg.contains("already exists")
            && msg.contains("adoption"),
        "{msg}"
    );
    assert!(
        !msg.contains("theirs"),
        "the message does not show the value"
    );
    let (body, meta) = w.get("k8s/shop/db").await.unwrap();
    assert!(body == r#"{"password":"theirs"}"#);
    assert!(meta.is_empty(), "no metadata added");
    assert_eq!(w.head("k8s/shop/db").await.e_tag().map(str::to_owned), etag);
}

#[tokio::test]
async fn a_store_that_is_down_is_denied_within_its_deadline() {
    let w = World::new().await;
    let started = Instant::now();
    let (answer, _) = w.create(&mirrored("- store: s3-down\n")).await;
    let took = started.elapsed();
    assert!(!allowed(&answer));
    let msg = message(&answer);
    let expected = format!("connection refused at http://127.0.0.1:{}", w.closed_port);
    assert!(
        msg.contains("store \"s3-down\"")
            && msg.contains("not reachable")
            && msg.contains(&format!("GetObject s3://{BUCKET}/shop/db"))
            && msg.contains(&expected),
        "{msg}"
    );
    assert!(
        took < Duration::from_millis(1500),
        "denied after {took:?}, the store's deadline is 1s"
    );
    assert!(w.keys().await.is_empty());
}

#[tokio::test]
async fn dry_run_writes_nothing() {
    let w = World::new().await;
    let doc = mirrored("- store: s3\n- store: s3-sse\n");
    let answer = w.send(&review("CREATE", Some(&doc), None, true)).await;
    assert!(allowed(&answer), "{answer}");
    assert!(
        warnings(&answer).iter().any(|w| w.contains("not written")),
        "{}",
        shown(&answer)
    );
    assert!(w.keys().await.is_empty(), "no object written");
}

#[tokio::test]
async fn regenerate_replaces_the_object_and_keeps_it_owned() {
    let w = World::new().await;
    let (answer, old) = w.create(&mirrored("- store: s3\n")).await;
    assert!(allowed(&answer), "{answer}");
    let before = data_of(&as_secret(&old));
    let mut new = old.clone();
    new["metadata"]["annotations"]["secret-santa.io/regenerate"] = json!("password");
    let answer = w.send(&update(&new, &old)).await;
    assert!(allowed(&answer), "{answer}");
    let after = data_of(&as_secret(&apply(&new, &answer)));
    assert!(after["password"] != before["password"] && after["token"] == before["token"]);
    let (body, meta) = w.get("k8s/shop/db").await.unwrap();
    assert!(json_map(&body) == after, "the object follows the Secret");
    assert_owned(&meta, "metadata rewritten");
}

// ---------------------------------------------------------------------------
// Encryption.

#[tokio::test]
async fn sse_s3_and_sse_kms_headers_are_on_the_object() {
    let w = World::new().await;
    let (answer, _) = w
        .create(&mirrored("- store: s3-sse\n- store: s3-kms\n"))
        .await;
    assert!(allowed(&answer), "{answer}");
    let head = w.head("sse/shop/db").await;
    assert_eq!(
        head.server_side_encryption(),
        Some(&ServerSideEncryption::Aes256)
    );
    let head = w.head("kms/shop/db").await;
    assert_eq!(
        head.server_side_encryption(),
        Some(&ServerSideEncryption::AwsKms)
    );
    assert!(
        head.ssekms_key_id()
            .is_some_and(|k| k.contains("alias/secret-santa")),
        "{:?}",
        head.ssekms_key_id()
    );
    // The plain store sends no encryption header.
    let (answer, _) = w.create(&mirrored("- store: s3\n")).await;
    assert!(allowed(&answer), "{answer}");
    assert_eq!(w.head("k8s/shop/db").await.server_side_encryption(), None);
}

/// moto accepts SSE-C headers without encrypting, so this checks what is
/// sent: the key (base64) and its MD5 on every write and read.
#[tokio::test]
async fn sse_c_sends_the_customer_key_on_writes_and_reads() {
    let w = World::new().await;
    let (answer, result) = w.create(&mirrored("- store: s3-ssec\n")).await;
    assert!(allowed(&answer), "{answer}");
    let data = data_of(&as_secret(&result));
    assert!(json_map(&w.get("ssec/shop/db").await.unwrap().0) == data);
    let key = base64::engine::general_purpose::STANDARD.encode(SSE_C_KEY);
    let md5 = {
        use md5::Digest as _;
        base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(SSE_C_KEY))
    };
    let requests = [w.proxy.requests("GET"), w.proxy.requests("PUT")].concat();
    assert_eq!(requests.len(), 2, "one read, one conditional write");
    for head in &requests {
        assert_eq!(
            header(head, "x-amz-server-side-encryption-customer-algorithm"),
            Some("AES256")
        );
        assert!(
            header(head, "x-amz-server-side-encryption-customer-key") == Some(key.as_str()),
            "the key is sent"
        );
        assert_eq!(
            header(head, "x-amz-server-side-encryption-customer-key-md5"),
            Some(md5.as_str())
        );
    }
}

// ---------------------------------------------------------------------------
// Settings.

fn s3_store(extra: &str) -> String {
    format!("stores:\n  - name: s\n    type: s3\n    namespaces: [\"*\"]\n{extra}")
}

#[test]
fn s3_settings_are_validated_with_errors_naming_the_key() {
    let ok = AdminConfig::parse(&s3_store(
        "    bucket: b-1\n    region: ams3\n    provider: digitalocean\n    serverSideEncryption: none\n    auth: { method: default }\n",
    ));
    assert!(ok.is_ok(), "{ok:?}");
    for (extra, expected) in [
        ("    region: eu-west-1\n", "missing field `bucket`"),
        ("    bucket: b-1\n", "missing field `region`"),
        (
            "    bucket: b-1\n    region: eu-west-1\n    buckets: x\n",
            "unknown field `buckets`",
        ),
        ("    bucket: B_1\n    region: eu-west-1\n", "bucket \"B_1\""),
        ("    bucket: b-1\n    region: Europe\n", "region \"Europe\""),
        (
            "    bucket: b-1\n    region: eu-west-1\n    provider: wasabi\n",
            "unknown variant `wasabi`",
        ),
        (
            "    bucket: b-1\n    region: eu-west-1\n    provider: custom\n",
            "provider custom needs endpoint",
        ),
        (
            "    bucket: b-1\n    region: eu-west-1\n    endpoint: localhost:9000\n",
            "endpoint",
        ),
        (
            "    bucket: b-1\n    region: eu-west-1\n    serverSideEncryption: aes\n",
            "unknown variant `aes`",
        ),
        (
            "    bucket: b-1\n    region: ams3\n    provider: digitalocean\n    serverSideEncryption: sse-s3\n",
            "serverSideEncryption sse-s3 is not supported by provider digitalocean",
        ),
        (
            "    bucket: b-1\n    region: us-east-1\n    provider: linode\n    serverSideEncryption: sse-kms\n",
            "serverSideEncryption sse-kms is not supported by provider linode",
        ),
        (
            "    bucket: b-1\n    region: ewr1\n    provider: vultr\n    serverSideEncryption: sse-c\n    sseCustomerKeyFile: /k\n",
            "serverSideEncryption sse-c is not supported by provider vultr",
        ),
        (
            "    bucket: b-1\n    region: eu-west-1\n    serverSideEncryption: sse-c\n",
            "sse-c needs sseCustomerKeyFile",
        ),
        (
            "    bucket: b-1\n    region: eu-west-1\n    sseCustomerKeyFile: /k\n",
            "sseCustomerKeyFile is only used with serverSideEncryption sse-c",
        ),
        (
            "    bucket: b-1\n    region: eu-west-1\n    serverSideEncryption: sse-s3\n    kmsKeyId: alias/x\n",
            "kmsKeyId is only used with serverSideEncryption sse-kms",
        ),
        (
            "    bucket: b-1\n    region: eu-west-1\n    allowOverrides: [kmsKeyId]\n",
            "allowOverrides lists kmsKeyId",
        ),
        (
            "    bucket: b-1\n    region: eu-west-1\n    auth: { method: accessKey, accessKeyIdFile: /a }\n",
            "missing field `secretAccessKeyFile`",
        ),
    ] {
        let err = AdminConfig::parse(&s3_store(extra)).unwrap_err();
        assert!(
            err.contains(expected) && err.contains("stores[0] (s)"),
            "{extra}: {err}"
        );
    }
}

#[tokio::test]
async fn key_files_are_read_when_the_store_is_built() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.key");
    std::fs::write(&short, [1u8; 16]).unwrap();
    for (file, expected) in [
        (
            "/nonexistent/sse-c.key".to_string(),
            "sseCustomerKeyFile /nonexistent/sse-c.key".to_string(),
        ),
        (
            short.display().to_string(),
            format!("sseCustomerKeyFile {}: not 32 raw bytes", short.display()),
        ),
    ] {
        let config = AdminConfig::parse(&s3_store(&format!(
            "    bucket: b-1\n    region: eu-west-1\n    serverSideEncryption: sse-c\n    sseCustomerKeyFile: {file}\n"
        )))
        .unwrap();
        let err = Stores::from_config(&config)
            .await
            .err()
            .expect("no key, no store");
        assert!(err.contains("store s") && err.contains(&expected), "{err}");
    }
}

#[tokio::test]
async fn provider_presets_produce_the_endpoint() {
    for (extra, endpoint, path_style) in [
        (
            "    provider: digitalocean\n    region: ams3\n",
            "https://ams3.digitaloceanspaces.com",
            false,
        ),
        (
            "    provider: vultr\n    region: ewr1\n",
            "https://ewr1.vultrobjects.com",
            false,
        ),
        (
            "    provider: linode\n    region: us-east-1\n",
            "https://us-east-1.linodeobjects.com",
            false,
        ),
        (
            "    provider: aws\n    region: eu-west-1\n",
            "https://s3.eu-west-1.amazonaws.com",
            false,
        ),
        (
            // An explicit endpoint wins over the preset (private endpoints).
            "    provider: digitalocean\n    region: ams3\n    endpoint: https://spaces.internal:8443\n",
            "https://spaces.internal:8443",
            false,
        ),
        (
            "    provider: custom\n    region: us-east-1\n    endpoint: http://127.0.0.1:9000\n",
            "http://127.0.0.1:9000",
            true,
        ),
        (
            "    provider: vultr\n    region: ewr1\n    forcePathStyle: true\n",
            "https://ewr1.vultrobjects.com",
            true,
        ),
    ] {
        let config = AdminConfig::parse(&s3_store(&format!("    bucket: b-1\n{extra}"))).unwrap();
        let store = S3Store::build(&config.stores[0]).await.unwrap();
        assert_eq!(store.endpoint(), endpoint, "{extra}");
        assert_eq!(store.force_path_style(), path_style, "{extra}");
        assert_eq!(store.bucket(), "b-1");
        assert_eq!(store.kind(), "s3");
    }
}
