//! The SEP-2322 fixtures (multi round-trip requests, 2026-07-28): tools and a prompt
//! that answer `input_required` until the client retries with the `inputResponses` they
//! asked for, and the integrity-protected `requestState` some of them carry.
//!
//! The state is sealed by the replica's [`stateful_mcp::mcp::handler::request_state::RequestStates`]
//! (the `[mrtr]` key ring every replica shares), bound to the caller and the fixture
//! and valid for [`STATE_TTL`], so a retry that another replica serves opens it.

#![expect(
    deprecated,
    reason = "sampling and roots are what MRTR input requests carry"
)]

use std::time::Duration;

use rmcp::{
    ErrorData as McpError, RoleServer,
    handler::server::{
        router::tool::ToolRouter,
        tool::{InputResponses, RequestState, ToolName},
    },
    model::{
        CallToolResponse, CallToolResult, ContentBlock, CreateMessageRequest, ElicitRequest,
        GetPromptResponse, GetPromptResult, InputRequest, InputRequests, InputRequiredResult,
        ListRootsRequest, Prompt, PromptMessage, Role,
    },
    service::RequestContext,
    tool, tool_router,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{
    ConformanceServer,
    requests::{form, sampling},
};
use stateful_mcp::mcp::handler::request_state::bound_to;

/// How long a sealed `requestState` stays valid.
pub const STATE_TTL: Duration = Duration::from_secs(600);

/// The MRTR prompt fixture.
pub(super) const MRTR_PROMPT: &str = "test_input_required_result_prompt";

/// What the fixtures keep in `requestState`.
#[derive(Debug, Serialize, Deserialize)]
struct Progress {
    /// The round the client is answering (1 for the first retry).
    round: u32,
}

impl ConformanceServer {
    /// Seals `round` for this caller and `fixture`, with the replica's key ring.
    fn seal_round(
        &self,
        ctx: &RequestContext<RoleServer>,
        fixture: &str,
        round: u32,
    ) -> Result<String, McpError> {
        self.request_states
            .seal(&Progress { round }, &bound_to(ctx, fixture), STATE_TTL)
    }

    /// The round a retry answers: 0 without a state, else the sealed one.
    ///
    /// # Errors
    /// Invalid params for a state that fails verification (forged, tampered, another
    /// caller's or fixture's, an unknown key's, expired).
    fn open_round(
        &self,
        ctx: &RequestContext<RoleServer>,
        fixture: &str,
        state: Option<&str>,
    ) -> Result<u32, McpError> {
        let Some(state) = state else {
            return Ok(0);
        };
        self.request_states
            .open::<Progress>(state, &bound_to(ctx, fixture))
            .map(|p| p.round)
    }
}

/// The response to the input request `key`, when it is an object (an `ElicitResult`,
/// a `CreateMessageResult` or a `ListRootsResult`): anything else counts as missing, and
/// the fixture asks again.
fn response<'a>(input: &'a InputResponses, key: &str) -> Option<&'a Map<String, Value>> {
    input.0.as_ref()?.get(key)?.as_object()
}

/// An accepted elicitation's `field`, as text.
fn elicited<'a>(response: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    response.get("content")?.get(field)?.as_str()
}

fn elicitation(message: &str, field: &str, kind: &str) -> Result<InputRequest, McpError> {
    let params = form(
        message,
        json!({
            "type": "object",
            "properties": {field: {"type": kind}},
            "required": [field]
        }),
    )?;
    Ok(InputRequest::Elicitation(ElicitRequest::new(params)))
}

fn sampling_request(prompt: &str, max_tokens: u32) -> InputRequest {
    InputRequest::CreateMessage(CreateMessageRequest::new(sampling(prompt, max_tokens)))
}

fn roots_request() -> InputRequest {
    InputRequest::ListRoots(ListRootsRequest::default())
}

fn text(text: impl Into<String>) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(text.into())])
}

/// What a fixture answers: a final result, or another round of input requests.
type Answer = Result<CallToolResponse, McpError>;

