//! The webhook server: certificates loaded before binding, TLS accept loop,
//! plain-HTTP admin listener, certificate reload, drain on SIGTERM.

pub mod tls;

use std::convert::Infallible;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::config::{AdminConfig, ServeArgs};
use crate::review::Reviewer;
use crate::webhook::App;
use tls::{CertFiles, ReloadingResolver};

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// `secret-santa serve`.
pub async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = match &args.config {
        Some(path) => AdminConfig::load(path).map_err(anyhow::Error::msg)?,
        None => AdminConfig::default(),
    };
    // Certificates first: a bad certificate fails the start, before any bind.
    let (resolver, files, digest) = if args.self_signed {
        let bundle = crate::cli::certs::generate(
            &["localhost".to_owned()],
            &[std::net::IpAddr::from([127, 0, 0, 1])],
            30,
        )
        .context("generating the self-signed certificate")?;
        let key = tls::certified_key_from_pem(
            bundle.cert_pem.as_bytes(),
            bundle.key_pem.as_bytes(),
            "self-signed".as_ref(),
            "self-signed".as_ref(),
        )?;
        println!(
            "# --self-signed: trust this CA (caBundle = base64 of it)\n{}",
            bundle.ca_pem
        );
        (ReloadingResolver::new(key), None, [0u8; 32])
    } else {
        let (Some(cert), Some(key)) = (args.tls_cert_file.clone(), args.tls_key_file.clone())
        else {
            anyhow::bail!("--tls-cert-file and --tls-key-file are required (or --self-signed)");
        };
        let files = CertFiles { cert, key };
        let (key, digest) = files.load()?;
        (ReloadingResolver::new(key), Some(files), digest)
    };
    let tls_config = tls::server_config(resolver.clone())?;

    let reviewer = Reviewer::from_config(config)
        .await
        .map_err(anyhow::Error::msg)?;
    let app = App::new(reviewer, args.max_body_bytes);
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding the webhook listener {}", args.listen))?;
    let admin = TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("binding the admin listener {}", args.admin_listen))?;
    let webhook_addr = listener.local_addr()?;
    let admin_addr = admin.local_addr()?;

    if let Some(files) = files {
        tokio::spawn(tls::watch(
            files,
            resolver,
            digest,
            args.cert_reload_interval,
            app.clone(),
        ));
    }
    if let Some(path) = args.config.clone() {
        tokio::spawn(watch_config(path, args.cert_reload_interval, app.clone()));
    }
    tokio::spawn(serve_admin(admin, app.clone()));
    // Before ready: once /readyz says ok, SIGTERM must mean a clean drain.
    let shutdown = shutdown_signal();
    app.set_ready(true);
    tracing::info!(webhook = %webhook_addr, admin = %admin_addr, "serving");
    // A machine-readable line for scripts and tests that bind port 0.
    println!("listening webhook={webhook_addr} admin={admin_addr}");

    run_webhook(
        listener,
        TlsAcceptor::from(tls_config),
        app.clone(),
        shutdown,
        args.shutdown_grace,
    )
    .await;
    Ok(ExitCode::SUCCESS)
}

/// Registers for SIGTERM and SIGINT now (so that a signal arriving before
/// the server is polled is not lost) and resolves on the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Accepts TLS connections until `shutdown` resolves, then stops accepting
/// and lets in-flight reviews finish within `grace`.
pub async fn run_webhook(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Arc<App>,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let app = app.clone();
                let builder = builder.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let service = service_fn(move |req| {
                        let app = app.clone();
                        async move { Ok::<_, Infallible>(app.handle(req).await) }
                    });
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    app.set_ready(false);
    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        "shutting down: draining in-flight reviews"
    );
    match tokio::time::timeout(grace, graceful.shutdown()).await {
        Ok(()) => tracing::info!("drained"),
        Err(_) => tracing::warn!("drain grace period over; closing remaining connections"),
    }
}

/// Polls the admin config file; a change that loads (stores built) replaces
/// the reviewer's config, one that does not is logged and ignored.
async fn watch_config(path: std::path::PathBuf, interval: Duration, app: Arc<App>) {
    use crate::metrics::OutcomeLabels;
    let read = |p: &std::path::Path| std::fs::read(p).ok();
    let mut last = read(&path);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let now = read(&path);
        if now.is_none() || now == last {
            continue;
        }
        last = now;
        let loaded = match AdminConfig::load(&path) {
            Ok(config) => match crate::store::Stores::from_config(&config).await {
                Ok(stores) => Ok((config, stores)),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match loaded {
            Ok((config, stores)) => {
                app.reviewer.replace(config, stores);
                app.metrics
                    .config_reloads
                    .get_or_create(&OutcomeLabels { outcome: "success" })
                    .inc();
                tracing::info!(config = %path.display(), "admin config reloaded");
            }
            Err(e) => {
                app.metrics
                    .config_reloads
                    .get_or_create(&OutcomeLabels { outcome: "error" })
                    .inc();
                tracing::warn!(error = %e, "changed admin config does not load; keeping the current one");
            }
        }
    }
}

async fn serve_admin(listener: TcpListener, app: Arc<App>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let app = app.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(app.handle_admin(&req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}
