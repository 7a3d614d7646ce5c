use std::process::ExitCode;

use clap::Parser;
use secret_santa::config::{Cli, Command, LogFormat};

/// mimalloc instead of glibc malloc: a review allocates many small,
/// short-lived objects across worker threads, where glibc's arenas spend
/// a fifth of the server's CPU (`cargo bench --bench admission`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    secret_santa::install_crypto_provider();
    init_tracing(&cli.log, cli.log_format);
    let result = match cli.command {
        Command::Serve(args) => run_async(secret_santa::server::serve(args)),
        Command::Mutate(args) => run_async(secret_santa::cli::mutate::run(args)),
        Command::Certs(args) => secret_santa::cli::certs::run(&args),
        Command::Check(args) => secret_santa::cli::check::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run_async<F: std::future::Future<Output = anyhow::Result<ExitCode>>>(
    f: F,
) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

fn init_tracing(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: `kubectl logs` and log shippers get
    // plain text.
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