/// The MRTR prompt fixture's entry in `prompts/list`.
pub(super) fn prompt() -> Prompt {
    Prompt::new(
        MRTR_PROMPT,
        Some("A prompt that first asks for a context with an elicitation (SEP-2322)"),
        None,
    )
}

/// The MRTR prompt: asks for a context, then renders it.
///
/// # Errors
/// Internal, when the elicitation schema does not build.
pub(super) fn render_prompt(
    input: Option<rmcp::model::InputResponses>,
) -> Result<GetPromptResponse, McpError> {
    let input = InputResponses(input);
    if let Some(answer) = response(&input, "user_context") {
        let context = elicited(answer, "context").unwrap_or("(none)");
        return Ok(GetPromptResult::new(vec![PromptMessage::new_text(
            Role::User,
            format!("Prompt with elicited context: {context}"),
        )])
        .into());
    }
    let requests = InputRequests::from([(
        "user_context".to_owned(),
        elicitation("What context should the prompt use?", "context", "string")?,
    )]);
    Ok(InputRequiredResult::from_input_requests(requests).into())
}

#[tool_router(router = mrtr_tools, vis = "pub(super)")]
impl ConformanceServer {
    #[tool(description = "Asks for the user's name with an elicitation input request (SEP-2322)")]
    async fn test_input_required_result_elicitation(&self, input: InputResponses) -> Answer {
        if let Some(answer) = response(&input, "user_name") {
            let name = elicited(answer, "name").unwrap_or("friend");
            return Ok(text(format!("Hello, {name}!")).into());
        }
        let requests = InputRequests::from([(
            "user_name".to_owned(),
            elicitation("What is your name?", "name", "string")?,
        )]);
        Ok(InputRequiredResult::from_input_requests(requests).into())
    }

