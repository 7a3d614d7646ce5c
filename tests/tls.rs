//! The real binary over real TLS: certificate checks at start, reviews over
//! keep-alive, certificate rotation without a failed request, drain on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::harness::{Client, Server, binary, make_certs, tls_connect};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn opted_in_review() -> serde_json::Value {
    create(
        &SecretDoc::new("api")
            .labelled()
            .autogenerate("password, api-token")
            .value(),
    )
}

#[tokio::test]
async fn serves_reviews_over_verified_tls() {
    let (dir, server) = Server::with_fresh_certs();
    assert_eq!(server.admin_get("/readyz").await, (200, "ok\n".into()));

    let mut client = Client::connect(server.webhook, &dir.path().join("ca.crt"))
        .await
        .unwrap();
    // Several reviews on one keep-alive connection.
    for _ in 0..5 {
        let review = opted_in_review();
        let (status, answer) = client.post_review(&review).await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(response(&answer)["uid"], review["request"]["uid"]);
        let secret = as_secret(&apply(&review["request"]["object"], &answer));
        let data = data_of(&secret);
        assert_eq!(data["password"].len(), 32);
        assert_eq!(data["api-token"].len(), 32);
    }
    // The captured apiserver requests too.
    for line in include_str!("fixtures/apiserver-1.20.2-reviews.jsonl").lines() {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap();
        let (status, answer) = client.post_review(&entry["review"]).await.unwrap();
        assert_eq!(status, 200);
        assert!(allowed(&answer));
    }
    let (_, metrics) = server.admin_get("/metrics").await;
    assert!(
        metrics.contains("secret_santa_reviews_total{operation=\"CREATE\",outcome=\"patched\"} 5"),
        "{metrics}"
    );
    // A client that does not trust our CA cannot talk to us.
    let other = tempfile::tempdir().unwrap();
    make_certs(other.path());
    assert!(
        tls_connect(server.webhook, &other.path().join("ca.crt"))
            .await
            .is_err()
    );
    // Each review is logged, as plain text when stderr is no terminal
    // (tests/leaks.rs checks no value ever is).
    let log = server.log();
    assert!(log.contains("secret_santa::webhook: allowed"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "no ANSI colour codes in a log file"
    );
}

/// Runs openssl (installed by `.ci/install.sh`) in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed (bash .ci/install.sh)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A root CA, an intermediate CA it signed, and a leaf for 127.0.0.1 the
/// intermediate signed, made by openssl with the leaf key in `leaf_key_args`
/// (`genrsa -traditional` → PKCS#1, `ecparam -genkey -noout` → SEC1).
/// Writes `root.crt`, `chain.crt` (leaf, then intermediate) and `leaf.key`.
fn openssl_chain(dir: &Path, leaf_key_args: &[&str]) {
    std::fs::write(
        dir.join("ca.ext"),
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("leaf.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "ecparam",
            "-genkey",
            "-name",
            "prime256v1",
            "-noout",
            "-out",
            "root.key",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "root.key",
            "-subj",
            "/CN=test root",
            "-days",
            "2",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            "root.crt",
        ],
    );
    openssl(
        dir,
        &[
            "ecparam",
            "-genkey",
            "-name",
            "prime256v1",
            "-noout",
            "-out",
            "int.key",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "int.key",
            "-subj",
            "/CN=test intermediate",
            "-out",
            "int.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "int.csr",
            "-CA",
            "root.crt",
            "-CAkey",
            "root.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ca.ext",
            "-out",
            "int.crt",
        ],
    );
    // `-out` right after the command: genrsa wants the size last.
    let mut key_args = leaf_key_args.to_vec();
    key_args.splice(1..1, ["-out", "leaf.key"]);
    openssl(dir, &key_args);
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "leaf.key",
            "-subj",
            "/CN=127.0.0.1",
            "-out",
            "leaf.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "int.crt",
            "-CAkey",
            "int.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
            "-out",
            "leaf.crt",
        ],
    );
    let chain = std::fs::read_to_string(dir.join("leaf.crt")).unwrap()
        + &std::fs::read_to_string(dir.join("int.crt")).unwrap();
    std::fs::write(dir.join("chain.crt"), chain).unwrap();
}

