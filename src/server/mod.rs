//! The webhook server: certificates loaded before binding, TLS accept loop,
//! plain-HTTP admin listener, certificate reload, drain on SIGTERM.

pub mod tls;

use std::convert::Infallible;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::config::{AdminConfig, ServeArgs};
use crate::review::Reviewer;
use crate::webhook::App;
use tls::{CertFiles, ReloadingResolver};

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The admin listener's (hyper's own) header timeout.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an HTTP/1 webhook connection's [`Activity`] is checked.
const IDLE_CHECK: Duration = Duration::from_secs(5);
/// Checks in a row with no new request, none in flight, before an HTTP/1
/// connection is closed: headers (or a keep-alive connection's next
/// request) get 10 to 15 s, as hyper's header timeout gave them.
const QUIET_CHECKS_IDLE: u32 = 2;
/// The same with a request in flight: longer than the longest review
/// (30 s, the apiserver's cap), so only a body that never ends is cut.
const QUIET_CHECKS_BUSY: u32 = 7;

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
    // The protocol is the one the TLS handshake agreed on (ALPN; HTTP/2
    // over TLS needs it, RFC 9113 §3.2), so no preface sniffing per read.
    // No per-request header timer: [`close_when_quiet`] does its work with
    // one timer per connection (a timer armed and cleared per request cost
    // a measurable share of a review).
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(true);
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2.timer(TokioTimer::new());
    let builders = Arc::new((http1, http2));
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
                let builders = builders.clone();
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
                    // HTTP/2 multiplexes, and its client retries streams a
                    // GOAWAY refused; HTTP/1 is the one slow headers can hold.
                    let http2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                    let activity = Arc::new(Activity {
                        app,
                        started: AtomicU64::new(0),
                        in_flight: AtomicU64::new(0),
                    });
                    let seen = activity.clone();
                    let service = service_fn(move |req| {
                        // One clone of this connection's own Arc per request,
                        // not of the App every connection shares.
                        let request = seen.start();
                        async move {
                            let response = request.0.app.handle(req).await;
                            drop(request);
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let io = TokioIo::new(tls);
                    let result = if http2 {
                        watcher.watch(builders.1.serve_connection(io, service)).await
                    } else {
                        tokio::select! {
                            result = watcher.watch(builders.0.serve_connection(io, service)) => result,
                            () = close_when_quiet(&activity) => {
                                tracing::debug!(%peer, "closing an HTTP/1 connection that sent no complete request in time");
                                Ok(())
                            }
                        }
                    };
                    if let Err(e) = result {
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

/// One connection's handle on the app, and what its requests have done,
/// for [`close_when_quiet`]: requests whose headers arrived, and those
/// still being answered.
struct Activity {
    app: Arc<App>,
    started: AtomicU64,
    in_flight: AtomicU64,
}

/// A request being answered; dropping it (answered or cancelled) ends it.
struct InFlight(Arc<Activity>);

impl Activity {
    fn start(self: &Arc<Self>) -> InFlight {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Resolves when a connection has gone [`QUIET_CHECKS_IDLE`] checks with
/// no new request and none in flight (idle, or headers trickling in: a slow
/// loris), or [`QUIET_CHECKS_BUSY`] with one in flight but no new one.
async fn close_when_quiet(activity: &Activity) {
    let mut checks = tokio::time::interval_at(tokio::time::Instant::now() + IDLE_CHECK, IDLE_CHECK);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = activity.started.load(Ordering::Relaxed);
    let mut quiet = 0;
    loop {
        checks.tick().await;
        let started = activity.started.load(Ordering::Relaxed);
        if started != last {
            last = started;
            quiet = 0;
            continue;
        }
        quiet += 1;
        let limit = if activity.in_flight.load(Ordering::Relaxed) > 0 {
            QUIET_CHECKS_BUSY
        } else {
            QUIET_CHECKS_IDLE
        };
        if quiet >= limit {
            return;
        }
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