    #[tool(
        description = "Asks the client's model a question with a sampling input request (SEP-2322)"
    )]
    async fn test_input_required_result_sampling(&self, input: InputResponses) -> Answer {
        if let Some(answer) = response(&input, "capital_question") {
            let said = answer
                .get("content")
                .and_then(|c| c.get("text"))
                .and_then(Value::as_str)
                .unwrap_or("(no text)");
            return Ok(text(format!("Sampling response: {said}")).into());
        }
        let requests = InputRequests::from([(
            "capital_question".to_owned(),
            sampling_request("What is the capital of France?", 100),
        )]);
        Ok(InputRequiredResult::from_input_requests(requests).into())
    }

    #[tool(description = "Asks for the client's roots with a roots/list input request (SEP-2322)")]
    async fn test_input_required_result_list_roots(&self, input: InputResponses) -> Answer {
        if let Some(answer) = response(&input, "client_roots") {
            let roots: Vec<&str> = answer
                .get("roots")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|r| r.get("uri").and_then(Value::as_str))
                .collect();
            return Ok(text(format!("Client roots: [{}]", roots.join(", "))).into());
        }
        let requests = InputRequests::from([("client_roots".to_owned(), roots_request())]);
        Ok(InputRequiredResult::from_input_requests(requests).into())
    }

    #[tool(description = "Asks for a confirmation and carries a sealed requestState (SEP-2322)")]
    async fn test_input_required_result_request_state(
        &self,
        ctx: RequestContext<RoleServer>,
        ToolName(fixture): ToolName,
        RequestState(state): RequestState,
        input: InputResponses,
    ) -> Answer {
        let round = self.open_round(&ctx, &fixture, state.as_deref())?;
        if round == 1 && response(&input, "confirm").is_some() {
            return Ok(text("Confirmed: state-ok").into());
        }
        let requests = InputRequests::from([(
            "confirm".to_owned(),
            elicitation("Please confirm", "ok", "boolean")?,
        )]);
        let sealed = self.seal_round(&ctx, &fixture, 1)?;
        Ok(InputRequiredResult::new(Some(requests), Some(sealed)).into())
    }

    #[tool(
        description = "Asks for an elicitation, a sampling and the roots in one round (SEP-2322)"
    )]
    async fn test_input_required_result_multiple_inputs(
        &self,
        ctx: RequestContext<RoleServer>,
        RequestState(state): RequestState,
        input: InputResponses,
    ) -> Answer {
        const FIXTURE: &str = "test_input_required_result_multiple_inputs";
        let round = self.open_round(&ctx, FIXTURE, state.as_deref())?;
        let answered = ["user_name", "greeting", "client_roots"]
            .iter()
            .all(|key| response(&input, key).is_some());
        if round == 1 && answered {
            return Ok(text("All inputs received").into());
        }
        let requests = InputRequests::from([
            (
                "user_name".to_owned(),
                elicitation("What is your name?", "name", "string")?,
            ),
            (
                "greeting".to_owned(),
                sampling_request("Generate a greeting", 50),
            ),
            ("client_roots".to_owned(), roots_request()),
        ]);
        let sealed = self.seal_round(&ctx, FIXTURE, 1)?;
        Ok(InputRequiredResult::new(Some(requests), Some(sealed)).into())
    }

    #[tool(description = "Asks two questions in two rounds, its requestState changing (SEP-2322)")]
    async fn test_input_required_result_multi_round(
        &self,
        ctx: RequestContext<RoleServer>,
        RequestState(state): RequestState,
        input: InputResponses,
    ) -> Answer {
        const FIXTURE: &str = "test_input_required_result_multi_round";
        let round = self.open_round(&ctx, FIXTURE, state.as_deref())?;
        let (key, question, field) = match round {
            1 if response(&input, "step1").is_some() => {
                ("step2", "Step 2: What is your favorite color?", "color")
            }
            2 if response(&input, "step2").is_some() => {
                return Ok(text("Multi-round flow complete").into());
            }
            // First call, or a retry without the answer asked for: ask (again).
            2 => ("step2", "Step 2: What is your favorite color?", "color"),
            _ => ("step1", "Step 1: What is your name?", "name"),
        };
        let next = if key == "step1" { 1 } else { 2 };
        let requests =
            InputRequests::from([(key.to_owned(), elicitation(question, field, "string")?)]);
        let sealed = self.seal_round(&ctx, FIXTURE, next)?;
        Ok(InputRequiredResult::new(Some(requests), Some(sealed)).into())
    }

    #[tool(
        description = "Asks only for the inputs the client declared capabilities for (SEP-2322)"
    )]
    async fn test_input_required_result_capabilities(
        &self,
        ctx: RequestContext<RoleServer>,
        input: InputResponses,
    ) -> Answer {
        if input.0.as_ref().is_some_and(|r| !r.is_empty()) {
            return Ok(text("Capability-aware flow complete").into());
        }
        let caps = ctx.client_capabilities().unwrap_or_default();
        let mut requests = InputRequests::new();
        if caps.elicitation.is_some() {
            requests.insert(
                "user_name".to_owned(),
                elicitation("What is your name?", "name", "string")?,
            );
        }
        if caps.sampling.is_some() {
            requests.insert(
                "greeting".to_owned(),
                sampling_request("Generate a greeting", 50),
            );
        }
        if caps.roots.is_some() {
            requests.insert("client_roots".to_owned(), roots_request());
        }
        if requests.is_empty() {
            return Ok(text("The client declared no capability an input request needs").into());
        }
        Ok(InputRequiredResult::from_input_requests(requests).into())
    }
}

impl ConformanceServer {
    /// The SEP-2322 tool fixtures. The tampered-state fixture is the request-state one
    /// under a second name: its scenario tampers with the state, which the fixture
    /// rejects as it rejects any state that fails verification (each name seals its
    /// states for itself).
    pub(super) fn mrtr_fixtures() -> ToolRouter<Self> {
        let mut router = Self::mrtr_tools();
        if let Some(mut alias) = router
            .map
            .get("test_input_required_result_request_state")
            .cloned()
        {
            alias.attr.name = "test_input_required_result_tampered_state".into();
            alias.attr.description =
                Some("Rejects a requestState that fails verification (SEP-2322)".into());
            router.add_route(alias);
        }
        router
    }
}
