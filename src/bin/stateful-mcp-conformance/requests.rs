//! The 2025-era fixtures that ask the client something on the session's stream:
//! sampling (`sampling/createMessage`) and elicitation (`elicitation/create`), forms with
//! defaults (SEP-1034) and with every kind of enum (SEP-1330). The builders of those
//! requests serve the 2026-07-28 `input_required` fixtures too.

#![expect(
    deprecated,
    reason = "sampling and elicitation are what the 2025-era suites test"
)]

use std::time::Duration;

use rmcp::{
    ErrorData as McpError, RoleServer,
    handler::server::wrapper::Parameters,
    model::{
        CallToolResult, ContentBlock, CreateMessageRequestParams, ElicitRequestParams,
        ElicitationSchema, SamplingMessage,
    },
    schemars::{self, JsonSchema},
    service::RequestContext,
    tool, tool_router,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ConformanceServer;

/// How long a fixture waits for the client to answer a sampling or elicitation request.
const CLIENT_ANSWER: Duration = Duration::from_secs(60);

/// `test_sampling` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct SamplingArgs {
    /// The prompt to send to the client's model.
    prompt: String,
}

/// `test_elicitation` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct ElicitationArgs {
    /// The message to show the user.
    message: String,
}

/// An elicitation request for a form with `schema`.
pub(super) fn form(message: &str, schema: Value) -> Result<ElicitRequestParams, McpError> {
    let requested_schema: ElicitationSchema = serde_json::from_value(schema)
        .map_err(|e| McpError::internal_error(format!("elicitation schema: {e}"), None))?;
    Ok(ElicitRequestParams::FormElicitationParams {
        meta: None,
        message: message.to_owned(),
        requested_schema,
    })
}

/// A one-message sampling request for `prompt`.
pub(super) fn sampling(prompt: &str, max_tokens: u32) -> CreateMessageRequestParams {
    CreateMessageRequestParams::new(vec![SamplingMessage::user_text(prompt)], max_tokens)
}

/// Elicits a form with `schema` from the 2025-era client and reports the answer
/// after `label`; an `isError` result when the client cannot answer.
async fn elicit(
    ctx: &RequestContext<RoleServer>,
    message: &str,
    schema: Value,
    label: &str,
) -> Result<CallToolResult, McpError> {
    let params = form(message, schema)?;
    let answer = tokio::time::timeout(CLIENT_ANSWER, ctx.peer.create_elicitation(params));
    Ok(match answer.await {
        Ok(Ok(result)) => {
            let action = serde_json::to_value(&result.action).unwrap_or(Value::Null);
            let content = result.content.unwrap_or(Value::Null);
            let action = action.as_str().unwrap_or_default();
            CallToolResult::success(vec![ContentBlock::text(format!(
                "{label}: action={action}, content={content}"
            ))])
        }
        Ok(Err(e)) => {
            CallToolResult::error(vec![ContentBlock::text(format!("Elicitation failed: {e}"))])
        }
        Err(_) => CallToolResult::error(vec![ContentBlock::text(
            "The client did not answer the elicitation in time",
        )]),
    })
}

#[tool_router(router = request_tools, vis = "pub(super)")]
impl ConformanceServer {
    #[tool(description = "Asks the client's model to answer `prompt` (sampling/createMessage)")]
    async fn test_sampling(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<SamplingArgs>,
    ) -> CallToolResult {
        let answer = tokio::time::timeout(
            CLIENT_ANSWER,
            ctx.peer.create_message(sampling(&args.prompt, 100)),
        );
        match answer.await {
            Ok(Ok(result)) => {
                let answer = result
                    .message
                    .content
                    .first()
                    .and_then(|c| c.as_text())
                    .map_or_else(|| "(no text)".to_owned(), |t| t.text.clone());
                CallToolResult::success(vec![ContentBlock::text(format!("LLM response: {answer}"))])
            }
            Ok(Err(e)) => {
                CallToolResult::error(vec![ContentBlock::text(format!("Sampling failed: {e}"))])
            }
            Err(_) => CallToolResult::error(vec![ContentBlock::text(
                "The client did not answer the sampling request in time",
            )]),
        }
    }

    #[tool(description = "Asks the user for a username and an email (elicitation/create)")]
    async fn test_elicitation(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<ElicitationArgs>,
    ) -> Result<CallToolResult, McpError> {
        elicit(
            &ctx,
            &args.message,
            json!({
                "type": "object",
                "properties": {
                    "username": {"type": "string", "description": "User's response"},
                    "email": {"type": "string", "description": "User's email address"}
                },
                "required": ["username", "email"]
            }),
            "User response",
        )
        .await
    }

    #[tool(description = "Elicits a form whose fields all have defaults (SEP-1034)")]
    async fn test_elicitation_sep1034_defaults(
        &self,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        elicit(
            &ctx,
            "Please provide values (all have defaults)",
            json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string", "description": "User's name", "default": "John Doe"},
                    "age": {"type": "integer", "description": "User's age", "default": 30},
                    "score": {"type": "number", "description": "User's score", "default": 95.5},
                    "status": {
                        "type": "string",
                        "description": "User's status",
                        "enum": ["active", "inactive", "pending"],
                        "default": "active"
                    },
                    "verified": {"type": "boolean", "description": "Whether the user is verified", "default": true}
                }
            }),
            "Elicitation completed",
        )
        .await
    }

    #[tool(description = "Elicits a form with the five kinds of enum (SEP-1330)")]
    async fn test_elicitation_sep1330_enums(
        &self,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        elicit(
            &ctx,
            "Pick options of each kind",
            json!({
                "type": "object",
                "properties": {
                    "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
                    "titledSingle": {
                        "type": "string",
                        "oneOf": [
                            {"const": "value1", "title": "First Option"},
                            {"const": "value2", "title": "Second Option"},
                            {"const": "value3", "title": "Third Option"}
                        ]
                    },
                    "legacyEnum": {
                        "type": "string",
                        "enum": ["opt1", "opt2", "opt3"],
                        "enumNames": ["Option One", "Option Two", "Option Three"]
                    },
                    "untitledMulti": {
                        "type": "array",
                        "items": {"type": "string", "enum": ["option1", "option2", "option3"]}
                    },
                    "titledMulti": {
                        "type": "array",
                        "items": {
                            "anyOf": [
                                {"const": "value1", "title": "First Choice"},
                                {"const": "value2", "title": "Second Choice"},
                                {"const": "value3", "title": "Third Choice"}
                            ]
                        }
                    }
                }
            }),
            "Elicitation completed",
        )
        .await
    }
}
