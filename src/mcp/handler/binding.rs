//! Which state session a tool call acts on (`Binding`), who is calling and by when its
//! store calls must be done, so every tool finds its session (failing with a
//! [`ToolFailure`]).
//!
//! A call names its session with a `session_id` argument (the 2026-07-28 way: a handle
//! minted by `session_create`). A 2025-era call may omit it and then uses its
//! connection's session, but only when the edge confirmed that session for this very
//! request ([`TransportSession`]): an `Mcp-Session-Id` header alone binds nothing.

use rmcp::{RoleServer, service::RequestContext};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::mcp::{
    error::ToolFailure,
    extensions::{Deadline, IdempotencyKey, TransportSession},
};
use crate::{auth::Principal, sessions::Retry};

/// The state session of one call: its id, where the id came from (which decides how
/// errors read), the caller it must belong to, and the request's deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Binding {
    id: String,
    source: Source,
    principal: Principal,
    deadline: Option<Deadline>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// An explicit `session_id` handle.
    Handle,
    /// The 2025-era connection's own session, confirmed by the edge.
    Transport,
}

impl Binding {
    /// The explicit handle, else the confirmed transport session of the request.
    ///
    /// # Errors
    /// A [`ToolFailure::Refused`] that tells the caller to create a session.
    pub(crate) fn of(
        ctx: &RequestContext<RoleServer>,
        explicit: Option<String>,
    ) -> Result<Self, ToolFailure> {
        if let Some(id) = explicit {
            return Ok(Self::handle(id, ctx));
        }
        let id = transport_session(ctx).ok_or_else(|| {
            ToolFailure::Refused(
                "Missing `session_id`: call the `session_create` tool first and pass the \
                 `session_id` it returns to this tool."
                    .to_owned(),
            )
        })?;
        Ok(Self {
            id,
            source: Source::Transport,
            principal: caller(ctx),
            deadline: deadline(ctx),
        })
    }

    /// An explicit handle, of the request's caller.
    pub(crate) fn handle(id: String, ctx: &RequestContext<RoleServer>) -> Self {
        Self {
            id,
            source: Source::Handle,
            principal: caller(ctx),
            deadline: deadline(ctx),
        }
    }

    /// The session id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The principal the session must belong to.
    pub(crate) fn principal(&self) -> &str {
        self.principal.as_str()
    }

    /// When the call's store operations must be done, if the edge set a deadline.
    pub(crate) fn deadline(&self) -> Option<Deadline> {
        self.deadline
    }

    /// What the caller sees when the session is unknown, phrased by how the call named
    /// it. Another principal's session reads exactly as an unknown one.
    pub(crate) fn not_found(&self) -> ToolFailure {
        ToolFailure::Refused(match self.source {
            Source::Handle => format!(
                "Session `{}` is unknown or has expired. Call `session_create` to get a \
                     new `session_id`.",
                self.id
            ),
            Source::Transport => "This connection's session has expired. Initialize a \
                                      new MCP session, or call `session_create` and pass \
                                      its `session_id`."
                .to_owned(),
        })
    }
}

/// The [`Retry`] of `principal`'s call to `tool` with `args`, when the client sent an
/// `idempotencyKey`: the key is scoped to the caller and the tool, and the arguments'
/// fingerprint tells a retry from a reuse of the key.
pub(crate) fn retry_of<A: Serialize>(
    ctx: &RequestContext<RoleServer>,
    principal: &str,
    tool: &str,
    args: &A,
) -> Option<Retry> {
    let key = ctx
        .extensions
        .get::<http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<IdempotencyKey>())?;
    let scope = Sha256::new()
        .chain_update(principal)
        .chain_update([0])
        .chain_update(tool)
        .chain_update([0])
        .chain_update(&key.0)
        .finalize();
    // Typed arguments serialize their fields in declaration order: equal arguments give
    // equal fingerprints whatever order the client wrote them in.
    let fingerprint = Sha256::new()
        .chain_update(serde_json::to_vec(args).unwrap_or_default())
        .finalize();
    Some(Retry {
        key: crate::ids::hex(&scope),
        fingerprint: crate::ids::hex(&fingerprint),
    })
}

/// The authenticated caller of the request (the edge puts it there before rmcp runs).
pub fn caller(ctx: &RequestContext<RoleServer>) -> Principal {
    ctx.extensions
        .get::<http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Principal>())
        .cloned()
        .unwrap_or_else(Principal::anonymous)
}

/// The request's deadline (the edge puts it there before rmcp runs): its store calls
/// must be done by then.
pub fn deadline(ctx: &RequestContext<RoleServer>) -> Option<Deadline> {
    ctx.extensions
        .get::<http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Deadline>())
        .copied()
}

/// The 2025-era transport session the edge confirmed for this request, if any: what a
/// handler should use when a call names no session of its own.
pub fn transport_session(ctx: &RequestContext<RoleServer>) -> Option<String> {
    ctx.extensions
        .get::<http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<TransportSession>())
        .map(|session| session.0.clone())
}
