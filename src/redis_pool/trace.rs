//! The exported span of one Redis round trip (`redis {operation}`, a client span): the
//! operation is the Lua script's name, for scripts their stores named
//! ([`RedisPool::name_scripts`](super::RedisPool::name_scripts)), else the command's;
//! the hash slot of its first key is recorded, never a key. Disabled, and costing a
//! callsite check, while traces are not exported.

use std::{
    collections::HashMap,
    sync::{PoisonError, RwLock},
};

use redis::{Arg, Cmd};

use crate::telemetry::OTEL_TARGET;

/// Longest command name recorded (an unknown one is `other`).
const MAX_COMMAND: usize = 24;

/// Commands whose first argument is no key.
const KEYLESS: &[&[u8]] = &[
    b"PING",
    b"WAIT",
    b"INFO",
    b"CLUSTER",
    b"SCRIPT",
    b"CLIENT",
    b"TIME",
    b"HELLO",
    b"AUTH",
    b"SELECT",
    b"READONLY",
    b"COMMAND",
    b"CONFIG",
    b"PUBLISH",
    b"SPUBLISH",
    b"ROLE",
];

/// The names of the scripts the stores run, by SHA1.
#[derive(Debug, Default)]
pub(super) struct ScriptNames(RwLock<HashMap<String, &'static str>>);

impl ScriptNames {
    pub(super) fn name(&self, script: &redis::Script, name: &'static str) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(script.get_hash().to_owned(), name);
    }

    fn lookup(&self, sha: &[u8]) -> Option<&'static str> {
        let sha = std::str::from_utf8(sha).ok()?;
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(sha)
            .copied()
    }
}

/// The span of a round trip whose first command is `first` (`commands` in all).
pub(super) fn round_trip(
    names: &ScriptNames,
    first: Option<&Cmd>,
    commands: usize,
) -> tracing::Span {
    // Only round trips some exported span waits on: the replica's background jobs
    // (upkeep, leases, readers) would each start a trace of their own.
    if !crate::telemetry::traces_on() || tracing::Span::current().is_none() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        target: OTEL_TARGET,
        "redis",
        otel.name = tracing::field::Empty,
        otel.kind = "client",
        db.system.name = "redis",
        db.operation.name = tracing::field::Empty,
        db.stored_procedure.name = tracing::field::Empty,
        db.operation.batch.size = tracing::field::Empty,
        db.redis.hash_slot = tracing::field::Empty,
    );
    if span.is_disabled() {
        return span;
    }
    if commands > 1 {
        span.record("db.operation.batch.size", commands);
    }
    let Some(first) = first else {
        return span;
    };
    let args: Vec<&[u8]> = first
        .args_iter()
        .take(4)
        .filter_map(|a| match a {
            Arg::Simple(bytes) => Some(bytes),
            _ => None,
        })
        .collect();
    let Some(command) = args.first() else {
        return span;
    };
    let command = if command.len() <= MAX_COMMAND && command.iter().all(u8::is_ascii_alphabetic) {
        String::from_utf8_lossy(command).to_ascii_uppercase()
    } else {
        "other".to_owned()
    };
    let script = matches!(command.as_str(), "EVALSHA" | "EVAL");
    let key = if script {
        let keys = args.get(2).and_then(|n| std::str::from_utf8(n).ok());
        match keys.and_then(|n| n.parse::<u64>().ok()) {
            Some(n) if n > 0 => args.get(3),
            _ => None,
        }
    } else if KEYLESS.contains(&command.as_bytes()) {
        None
    } else {
        args.get(1)
    };
    if let Some(key) = key {
        span.record("db.redis.hash_slot", super::cluster::key_slot(key));
    }
    let name = if script {
        args.get(1).and_then(|sha| names.lookup(sha))
    } else {
        None
    };
    match name {
        Some(name) => {
            span.record("db.stored_procedure.name", name);
            span.record("db.operation.name", command.as_str());
            span.record("otel.name", format!("redis {name}"));
        }
        None => {
            span.record("otel.name", format!("redis {command}"));
            span.record("db.operation.name", command);
        }
    }
    span
}
