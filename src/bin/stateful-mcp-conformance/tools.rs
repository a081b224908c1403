//! The fixture tools of both eras: content of every kind, an error, progress, logging,
//! schemas with JSON Schema 2020-12 keywords and an `x-mcp-header` parameter, and the
//! 2026-07-28 diagnostics (a missing client capability, an elicitation on the response
//! stream, logging only at the request's `logLevel`, list-changed triggers for listen
//! streams). Sampling and elicitation are in `requests.rs`.

#![expect(deprecated, reason = "logging is what the 2025-era suites test")]

use std::{sync::Arc, time::Duration};

use rmcp::{
    ErrorData as McpError, RoleServer,
    handler::server::wrapper::Parameters,
    model::{
        CallToolResult, ClientCapabilities, ContentBlock, InputRequest, InputRequests,
        InputRequiredResult, JsonObject, LoggingLevel, LoggingMessageNotificationParam,
        ProgressNotificationParam, ResourceContents,
    },
    service::RequestContext,
    tool, tool_router,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    ConformanceServer,
    catalog::{PNG, WAV},
    requests::form,
    session_state::passes,
};
use stateful_mcp::mcp::handler::{
    binding::{caller, transport_session},
    notify::Change,
};

/// The pause between the messages of the logging and progress fixtures: the scenarios
/// ask for ~50 ms, so a client sees them arrive one by one.
const STEP: Duration = Duration::from_millis(50);
/// The logger name on the fixtures' log messages.
const LOGGER: &str = "stateful-mcp-conformance";

/// `test_custom_header` arguments (the schema is [`custom_header_schema`]).
#[derive(Debug, Deserialize)]
pub(super) struct CustomHeaderArgs {
    value: String,
}

/// `json_schema_2020_12_tool` arguments (the schema is [`json_schema_2020_12`]).
#[derive(Debug, Deserialize)]
pub(super) struct ContactArgs {
    #[serde(default)]
    name: Option<String>,
}

/// An object schema from JSON the fixtures write by hand.
fn object(value: Value) -> Arc<JsonObject> {
    Arc::new(value.as_object().cloned().unwrap_or_default())
}

/// A schema that keeps JSON Schema 2020-12 keywords (`$schema`, `$defs` with an
/// `$anchor`, `allOf`/`anyOf`, `if`/`then`/`else`, `additionalProperties`).
fn json_schema_2020_12() -> Arc<JsonObject> {
    object(json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "$defs": {
            "address": {
                "$anchor": "addressDef",
                "type": "object",
                "properties": {"street": {"type": "string"}, "city": {"type": "string"}}
            }
        },
        "properties": {
            "name": {"type": "string"},
            "address": {"$ref": "#/$defs/address"},
            "contactMethod": {"type": "string", "enum": ["phone", "email"]},
            "phone": {"type": "string"},
            "email": {"type": "string"}
        },
        "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
        "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
        "then": {"required": ["phone"]},
        "else": {"required": ["email"]},
        "additionalProperties": false
    }))
}

/// A string parameter the client mirrors into an `Mcp-Param-Value` header (SEP-2243);
/// rmcp checks the header against the body before the tool runs.
fn custom_header_schema() -> Arc<JsonObject> {
    object(json!({
        "type": "object",
        "properties": {"value": {"type": "string", "x-mcp-header": "Value"}},
        "required": ["value"]
    }))
}

impl ConformanceServer {
    /// The log level this request asked for: the 2026-07-28 `_meta` `logLevel`, else the
    /// level its 2025-era session set (everything when it set none); `None`: no logging.
    async fn log_threshold(
        &self,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<Option<LoggingLevel>, McpError> {
        if let Some(level) = ctx.meta.log_level() {
            return Ok(Some(level));
        }
        match transport_session(ctx) {
            Some(id) => {
                let level = self.session_state(caller(ctx), id).log_level().await?;
                Ok(Some(level.unwrap_or(LoggingLevel::Debug)))
            }
            None => Ok(None),
        }
    }

    /// Sends `message` at `level` when the request's threshold lets it through; whether
    /// it did. (A 2025-era session's log messages travel on its standalone GET stream.)
    async fn log(
        ctx: &RequestContext<RoleServer>,
        threshold: Option<LoggingLevel>,
        level: LoggingLevel,
        message: &str,
    ) -> bool {
        if !threshold.is_some_and(|minimum| passes(level, minimum)) {
            return false;
        }
        let param = LoggingMessageNotificationParam::new(level, json!(message)).with_logger(LOGGER);
        let _ = ctx.peer.notify_logging_message(param).await;
        true
    }
}

#[tool_router(router = fixture_tools, vis = "pub(super)")]
impl ConformanceServer {
    #[tool(description = "Returns a simple text response")]
    async fn test_simple_text(&self) -> CallToolResult {
        CallToolResult::success(vec![ContentBlock::text(
            "This is a simple text response for testing.",
        )])
    }

    #[tool(description = "Returns an image (a 1x1 red PNG)")]
    async fn test_image_content(&self) -> CallToolResult {
        CallToolResult::success(vec![ContentBlock::image(PNG, "image/png")])
    }

    #[tool(description = "Returns audio (an empty WAV)")]
    async fn test_audio_content(&self) -> CallToolResult {
        CallToolResult::success(vec![ContentBlock::audio(WAV, "audio/wav")])
    }

    #[tool(description = "Returns an embedded text resource")]
    async fn test_embedded_resource(&self) -> CallToolResult {
        CallToolResult::success(vec![ContentBlock::resource(
            ResourceContents::text(
                "This is an embedded resource content.",
                "test://embedded-resource",
            )
            .with_mime_type("text/plain"),
        )])
    }

