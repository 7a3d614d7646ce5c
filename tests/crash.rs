//! A webhook process killed (SIGKILL) between two destinations: the first
//! store holds the values, the second's request died with the process. A
//! new process given the same CREATE (the apiserver's retry, or the user's)
//! converges: it takes the values the first store holds and writes them to
//! the second. The real binary over TLS, moto behind a proxy that swallows
//! the second destination's request.
#![cfg(feature = "aws")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::config::{Credentials, Region};
use common::harness::{Client, Server, make_certs};
use common::moto::{FaultProxy, Moto, REGION};
use common::*;

fn config(moto: &str, proxy: &str, files: &std::path::Path) -> String {
    let auth = format!(
        "{{ method: accessKey, accessKeyIdFile: {}, secretAccessKeyFile: {} }}",
        files.join("id").display(),
        files.join("secret").display()
    );
    format!(
        r#"
clusterId: crash-test
limits: {{ requestDeadline: 8s }}
stores:
  - name: first
    type: aws-secrets-manager
    region: {REGION}
    endpoint: {moto}
    auth: {auth}
    namespaces: ["shop"]
    prefix: "first/"
  - name: second
    type: aws-parameter-store
    region: {REGION}
    endpoint: {proxy}
    auth: {auth}
    namespaces: ["shop"]
    prefix: "/second/"
    deadline: 6s
"#
    )
}

fn json_map(text: &str) -> BTreeMap<String, String> {
    serde_json::from_str(text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_killed_between_two_destinations_converges_on_retry() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(moto.port);
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("id"), "test\n").unwrap();
    std::fs::write(files.path().join("secret"), "test\n").unwrap();
    let config_file = files.path().join("config.yaml");
    std::fs::write(
        &config_file,
        config(&moto.endpoint, &proxy.endpoint, files.path()),
    )
    .unwrap();
    make_certs(files.path());
    let start = || {
        Server::start(
            &files.path().join("tls.crt"),
            &files.path().join("tls.key"),
            &["--config", config_file.to_str().unwrap()],
            files.path(),
        )
    };
    let sdk = |b: aws_sdk_secretsmanager::config::Builder| {
        b.behavior_version_latest()
            .region(Region::new(REGION))
            .endpoint_url(&moto.endpoint)
            .credentials_provider(Credentials::new("test", "test", None, None, "moto"))
            .build()
    };
    let sm =
        aws_sdk_secretsmanager::Client::from_conf(sdk(aws_sdk_secretsmanager::Config::builder()));
    let ssm = aws_sdk_ssm::Client::from_conf(
        aws_sdk_ssm::Config::builder()
            .behavior_version_latest()
            .region(aws_sdk_ssm::config::Region::new(REGION))
            .endpoint_url(&moto.endpoint)
            .credentials_provider(aws_sdk_ssm::config::Credentials::new(
                "test", "test", None, None, "moto",
            ))
            .build(),
    );
    let review = create(
        &SecretDoc::new("db")
            .labelled()
            .autogenerate("password, token")
            .annotate(
                "secret-santa.io/mirror",
                "- store: first\n- store: second\n",
            )
            .value(),
    );

    // 1. The second destination's PutParameter never arrives; once it is
    //    held (so the first store has been written), the process is killed.
    proxy.hang("PutParameter", 1);
    let mut server = start();
    let mut client = Client::connect(server.webhook, &files.path().join("ca.crt"))
        .await
        .unwrap();
    let pending = {
        let review = review.clone();
        tokio::spawn(async move { client.post_review(&review).await })
    };
    let until = Instant::now() + Duration::from_secs(20);
    while proxy.held() == 0 {
        assert!(Instant::now() < until, "the second write was sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    assert!(
        pending.await.unwrap().is_err(),
        "the killed process never answered"
    );
    let first = sm
        .get_secret_value()
        .secret_id("first/shop/db")
        .send()
        .await
        .unwrap();
    let stored = json_map(first.secret_string().unwrap());
    assert!(
        ssm.get_parameter()
            .name("/second/shop/db")
            .send()
            .await
            .is_err(),
        "the second store was never written"
    );

    // 2. A new process, the same CREATE: the values of the first store,
    //    written to the second; no second version anywhere.
    let server = start();
    let mut client = Client::connect(server.webhook, &files.path().join("ca.crt"))
        .await
        .unwrap();
    let (status, answer) = client.post_review(&review).await.unwrap();
    assert_eq!(status, 200);
    assert!(allowed(&answer), "{}", message(&answer));
    let data = data_of(&as_secret(&apply(&review["request"]["object"], &answer)));
    assert!(
        data == stored,
        "the Secret takes what the first store holds"
    );
    let second = ssm
        .get_parameter()
        .name("/second/shop/db")
        .with_decryption(true)
        .send()
        .await
        .unwrap();
    assert!(
        json_map(second.parameter().unwrap().value().unwrap()) == stored,
        "the second store gets the same values"
    );
    let versions = sm
        .list_secret_version_ids()
        .secret_id("first/shop/db")
        .send()
        .await
        .unwrap();
    assert_eq!(
        versions.versions().len(),
        1,
        "the first store was not rewritten"
    );
    assert!(
        !server.log().contains(&stored["password"]),
        "no value in the log"
    );
}
