//! The command line the crate's binaries share: `--config FILE`, the layered
//! [`Settings`], telemetry, then the [`Application`] until SIGINT/SIGTERM. A binary
//! differs from another only in the `/mcp` it serves.
//!
//! With no command a binary serves; `check-config` loads and validates the settings and
//! exits (for CI and init containers); `sessions count|show FP|end FP` reads or ends the
//! stored sessions in the configured Redis (`cli/sessions.rs`).

mod sessions;

use std::{path::PathBuf, process::ExitCode};

use self::sessions::SessionsCommand;
use crate::{
    config::{Backend, Settings},
    mcp::McpState,
    startup::{Application, shutdown_signal},
    state::AppState,
    telemetry,
};

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Command {
    /// Serve until SIGINT/SIGTERM (no command).
    Serve,
    /// Load and validate the settings, then exit: what a replica checks before it binds
    /// its port or sends Redis a command (see `check_config`).
    CheckConfig,
    /// An operator's command on the stored sessions, then exit.
    Sessions(SessionsCommand),
}

/// Runs the binary `name` with `/mcp` built by `mcp` from the replica's state
/// ([`crate::mcp::endpoint`], or `|mcp| endpoint_with(mcp, factory)`): reads
/// `--config FILE` from the command line, loads the settings over it, starts telemetry,
/// builds the replica and serves until SIGINT/SIGTERM, then drains.
///
/// With the command `check-config` it only checks the settings, as a replica does before
/// it binds its port or sends Redis a command, prints one line and exits.
///
/// Returns the exit code: success after a drain (or a passed check); 2 for a bad
/// command line or settings (the reason on stderr, prefixed with `name`); failure when
/// the replica cannot be built or stops serving for another reason.
pub async fn run(name: &str, mcp: impl FnOnce(&McpState) -> axum::Router) -> ExitCode {
    let usage = format!(
        "usage: {name} [--config FILE] [check-config | sessions count | sessions show FP | \
         sessions end FP]\n\
         With no command, serves until SIGINT/SIGTERM.\n\
         check-config: loads and validates the settings, then exits: 0 when they are \
         valid, 2 with the reason on stderr otherwise (nothing is served and Redis is not \
         contacted).\n\
         sessions count: live sessions by principal (fingerprints), and the total.\n\
         sessions show FP: the record of the session whose fingerprint (as the logs print \
         it) is FP.\n\
         sessions end FP: ends that session everywhere, as a DELETE does.\n\
         The sessions commands read the configured Redis directly (store.backend = redis).\n\
         Settings: config/default.toml documents every key; STATEFUL_MCP__SECTION__KEY \
         environment variables override them."
    );
    let mut args = std::env::args().skip(1);
    let mut config_file: Option<PathBuf> = None;
    let mut command = Command::Serve;
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
            "check-config" if command == Command::Serve => command = Command::CheckConfig,
            "sessions" if command == Command::Serve => match SessionsCommand::parse(&mut args) {
                Ok(sessions) => command = Command::Sessions(sessions),
                Err(e) => return usage_error(name, e, &usage),
            },
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
    match command {
        Command::CheckConfig => return check_config(name, settings),
        Command::Sessions(sessions) => return run_sessions(name, settings, sessions).await,
        Command::Serve => {}
    }
    let mut settings = settings;
    if settings.server.replica_id.is_empty() {
        // Minted here rather than by the replica's state, so its spans name it too.
        settings.server.replica_id = crate::ids::mint()[..12].to_owned();
    }
    let telemetry = telemetry::init(&settings.telemetry, &settings.server.replica_id);
    let app = match Application::build_with(settings, mcp).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            flush(telemetry).await;
            return ExitCode::FAILURE;
        }
    };
    let shutdown = app.shutdown_token();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown signal received; draining");
        shutdown.cancel();
    });
    let code = match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "server failed");
            ExitCode::FAILURE
        }
    };
    flush(telemetry).await;
    code
}

/// Exports the spans still buffered (the drain's last ones among them) before the
/// process exits; the exporter sends on this runtime, so the wait is on a blocking
/// thread.
async fn flush(telemetry: telemetry::Telemetry) {
    if telemetry.exports_traces() {
        let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    }
}

/// `check-config`: the checks [`Application::build`] makes on settings that loaded (the
/// Redis addresses and TLS files, the authentication keys, the `requestState` keys,
/// `resources.file_root`), without binding its port or sending Redis a command. Prints
/// one line and returns success, or the reason and 2.
fn check_config(name: &str, settings: Settings) -> ExitCode {
    let backend = match settings.store.backend {
        Backend::Memory => "memory",
        Backend::Redis => "redis",
    };
    let bind = settings.server.bind;
    // Built and dropped: its background jobs are only listed, never started, and its
    // Redis pools connect on first use.
    match AppState::build(settings) {
        Ok(state) => {
            drop(state);
            println!("{name}: configuration ok (store.backend = {backend}, server.bind = {bind})");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `sessions ...`: the replica's state built (nothing served, no job started), then
/// the command against its store. Exit 2 for settings it cannot run with.
async fn run_sessions(name: &str, settings: Settings, command: SessionsCommand) -> ExitCode {
    if settings.store.backend != Backend::Redis {
        eprintln!(
            "{name}: the sessions commands read the Redis backend (store.backend = redis); \
             the memory backend's sessions live in the serving process only"
        );
        return ExitCode::from(2);
    }
    match AppState::build(settings) {
        Ok(state) => sessions::run(name, &state, command).await,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn usage_error(name: &str, msg: &str, usage: &str) -> ExitCode {
    eprintln!("{name}: {msg}\n{usage}");
    ExitCode::from(2)
}
