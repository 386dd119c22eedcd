//! The `wshub` binary.

/// jemalloc, with background threads that give freed pages back to the
/// system a second after their last use (built-in options: see
/// `.cargo/config.toml`): glibc's malloc kept the memory of a burst of large
/// messages, and of a million rooms, after it was freed, even with no
/// connection left. Measured in `cargo xtask bench`, row `memory-2k`
/// (ARCHITECTURE.md, "What an idle connection costs").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use anyhow::Context as _;
use clap::Parser;
use wshub_server::cli::{Cli, Invocation};
use wshub_server::{Server, logging};

fn main() -> std::process::ExitCode {
    let invocation = match Cli::parse().invocation() {
        Ok(invocation) => invocation,
        Err(err) => {
            eprintln!("wshub: {err}");
            return std::process::ExitCode::from(2);
        }
    };
    let (args, print_only) = match invocation {
        Invocation::Serve(args) => (args, false),
        Invocation::PrintConfig(args) => (args, true),
        Invocation::ConfigDefault => {
            print!("{}", wshub_server::config::default_toml());
            return std::process::ExitCode::SUCCESS;
        }
        Invocation::ConfigCheck(args) => {
            return match args.load_with_warnings() {
                // A check is asked for by a person or a pipeline: an
                // ignored variable is a typo to fix, so it fails here
                // (`serve` only warns).
                Ok((_, warnings)) if !warnings.is_empty() => {
                    let count = warnings.len();
                    eprintln!(
                        "wshub: {count} problem{}:",
                        if count == 1 { "" } else { "s" }
                    );
                    for warning in warnings {
                        eprintln!("  {warning}");
                    }
                    std::process::ExitCode::FAILURE
                }
                Ok(_) => {
                    println!("configuration ok");
                    std::process::ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("wshub: {err}");
                    std::process::ExitCode::FAILURE
                }
            };
        }
        Invocation::Healthcheck(url, args) => {
            let url = match url {
                Some(url) => url,
                None => match args.load_with_warnings() {
                    Ok((config, _)) => wshub_server::healthcheck::url_for(config.listen),
                    Err(err) => {
                        eprintln!("wshub: {err}");
                        return std::process::ExitCode::from(2);
                    }
                },
            };
            return match wshub_server::healthcheck::probe(&url) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(why) => {
                    eprintln!("wshub: unhealthy: {why}");
                    std::process::ExitCode::FAILURE
                }
            };
        }
        Invocation::Token(token, args) => {
            return match token.sign(&args) {
                Ok(token) => {
                    println!("{token}");
                    std::process::ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("wshub: {err:#}");
                    std::process::ExitCode::from(2)
                }
            };
        }
    };
    // A bad config prints every problem, each naming its key, and exits
    // before binding.
    let (config, prepared, warnings) = match args.load_prepared() {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("wshub: {err}");
            return std::process::ExitCode::from(2);
        }
    };
    if print_only {
        for warning in &warnings {
            eprintln!("wshub: warning: {warning}");
        }
        print!("{}", config.to_toml());
        return std::process::ExitCode::SUCCESS;
    }
    match serve(config, prepared, &warnings) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("wshub: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn serve(
    config: wshub_server::Config,
    prepared: wshub_server::config::Prepared,
    warnings: &[String],
) -> anyhow::Result<()> {
    logging::init(&config.log)?;
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    raise_open_file_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        let server =
            Server::bind_prepared(&config, prepared).context("cannot start")?;
        let addr = server.local_addr()?;
        let admin = server
            .admin_addr()
            .map_or_else(|| "off".to_owned(), |admin| admin.to_string());
        tracing::info!(%addr, ws_path = %config.ws_path, %admin, tls = config.tls.cert_file.is_some(), "listening");
        let report = server.run(shutdown_signal()).await;
        tracing::info!(
            told = report.connections_told,
            drained = report.drained,
            "stopped"
        );
        Ok(())
    })
}

/// Each connection is a file descriptor; the soft limit is often 1024.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open-file limit"),
        Err(err) => tracing::warn!(%err, "cannot raise the open-file limit"),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!(signal = "SIGINT", "signal received"),
        () = terminate => tracing::info!(signal = "SIGTERM", "signal received"),
    }
}