#[tokio::test]
async fn serves_pkcs1_and_sec1_keys_with_their_intermediate() {
    for (label, key_args, header) in [
        (
            "RSA PKCS#1",
            &["genrsa", "-traditional", "2048"][..],
            "-----BEGIN RSA PRIVATE KEY-----",
        ),
        (
            "EC SEC1",
            &["ecparam", "-genkey", "-name", "prime256v1", "-noout"],
            "-----BEGIN EC PRIVATE KEY-----",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        openssl_chain(dir.path(), key_args);
        let key = std::fs::read_to_string(dir.path().join("leaf.key")).unwrap();
        assert!(
            key.starts_with(header),
            "{label}: the key is in that format"
        );
        let server = Server::start(
            &dir.path().join("chain.crt"),
            &dir.path().join("leaf.key"),
            &[],
            dir.path(),
        );
        // The client trusts the root only: the handshake verifies because
        // the server sends the intermediate.
        let mut client = Client::connect(server.webhook, &dir.path().join("root.crt"))
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        let review = opted_in_review();
        let (status, answer) = client.post_review(&review).await.unwrap();
        assert_eq!(status, 200, "{label}");
        assert!(allowed(&answer), "{label}");
        // Without the intermediate, the same client is refused.
        drop(client);
        drop(server);
        let server = Server::start(
            &dir.path().join("leaf.crt"),
            &dir.path().join("leaf.key"),
            &[],
            dir.path(),
        );
        assert!(
            tls_connect(server.webhook, &dir.path().join("root.crt"))
                .await
                .is_err(),
            "{label}: a leaf alone does not verify against the root"
        );
    }
}

#[test]
fn a_bad_certificate_fails_the_start_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let other = tempfile::tempdir().unwrap();
    make_certs(other.path());
    std::fs::write(dir.path().join("garbage.crt"), "not a certificate").unwrap();
    let cases: [(&Path, &Path, &str); 3] = [
        (
            &dir.path().join("garbage.crt"),
            &dir.path().join("tls.key"),
            "garbage.crt",
        ),
        (
            &dir.path().join("tls.crt"),
            &other.path().join("tls.key"),
            "do not belong together",
        ),
        (
            &dir.path().join("missing.crt"),
            &dir.path().join("tls.key"),
            "missing.crt",
        ),
    ];
    for (cert, key, expected) in cases {
        let out = std::process::Command::new(binary())
            .arg("serve")
            .arg("--tls-cert-file")
            .arg(cert)
            .arg("--tls-key-file")
            .arg(key)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{stderr}");
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("listening"),
            "must not bind"
        );
    }
}

/// Lays out certificates the way kubelet mounts a Secret volume:
/// `tls.crt -> ..data/tls.crt`, `..data -> ..<timestamp>/`.
fn kubelet_layout(mount: &Path, source: &Path, version: &str) {
    let versioned = mount.join(format!("..{version}"));
    std::fs::create_dir_all(&versioned).unwrap();
    for f in ["tls.crt", "tls.key"] {
        std::fs::copy(source.join(f), versioned.join(f)).unwrap();
    }
    let tmp = mount.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, mount.join("..data")).unwrap();
    for f in ["tls.crt", "tls.key"] {
        let link = mount.join(f);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{f}"), &link).unwrap();
        }
    }
}

