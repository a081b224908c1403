//! The command line the crate's binaries share: `--config FILE`, the layered
//! [`Settings`], telemetry, then the [`Application`] until SIGINT/SIGTERM. A binary
//! differs from another only in the `/mcp` it serves.

use std::{path::PathBuf, process::ExitCode};

use crate::{
    config::Settings,
    mcp::McpState,
    startup::{Application, shutdown_signal},
    telemetry,
};

/// Runs the binary `name` with `/mcp` built by `mcp` from the replica's state
/// ([`crate::mcp::endpoint`], or `|mcp| endpoint_with(mcp, factory)`): reads
/// `--config FILE` from the command line, loads the settings over it, starts telemetry,
/// builds the replica and serves until SIGINT/SIGTERM, then drains.
///
/// Returns the exit code: success after a drain; 2 for a bad command line or settings
/// (the reason on stderr, prefixed with `name`); failure when the replica cannot be
/// built or stops serving for another reason.
pub async fn run(name: &str, mcp: impl FnOnce(&McpState) -> axum::Router) -> ExitCode {
    let usage = format!(
        "usage: {name} [--config FILE]\n\
         Settings: config/default.toml documents every key; STATEFUL_MCP__SECTION__KEY \
         environment variables override them."
    );
    let mut args = std::env::args().skip(1);
    let mut config_file: Option<PathBuf> = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" | "-c" => match args.next() {
                Some(path) => config_file = Some(path.into()),
                None => return usage_error(name, "--config needs a file", &usage),
            },
            "--help" | "-h" => {
                println!("{usage}");
                return ExitCode::SUCCESS;
            }
            other => return usage_error(name, &format!("unknown argument `{other}`"), &usage),
        }
    }
    let settings = match Settings::load(config_file.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&settings.telemetry);
    let app = match Application::build_with(settings, mcp).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = app.shutdown_token();
    tokio::spawn(async move {
        shutdown_signal().await;
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

fn usage_error(name: &str, msg: &str, usage: &str) -> ExitCode {
    eprintln!("{name}: {msg}\n{usage}");
    ExitCode::from(2)
}
