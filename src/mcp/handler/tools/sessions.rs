//! The session family: `session_create`, `session_delete` and `session_info`, the tools
//! that start, end and describe a session handle.

use rmcp::{
    RoleServer,
    handler::server::{common::schema_for_output, wrapper::Parameters},
    schemars::{self, JsonSchema},
    service::RequestContext,
    tool, tool_router,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ToolResult, iso, reply, until_deadline};
use crate::{
    mcp::handler::{
        StatefulServer,
        binding::{Binding, caller, deadline, retry_of},
    },
    sessions::NewSession,
};

/// Arguments of tools that only need the session.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct SessionArgs {
    /// Session handle from `session_create`; optional on 2025-era connections.
    #[serde(default)]
    pub session_id: Option<String>,
}

/// `session_info` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SessionInfoOutput {
    /// The session id.
    pub session_id: String,
    /// Creation time (ISO 8601, UTC).
    pub created_at: String,
    /// Last access time (ISO 8601, UTC), this call included.
    pub last_accessed: String,
    /// Keys of the values the session holds.
    pub data_keys: Vec<String>,
    /// What the client said about itself, when it did.
    pub client_info: Option<Value>,
    /// Seconds of inactivity after which the session expires.
    pub expires_after_secs: u64,
}

/// `session_create` arguments (none needed).
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
pub struct CreateArgs {}

/// `session_create` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CreateOutput {
    /// The new handle: pass it as `session_id` to the stateful tools.
    pub session_id: String,
    /// Seconds of inactivity after which the session expires.
    pub expires_after_secs: u64,
}

/// `session_delete` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct DeleteArgs {
    /// The handle to end.
    pub session_id: String,
}

/// `session_delete` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DeleteOutput {
    /// The handle named.
    pub session_id: String,
    /// Whether a live session was ended.
    pub deleted: bool,
}

#[tool_router(router = sessions_tools, vis = "pub(super)")]
impl StatefulServer {
    /// Starts a session and returns its handle.
    #[tool(
        description = "Start a new session and return its `session_id` handle. Pass the \
                       handle to the stateful tools (counter, history, session_info).",
        output_schema = schema_for_output::<CreateOutput>()
    )]
    async fn session_create(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<CreateArgs>,
    ) -> ToolResult {
        let client_info = ctx
            .client_info()
            .and_then(|info| serde_json::to_value(info).ok());
        let principal = caller(&ctx).as_str().to_owned();
        let retry = retry_of(&ctx, &principal, "session_create", &args);
        let create = self.sessions.create(NewSession {
            id: None,
            principal,
            client_info,
            transport: None,
            retry,
            lease: None,
        });
        let created = until_deadline(&self.metrics, deadline(&ctx), create).await;
        let session = created.map_err(|e| self.errors.session(e))?;
        self.metrics.sessions_created.inc();
        let out = CreateOutput {
            session_id: session.id,
            expires_after_secs: self.sessions.limits().timeout_secs,
        };
        reply(
            format!(
                "Session created: {}. Pass it as `session_id`; it expires after {} s without use.",
                out.session_id, out.expires_after_secs
            ),
            &out,
        )
    }

    /// Ends a session.
    #[tool(
        description = "End a session created with `session_create`.",
        output_schema = schema_for_output::<DeleteOutput>()
    )]
    async fn session_delete(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<DeleteArgs>,
    ) -> ToolResult {
        let binding = Binding::handle(args.session_id, &ctx);
        let deleted = self
            .in_session(
                &binding,
                self.sessions.delete(binding.principal(), binding.id()),
            )
            .await?;
        if !deleted {
            return Err(binding.not_found());
        }
        reply(
            format!("Session {} deleted.", binding.id()),
            &DeleteOutput {
                session_id: binding.id().to_owned(),
                deleted: true,
            },
        )
    }

    /// Describes the session.
    #[tool(
        description = "Show the session's id, creation and last access times, data keys and \
                       client info.",
        output_schema = schema_for_output::<SessionInfoOutput>()
    )]
    async fn session_info(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<SessionArgs>,
    ) -> ToolResult {
        let binding = Binding::of(&ctx, args.session_id)?;
        let session = self
            .in_session(
                &binding,
                self.sessions.get(binding.principal(), binding.id()),
            )
            .await?;
        let out = SessionInfoOutput {
            session_id: session.id,
            created_at: iso(session.created_at_ms),
            last_accessed: iso(session.last_accessed_ms),
            data_keys: session.data.keys().cloned().collect(),
            client_info: session.client_info,
            expires_after_secs: self.sessions.limits().timeout_secs,
        };
        let client = out
            .client_info
            .as_ref()
            .map_or_else(|| "unknown".to_owned(), Value::to_string);
        reply(
            format!(
                "Session {}\ncreated_at: {}\nlast_accessed: {}\ndata keys: {}\nclient: {client}",
                out.session_id,
                out.created_at,
                out.last_accessed,
                if out.data_keys.is_empty() {
                    "(none)".to_owned()
                } else {
                    out.data_keys.join(", ")
                },
            ),
            &out,
        )
    }
}