#[tokio::test]
async fn certificate_rotation_through_a_kubelet_symlink_swap_loses_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, mount) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("mount"),
    );
    for d in [&a, &b, &mount] {
        std::fs::create_dir_all(d).unwrap();
    }
    make_certs(&a);
    make_certs(&b);
    kubelet_layout(&mount, &a, "2026_12_01");
    let server = Server::start(
        &mount.join("tls.crt"),
        &mount.join("tls.key"),
        &[],
        dir.path(),
    );

    // Load on keep-alive connections (and fresh ones) for the whole rotation.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failures, ca) =
            (stop.clone(), ok.clone(), failures.clone(), a.join("ca.crt"));
        let addr = server.webhook;
        workers.push(tokio::spawn(async move {
            let mut client = Client::connect(addr, &ca).await.unwrap();
            while !stop.load(Ordering::SeqCst) {
                match client.post_review(&opted_in_review()).await {
                    Ok((200, answer)) if allowed(&answer) => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    other => failures.lock().unwrap().push(format!("{other:?}")),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    kubelet_layout(&mount, &b, "2026_12_02");

    // New handshakes see the new certificate (trusted by CA b only).
    let started = Instant::now();
    loop {
        if let Ok(mut c) = Client::connect(server.webhook, &b.join("ca.crt")).await {
            let (status, _) = c.post_review(&opted_in_review()).await.unwrap();
            assert_eq!(status, 200);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "new certificate not served: {}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        tls_connect(server.webhook, &a.join("ca.crt"))
            .await
            .is_err(),
        "old certificate still served"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    assert!(
        failures.lock().unwrap().is_empty(),
        "{:?}",
        failures.lock().unwrap()
    );
    assert!(
        ok.load(Ordering::SeqCst) > 20,
        "load ran: {}",
        ok.load(Ordering::SeqCst)
    );

    // A broken rotation (half-written file) keeps the current certificate.
    std::fs::write(
        mount.join("..2026_12_02").join("tls.crt"),
        "-----BEGIN CERTIFICATE-----\ngarbage",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut c = Client::connect(server.webhook, &b.join("ca.crt"))
        .await
        .unwrap();
    assert_eq!(c.post_review(&opted_in_review()).await.unwrap().0, 200);
    let (_, metrics) = server.admin_get("/metrics").await;
    assert!(
        metrics.contains("secret_santa_certificate_reloads_total{outcome=\"success\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("secret_santa_certificate_reloads_total{outcome=\"error\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn sigterm_drains_an_in_flight_review_then_exits_zero() {
    let (dir, mut server) = Server::with_fresh_certs();
    let ca = dir.path().join("ca.crt");

    // Start a request and send only half its body.
    let body = serde_json::to_vec(&opted_in_review()).unwrap();
    let mut tls = tls_connect(server.webhook, &ca).await.unwrap();
    let head = format!(
        "POST /mutate?timeout=10s HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let half = body.len() / 2;
    tls.write_all(&body[..half]).await.unwrap();
    tls.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    server.terminate();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Not ready any more, and no new connections are accepted.
    assert!(
        tls_connect(server.webhook, &ca).await.is_err(),
        "listener closed after SIGTERM"
    );

    // The in-flight review still completes.
    tls.write_all(&body[half..]).await.unwrap();
    tls.flush().await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut chunk = [0u8; 4096];
        loop {
            let n = tls.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(pos) = find(&buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..pos]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() >= pos + 4 + len {
                    break;
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "response within the grace period");
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let pos = find(&buf, b"\r\n\r\n").unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&buf[pos + 4..]).unwrap();
    assert!(allowed(&answer) && has_patch(&answer));

    assert_eq!(
        server.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        server.log()
    );
    assert!(server.log().contains("drained"), "{}", server.log());
}

/// kube-apiserver offers HTTP/2 by ALPN: the webhook agrees and answers
/// reviews over it, several streams on one connection at once.
#[tokio::test]
async fn serves_reviews_over_http2_when_alpn_agrees_on_it() {
    use http_body_util::{BodyExt, Full};
    let (dir, server) = Server::with_fresh_certs();
    let mut config = (*common::harness::client_config(&dir.path().join("ca.crt"))).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.webhook)
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::IpAddress(server.webhook.ip().into());
    let tls = connector.connect(name, tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let reviews = (0..8).map(|_| {
        let mut sender = sender.clone();
        async move {
            let review = opted_in_review();
            let req = hyper::Request::post("/mutate?timeout=10s")
                .header("content-type", "application/json")
                .body(Full::new(bytes::Bytes::from(
                    serde_json::to_vec(&review).unwrap(),
                )))
                .unwrap();
            let resp = sender.send_request(req).await.unwrap();
            assert_eq!(resp.version(), hyper::Version::HTTP_2);
            assert_eq!(resp.status(), 200);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(response(&answer)["uid"], review["request"]["uid"]);
            assert!(allowed(&answer) && has_patch(&answer), "{}", shown(&answer));
        }
    });
    futures_util::future::join_all(reviews).await;
}

/// Seconds until the server closes `tls`, reading whatever comes (nothing,
/// expected) and writing `trickle` every second while it waits.
async fn seconds_until_closed(
    mut tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    trickle: Option<&[u8]>,
) -> f64 {
    let started = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    let mut chunk = [0u8; 1024];
    let until = tokio::time::sleep(Duration::from_secs(25));
    tokio::pin!(until);
    loop {
        tokio::select! {
            read = tls.read(&mut chunk) => match read {
                Ok(0) | Err(_) => return started.elapsed().as_secs_f64(),
                Ok(_) => {}
            },
            _ = ticks.tick() => {
                if let Some(bytes) = trickle
                    && (tls.write_all(bytes).await.is_err() || tls.flush().await.is_err())
                {
                    return started.elapsed().as_secs_f64();
                }
            }
            () = &mut until => return f64::INFINITY,
        }
    }
}

/// Slow-loris protection without a timer per request: an HTTP/1 connection
/// that sends no complete request head for 10 to 15 s is closed, whether
/// it trickles header bytes or sends nothing; one that keeps sending
/// reviews is never cut.
#[tokio::test]
async fn slow_headers_and_idle_connections_are_closed_steady_ones_are_not() {
    let (dir, server) = Server::with_fresh_certs();
    let ca = dir.path().join("ca.crt");

    let mut loris = tls_connect(server.webhook, &ca).await.unwrap();
    loris
        .write_all(b"POST /mutate HTTP/1.1\r\nhost: localhost\r\n")
        .await
        .unwrap();
    let loris = seconds_until_closed(loris, Some(b"x-slow: 1\r\n"));
    let idle = seconds_until_closed(tls_connect(server.webhook, &ca).await.unwrap(), None);
    let steady = async {
        let mut client = Client::connect(server.webhook, &ca).await.unwrap();
        for i in 0..5 {
            if i > 0 {
                tokio::time::sleep(Duration::from_secs(4)).await;
            }
            let (status, answer) = client
                .post_review(&opted_in_review())
                .await
                .unwrap_or_else(|e| panic!("review {i} on the steady connection: {e}"));
            assert_eq!(status, 200);
            assert!(allowed(&answer), "review {i}");
        }
    };
    let (loris, idle, ()) = tokio::join!(loris, idle, steady);
    for (what, seconds) in [("trickled headers", loris), ("an idle connection", idle)] {
        assert!(
            (9.0..=17.0).contains(&seconds),
            "{what} closed after {seconds:.1} s, not within 10 to 15 s"
        );
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test]
async fn the_admin_config_is_reloaded_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let config = dir.path().join("config.yaml");
    let write = |namespaces: &str| {
        let text = format!(
            "clusterId: e2e\nstores:\n  - name: vault\n    type: memory\n    namespaces: [{namespaces}]\n"
        );
        let tmp = dir.path().join("config.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &config).unwrap();
    };
    write("\"billing\"");
    let config_arg = config.to_str().unwrap().to_owned();
    let server = Server::start(
        &dir.path().join("tls.crt"),
        &dir.path().join("tls.key"),
        &["--config", &config_arg],
        dir.path(),
    );
    let mut client = Client::connect(server.webhook, &dir.path().join("ca.crt"))
        .await
        .unwrap();
    let review = || {
        create(
            &SecretDoc::new("api")
                .labelled()
                .autogenerate("password")
                .annotate("secret-santa.io/mirror", "- store: vault\n")
                .value(),
        )
    };
    let (_, answer) = client.post_review(&review()).await.unwrap();
    assert!(
        message(&answer).contains("not available to namespace \"shop\""),
        "{}",
        shown(&answer)
    );

    write("\"shop\", \"billing\"");
    let started = Instant::now();
    loop {
        let (status, answer) = client.post_review(&review()).await.unwrap();
        assert_eq!(status, 200);
        if allowed(&answer) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "config not reloaded: {}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A broken config is ignored: the current one stays.
    std::fs::write(&config, "clusterId: e2e\nstorez: []\n").unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (_, answer) = client.post_review(&review()).await.unwrap();
    assert!(allowed(&answer), "{answer}");
    let (_, metrics) = server.admin_get("/metrics").await;
    assert!(
        metrics.contains("secret_santa_config_reloads_total{outcome=\"error\"} 1"),
        "{metrics}"
    );
    assert!(server.log().contains("storez"), "the reason is logged");
}
