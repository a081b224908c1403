//! `stateful-mcp sessions`: what an operator reads and ends of the stored sessions,
//! straight from the configured Redis (the access `redis-cli` has; no MCP
//! authentication): `count` (live sessions by principal, and the total), `show FP` (one
//! session's record) and `end FP` (the session ended everywhere, as a DELETE ends it).
//!
//! Sessions are named by their fingerprint (the 12 hex digits the logs print) and
//! principals by theirs (`anonymous` as is): neither a session id nor a principal's
//! name is ever printed. Every command reads the index of every session a page at a
//! time ([`Sessions::census`]), so it works on a Redis Cluster as on one node and never
//! holds more than a page of records (and one count per principal).

use std::{collections::HashMap, process::ExitCode};

use crate::{
    ids::fingerprint,
    mcp::end_session,
    sessions::{ANONYMOUS, Sessions, StoredSession},
    state::AppState,
};

/// What `sessions` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SessionsCommand {
    /// Live sessions by principal, with the total.
    Count,
    /// One session's record, by fingerprint.
    Show(String),
    /// End one session everywhere, by fingerprint.
    End(String),
}

impl SessionsCommand {
    /// The command of the words after `sessions`, or why they are not one.
    pub(super) fn parse(mut words: impl Iterator<Item = String>) -> Result<Self, &'static str> {
        let fingerprint = |word: Option<String>| match word {
            Some(fp) if is_fingerprint(&fp) => Ok(fp),
            Some(_) => {
                Err("a session fingerprint is 12 lowercase hex digits, as the logs print it")
            }
            None => Err("`sessions show` and `sessions end` need a session fingerprint"),
        };
        match words.next().as_deref() {
            Some("count") => Ok(Self::Count),
            Some("show") => Ok(Self::Show(fingerprint(words.next())?)),
            Some("end") => Ok(Self::End(fingerprint(words.next())?)),
            _ => Err("`sessions` needs `count`, `show FINGERPRINT` or `end FINGERPRINT`"),
        }
    }
}

fn is_fingerprint(word: &str) -> bool {
    word.len() == 12 && word.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// How a principal is printed: its fingerprint, never its name.
fn principal_label(owner: &str) -> String {
    if owner == ANONYMOUS {
        ANONYMOUS.to_owned()
    } else {
        format!("p:{}", fingerprint(owner))
    }
}

/// Runs `command` against `state`'s store; the exit code (1 when the store cannot be
/// read or no live session has the fingerprint).
pub(super) async fn run(name: &str, state: &AppState, command: SessionsCommand) -> ExitCode {
    let outcome = match command {
        SessionsCommand::Count => count(&state.sessions).await,
        SessionsCommand::Show(fp) => match find(&state.sessions, &fp).await {
            Ok(Some(session)) => {
                print!("{}", describe(&fp, &session));
                Ok(())
            }
            Ok(None) => Err(format!("no live session has the fingerprint {fp}")),
            Err(e) => Err(e),
        },
        SessionsCommand::End(fp) => match find(&state.sessions, &fp).await {
            Ok(Some(session)) => {
                match end_session(
                    &state.sessions,
                    state.bus.as_ref(),
                    &session.owner,
                    &session.id,
                )
                .await
                {
                    Ok(true) => {
                        println!("session {fp} ended");
                        Ok(())
                    }
                    Ok(false) => Err(format!("session {fp} had already ended")),
                    Err(e) => Err(e.to_string()),
                }
            }
            Ok(None) => Err(format!("no live session has the fingerprint {fp}")),
            Err(e) => Err(e),
        },
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the live sessions by principal, most first, and the total.
async fn count(sessions: &Sessions) -> Result<(), String> {
    let mut by_owner: HashMap<String, u64> = HashMap::new();
    sessions
        .census(&mut |session| {
            *by_owner.entry(session.owner).or_default() += 1;
            true
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut rows: Vec<(String, u64)> = by_owner
        .into_iter()
        .map(|(owner, n)| (principal_label(&owner), n))
        .collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    println!("{:<16} {:>8}", "principal", "sessions");
    let mut total = 0;
    for (label, n) in rows {
        println!("{label:<16} {n:>8}");
        total += n;
    }
    println!("{:<16} {total:>8}", "total");
    Ok(())
}

/// The live session whose id has fingerprint `fp`; an error when two have it (the
/// fingerprint is short: ask for the session another way).
async fn find(sessions: &Sessions, fp: &str) -> Result<Option<StoredSession>, String> {
    let mut found: Vec<StoredSession> = Vec::new();
    sessions
        .census(&mut |session| {
            if fingerprint(&session.id) == fp {
                found.push(session);
            }
            found.len() < 2
        })
        .await
        .map_err(|e| e.to_string())?;
    if found.len() > 1 {
        return Err(format!(
            "more than one live session has the fingerprint {fp}"
        ));
    }
    Ok(found.pop())
}

/// `session`'s record as `show` prints it, one field a line.
fn describe(fp: &str, session: &StoredSession) -> String {
    let time = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms).map_or_else(
            || ms.to_string(),
            |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        )
    };
    let era = if session.transport {
        "2025 (a transport session: Mcp-Session-Id)"
    } else {
        "2026-07-28 (a session_create handle)"
    };
    let expires = match session.expires_in_ms {
        ms if ms >= 0 => format!("in {} s", ms / 1000),
        -1 => "never (no expiry: a fault)".to_owned(),
        _ => "now (ended)".to_owned(),
    };
    let (holder, lease) = match (&session.holder, session.lease_until_ms) {
        (Some(replica), Some(until)) => (replica.clone(), time(until)),
        (Some(replica), None) => (replica.clone(), "none".to_owned()),
        (None, _) => ("none".to_owned(), "none".to_owned()),
    };
    format!(
        "session     {fp}\n\
         era         {era}\n\
         principal   {}\n\
         created     {}\n\
         last seen   {}\n\
         expires     {expires}\n\
         holder      {holder}\n\
         lease until {lease}\n",
        principal_label(&session.owner),
        time(session.created_at_ms),
        time(session.last_accessed_ms),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> impl Iterator<Item = String> {
        s.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn commands_parse_and_fingerprints_are_checked() {
        assert_eq!(
            SessionsCommand::parse(words("count")),
            Ok(SessionsCommand::Count)
        );
        assert_eq!(
            SessionsCommand::parse(words("show 0123456789ab")),
            Ok(SessionsCommand::Show("0123456789ab".into()))
        );
        assert_eq!(
            SessionsCommand::parse(words("end 0123456789ab")),
            Ok(SessionsCommand::End("0123456789ab".into()))
        );
        for bad in [
            "",
            "list",
            "show",
            "show 0123",
            "end 0123456789AB",
            "show x".repeat(3).as_str(),
        ] {
            assert!(SessionsCommand::parse(words(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn show_prints_fingerprints_and_never_the_id_nor_the_principal() {
        let session = StoredSession {
            id: crate::ids::mint(),
            owner: "alice".into(),
            transport: true,
            created_at_ms: 1_000,
            last_accessed_ms: 2_000,
            expires_in_ms: 61_000,
            holder: Some("replica-1".into()),
            lease_until_ms: Some(3_000),
        };
        let fp = fingerprint(&session.id);
        let text = describe(&fp, &session);
        assert!(!text.contains(&session.id), "{text}");
        assert!(!text.contains("alice"), "{text}");
        for part in [
            fp.as_str(),
            "2025",
            "replica-1",
            "in 61 s",
            "1970-01-01T00:00:01.000Z",
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
    }
}