    #[tool(description = "Returns text, an image and an embedded resource")]
    async fn test_multiple_content_types(&self) -> CallToolResult {
        CallToolResult::success(vec![
            ContentBlock::text("Multiple content types test:"),
            ContentBlock::image(PNG, "image/png"),
            ContentBlock::resource(
                ResourceContents::text(
                    r#"{"test":"data","value":123}"#,
                    "test://mixed-content-resource",
                )
                .with_mime_type("application/json"),
            ),
        ])
    }

    #[tool(description = "Always fails with a tool error")]
    async fn test_error_handling(&self) -> CallToolResult {
        CallToolResult::error(vec![ContentBlock::text(
            "This tool intentionally returns an error for testing",
        )])
    }

    #[tool(description = "Reports progress 0, 50 and 100 of 100 when given a progress token")]
    async fn test_tool_with_progress(&self, ctx: RequestContext<RoleServer>) -> CallToolResult {
        let token = ctx.meta.get_progress_token();
        for (done, message) in [(0.0, "Starting"), (50.0, "Halfway"), (100.0, "Complete")] {
            if let Some(token) = &token {
                let param = ProgressNotificationParam::new(token.clone(), done)
                    .with_total(100.0)
                    .with_message(message);
                let _ = ctx.peer.notify_progress(param).await;
            }
            tokio::time::sleep(STEP).await;
        }
        CallToolResult::success(vec![ContentBlock::text("Progress test completed")])
    }

    #[tool(
        description = "Sends three info log messages while it runs, filtered by the session's \
                       logging/setLevel"
    )]
    async fn test_tool_with_logging(
        &self,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let threshold = self.log_threshold(&ctx).await?;
        let mut sent = 0;
        for message in [
            "Tool execution started",
            "Tool processing data",
            "Tool execution completed",
        ] {
            sent += usize::from(Self::log(&ctx, threshold, LoggingLevel::Info, message).await);
            tokio::time::sleep(STEP).await;
        }
        Ok(CallToolResult::success(vec![ContentBlock::text(format!(
            "Logging test completed: {sent} of 3 info messages passed the log level"
        ))]))
    }

    #[tool(
        description = "Tool with JSON Schema 2020-12 features",
        input_schema = json_schema_2020_12()
    )]
    async fn json_schema_2020_12_tool(
        &self,
        Parameters(args): Parameters<ContactArgs>,
    ) -> CallToolResult {
        let name = args.name.unwrap_or_else(|| "world".to_owned());
        CallToolResult::success(vec![ContentBlock::text(format!("Hello, {name}!"))])
    }

    #[tool(
        description = "Echoes `value`, which the client also sends as the Mcp-Param-Value header",
        input_schema = custom_header_schema()
    )]
    async fn test_custom_header(
        &self,
        Parameters(args): Parameters<CustomHeaderArgs>,
    ) -> CallToolResult {
        CallToolResult::success(vec![ContentBlock::text(args.value)])
    }

    #[tool(description = "Waits briefly, then answers (SSE polling and resumption)")]
    async fn test_reconnection(&self) -> CallToolResult {
        tokio::time::sleep(2 * STEP).await;
        CallToolResult::success(vec![ContentBlock::text("Reconnection test completed")])
    }

    #[tool(description = "Needs the client's sampling capability (-32021 without it)")]
    async fn test_missing_capability(
        &self,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        if ctx
            .client_capabilities()
            .is_none_or(|caps| caps.sampling.is_none())
        {
            return Err(McpError::missing_required_client_capability(
                ClientCapabilities::builder().enable_sampling().build(),
            ));
        }
        Ok(CallToolResult::success(vec![ContentBlock::text(
            "The sampling capability was declared",
        )]))
    }

    #[tool(description = "Asks for input with an elicitation in an input_required result")]
    async fn test_streaming_elicitation(&self) -> Result<InputRequiredResult, McpError> {
        let params = form(
            "Provide a value",
            json!({
                "type": "object",
                "properties": {"value": {"type": "string"}},
                "required": ["value"]
            }),
        )?;
        let requests = InputRequests::from([(
            "streaming_elicitation".to_owned(),
            InputRequest::Elicitation(rmcp::model::ElicitRequest::new(params)),
        )]);
        Ok(InputRequiredResult::from_input_requests(requests))
    }

    #[tool(description = "Logs one message, only when the request sets a logLevel")]
    async fn test_logging_tool(
        &self,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let threshold = self.log_threshold(&ctx).await?;
        Self::log(
            &ctx,
            threshold,
            LoggingLevel::Info,
            "logLevel was requested",
        )
        .await;
        Ok(CallToolResult::success(vec![ContentBlock::text(
            "Logging tool completed",
        )]))
    }

    #[tool(
        description = "Announces a tools/list_changed on every replica's subscriptions/listen \
                       streams (the list itself stays as it is)"
    )]
    async fn test_trigger_tool_change(&self) -> Result<CallToolResult, McpError> {
        self.announce(Change::ToolsListChanged, "Tool").await
    }

    #[tool(
        description = "Announces a prompts/list_changed on every replica's subscriptions/listen \
                       streams (the list itself stays as it is)"
    )]
    async fn test_trigger_prompt_change(&self) -> Result<CallToolResult, McpError> {
        self.announce(Change::PromptsListChanged, "Prompt").await
    }
}

impl ConformanceServer {
    /// Publishes `change` to every replica's listen streams; `what` names the list.
    async fn announce(&self, change: Change, what: &str) -> Result<CallToolResult, McpError> {
        self.notifier.publish(change).await?;
        Ok(CallToolResult::success(vec![ContentBlock::text(format!(
            "{what} list change published"
        ))]))
    }
}
