//! The `stateful-mcp` binary: load settings, start telemetry, build the replica, run it
//! until SIGINT/SIGTERM.

use std::{path::PathBuf, process::ExitCode};

use stateful_mcp::{config::Settings, startup::Application, telemetry};

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings: a background thread returns freed pages to the system after a
/// second, so the memory of closed session workers leaves the replica's footprint even
/// while its threads are idle.
#[cfg(feature = "jemalloc")]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

const USAGE: &str = "usage: stateful-mcp [--config FILE]\n\
    Settings: config/default.toml documents every key; STATEFUL_MCP__SECTION__KEY \
    environment variables override them.";

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut config_file: Option<PathBuf> = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" | "-c" => match args.next() {
                Some(path) => config_file = Some(path.into()),
                None => return usage_error("--config needs a file"),
            },
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => return usage_error(&format!("unknown argument `{other}`")),
        }
    }
    let settings = match Settings::load(config_file.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("stateful-mcp: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&settings.telemetry);
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("stateful-mcp: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = app.shutdown_token();
    tokio::spawn(async move {
        stateful_mcp::startup::shutdown_signal().await;
        tracing::info!("shutdown signal received; draining");
        shutdown.cancel();
    });
    match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "server failed");
            ExitCode::FAILURE
        }
    }
}

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("stateful-mcp: {msg}\n{USAGE}");
    ExitCode::from(2)
}
