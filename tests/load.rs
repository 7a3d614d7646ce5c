//! Load with counts, not timings: 10,000 reviews at 64 connections with no
//! error, across a certificate rotation, and a SIGTERM under load in which
//! no in-flight review fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::harness::{Client, Server, make_certs};
use common::*;

const CONNECTIONS: usize = 64;
const REVIEWS: usize = 10_000;

fn review() -> serde_json::Value {
    create(
        &SecretDoc::new("api")
            .labelled()
            .autogenerate("password")
            .value(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_reviews_at_64_connections_across_a_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    make_certs(&a);
    make_certs(&b);
    // Both CAs trusted by the client, as during a CA roll-over.
    let bundle = dir.path().join("bundle.crt");
    let mut both = std::fs::read(a.join("ca.crt")).unwrap();
    both.extend(std::fs::read(b.join("ca.crt")).unwrap());
    std::fs::write(&bundle, both).unwrap();
    let serving = dir.path().join("serving");
    std::fs::create_dir_all(&serving).unwrap();
    for f in ["tls.crt", "tls.key"] {
        std::fs::copy(a.join(f), serving.join(f)).unwrap();
    }
    let server = Server::start(
        &serving.join("tls.crt"),
        &serving.join("tls.key"),
        &["--log", "warn"],
        dir.path(),
    );

    let next = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for i in 0..CONNECTIONS {
        let (next, ok, errors, bundle) = (next.clone(), ok.clone(), errors.clone(), bundle.clone());
        let addr = server.webhook;
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(addr, &bundle).await.unwrap();
            let mut sent = 0;
            while next.fetch_add(1, Ordering::SeqCst) < REVIEWS {
                // Every 50th review a connection is replaced, so new TLS
                // handshakes happen throughout the run (and the rotation).
                if sent > 0 && (sent + i) % 50 == 0 {
                    match Client::connect(addr, &bundle).await {
                        Ok(c) => client = c,
                        Err(e) => errors.lock().unwrap().push(format!("handshake: {e}")),
                    }
                }
                sent += 1;
                match client.post_review(&review()).await {
                    Ok((200, answer)) if allowed(&answer) && has_patch(&answer) => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok((status, _)) => errors.lock().unwrap().push(format!("status {status}")),
                    Err(e) => errors.lock().unwrap().push(e),
                }
            }
        }));
    }
    // Rotate once a third of the reviews are done.
    while next.load(Ordering::SeqCst) < REVIEWS / 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for f in ["tls.crt", "tls.key"] {
        let tmp = serving.join(format!("{f}.new"));
        std::fs::copy(b.join(f), &tmp).unwrap();
        std::fs::rename(&tmp, serving.join(f)).unwrap();
    }
    for t in tasks {
        t.await.unwrap();
    }
    {
        let errors = errors.lock().unwrap();
        assert!(
            errors.is_empty(),
            "{} errors, first: {:?}",
            errors.len(),
            errors.first()
        );
    }
    assert_eq!(ok.load(Ordering::SeqCst), REVIEWS);
    let (_, metrics) = server.admin_get("/metrics").await;
    assert!(
        metrics.contains("secret_santa_certificate_reloads_total{outcome=\"success\"} 1"),
        "rotation happened during the run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_fails_no_in_flight_review() {
    // Info logging: the server logs one "allowed" line per review it
    // finished, which the end compares with what the clients received.
    let (dir, mut server) = Server::with_fresh_certs();
    let ca = dir.path().join("ca.crt");
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let broken = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let (stop, answered, broken, ca) =
            (stop.clone(), answered.clone(), broken.clone(), ca.clone());
        let addr = server.webhook;
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(addr, &ca).await.unwrap();
            while !stop.load(Ordering::SeqCst) {
                match client.post_review(&review()).await {
                    Ok((200, answer)) if allowed(&answer) => {
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(_) => {
                        broken.fetch_add(1, Ordering::SeqCst);
                    }
                    // The server closed an idle keep-alive connection: the
                    // request was never taken, a client (the apiserver)
                    // simply reconnects. Anything taken must be answered.
                    Err(e)
                        if e.contains("closed")
                            || e.contains("canceled")
                            || e.contains("connection") =>
                    {
                        break;
                    }
                    Err(_) => {
                        broken.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    while answered.load(Ordering::SeqCst) < 500 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.terminate();
    assert_eq!(
        server.wait_exit(Duration::from_secs(20)),
        Some(0),
        "{}",
        server.log()
    );
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        broken.load(Ordering::SeqCst),
        0,
        "a review that the server took was not answered"
    );
    // A client error above is only a connection closed before the server
    // took its request: every review the server finished reached its
    // client.
    let finished = server
        .log()
        .lines()
        .filter(|l| l.contains("secret_santa::webhook: allowed"))
        .count();
    assert!(finished >= 500, "{finished} reviews logged");
    assert_eq!(
        finished,
        answered.load(Ordering::SeqCst),
        "every review the server finished was answered"
    );
}
