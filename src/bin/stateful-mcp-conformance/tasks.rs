//! The tasks extension's fixtures the official conformance suite calls (its `tasks-*`
//! scenarios): job tools of the production handler (this binary builds it with them),
//! so they run on the same task runner and store as `prime_count`:
//!
//! - `greet`: never a task, `Hello, {name}!`;
//! - `slow_compute`: a task when allowed, sleeps `seconds` then answers;
//! - `failing_job`: task required, a tool error after a second;
//! - `protocol_error_job`: a task when allowed, fails with a JSON-RPC error;
//! - `confirm_delete`, `multi_input`: tasks that ask the client for input (one request,
//!   then two at once) and finish once answered through `tasks/update`;
//! - `test_tool_with_task`: task required; an MRTR round asks for `user_name`, then the
//!   retried call becomes a task whose result names the user.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ContentBlock, InputRequests, InputRequiredResult,
    JsonObject, Tool,
};
use serde_json::{Value as Json, json};
use stateful_mcp::mcp::handler::tasks::{JobTool, Plan, Planner, TaskSupport, outcome_of, planner};
use stateful_mcp::tasks::{Job, NoInput, Outcome, TaskContext};

/// Longest `slow_compute` sleep, so a call cannot hold a worker for long.
const MAX_SECONDS: u64 = 600;

/// The fixtures, for [`stateful_mcp::mcp::handler::StatefulServer::with_jobs`].
pub(super) fn task_fixtures() -> Vec<JobTool> {
    let mut jobs = Vec::new();
    let string = |description: &str| json!({"type": "string", "description": description});
    jobs.push(fixture(
        "greet",
        "Greets `name` (never a task).",
        json!({"name": string("Who to greet")}),
        TaskSupport::Forbidden,
        planner(|args| {
            let name = text(&args, "name", "World");
            job(async move { done(format!("Hello, {name}!")) })
        }),
    ));
    jobs.push(fixture(
        "slow_compute",
        "Sleeps `seconds` (at most 600), reporting each one, then answers.",
        json!({
            "seconds": {"type": "integer", "minimum": 0, "maximum": MAX_SECONDS},
            "label": string("Named in the result"),
        }),
        TaskSupport::Optional,
        planner(|args| {
            let seconds = args
                .get("seconds")
                .and_then(Json::as_u64)
                .unwrap_or(1)
                .min(MAX_SECONDS);
            let label = text(&args, "label", "slow_compute");
            Box::new(move |ctx: TaskContext| {
                Box::pin(async move {
                    for second in 0..seconds {
                        ctx.progress(&format!("{label}: {second} of {seconds} seconds"))
                            .await;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    done(format!("{label}: computed for {seconds} seconds"))
                })
            })
        }),
    ));
    jobs.push(fixture(
        "failing_job",
        "Fails with a tool error after a second (task required).",
        json!({}),
        TaskSupport::Required,
        planner(|_| {
            job(async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                outcome_of(Ok(CallToolResult::error(vec![ContentBlock::text(
                    "failing_job failed, as it always does",
                )])))
            })
        }),
    ));
    jobs.push(fixture(
        "protocol_error_job",
        "Fails with a JSON-RPC internal error (a protocol-level failure).",
        json!({}),
        TaskSupport::Optional,
        planner(|_| {
            job(async {
                Outcome::Failed(json!({
                    "code": -32603,
                    "message": "protocol_error_job failed with an internal error, as it always does",
                }))
            })
        }),
    ));
    jobs.push(fixture(
        "confirm_delete",
        "Asks the client to confirm deleting `filename`, then answers (a task).",
        json!({"filename": string("The file to delete")}),
        TaskSupport::Optional,
        planner(|args| {
            let filename = text(&args, "filename", "file.txt");
            Box::new(move |ctx: TaskContext| {
                Box::pin(async move {
                    let asked = BTreeMap::from([(
                        "confirm".to_owned(),
                        confirm_request(&format!("Delete {filename}?")),
                    )]);
                    let answers = match ctx.ask(asked).await {
                        Ok(answers) => answers,
                        Err(why) => return no_input(why),
                    };
                    if accepted(answers.get("confirm"), "confirm") {
                        done(format!("Deleted {filename}"))
                    } else {
                        done(format!("Kept {filename}"))
                    }
                })
            })
        }),
    ));
    jobs.push(fixture(
        "multi_input",
        "Asks the client two questions at once, then answers (a task).",
        json!({}),
        TaskSupport::Optional,
        planner(|_| {
            Box::new(move |ctx: TaskContext| {
                Box::pin(async move {
                    let asked = BTreeMap::from([
                        ("name".to_owned(), name_request("Your name?")),
                        ("confirm".to_owned(), confirm_request("Proceed?")),
                    ]);
                    let answers = match ctx.ask(asked).await {
                        Ok(answers) => answers,
                        Err(why) => return no_input(why),
                    };
                    done(format!("Received {} answers", answers.len()))
                })
            })
        }),
    ));
    jobs.push(fixture(
        "test_tool_with_task",
        "Asks for `user_name` (MRTR), then greets the user from a task (task required).",
        json!({}),
        TaskSupport::Required,
        Box::new(with_user_name),
    ));
    jobs
}

/// `test_tool_with_task`: the first round asks, the retried call with the answer runs.
fn with_user_name(params: &CallToolRequestParams) -> Plan {
    let answer = params
        .input_responses
        .as_ref()
        .and_then(|answers| answers.get("user_name"));
    let Some(answer) = answer else {
        let requests: InputRequests = serde_json::from_value(json!({
            "user_name": name_request("What is your name?"),
        }))
        .unwrap_or_default();
        return Plan::Answer(InputRequiredResult::from_input_requests(requests).into());
    };
    let name = answer
        .get("content")
        .and_then(|c| c.get("name"))
        .and_then(Json::as_str)
        .unwrap_or("stranger")
        .chars()
        .take(100)
        .collect::<String>();
    Plan::Run(job(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        done(format!("Hello, {name}! (from a task)"))
    }))
}

fn fixture(
    name: &'static str,
    description: &'static str,
    properties: Json,
    support: TaskSupport,
    plan: Planner,
) -> JobTool {
    let schema = json!({"type": "object", "properties": properties});
    let schema = match schema {
        Json::Object(map) => map,
        _ => JsonObject::new(),
    };
    JobTool {
        tool: Tool::new(name, description, Arc::new(schema)),
        support,
        routed: false,
        plan,
    }
}

/// A job that ignores its context.
fn job(work: impl Future<Output = Outcome> + Send + 'static) -> Job {
    Box::new(move |_ctx: TaskContext| Box::pin(work))
}

fn done(text: String) -> Outcome {
    outcome_of(Ok(CallToolResult::success(vec![ContentBlock::text(text)])))
}

/// What a job that could not get its input answers: outside a task, a tool error that
/// says how to call it; inside one, a failed task that says why (a stopped task's
/// answer is never recorded).
fn no_input(why: NoInput) -> Outcome {
    if why == NoInput::Inline {
        return outcome_of(Ok(CallToolResult::error(vec![ContentBlock::text(
            why.to_string(),
        )])));
    }
    Outcome::Failed(json!({"code": -32603, "message": why.to_string()}))
}

/// The string argument `key`, at most 100 characters, or `default`.
fn text(args: &JsonObject, key: &str, default: &str) -> String {
    args.get(key)
        .and_then(Json::as_str)
        .unwrap_or(default)
        .chars()
        .take(100)
        .collect()
}

/// An `elicitation/create` form request for one field of `kind`.
fn elicitation(message: &str, field: &str, kind: &str) -> Json {
    json!({
        "method": "elicitation/create",
        "params": {
            "mode": "form",
            "message": message,
            "requestedSchema": {
                "type": "object",
                "properties": {field: {"type": kind}},
                "required": [field],
            },
        },
    })
}

fn confirm_request(message: &str) -> Json {
    elicitation(message, "confirm", "boolean")
}

fn name_request(message: &str) -> Json {
    elicitation(message, "name", "string")
}

/// Whether an elicitation answer accepted with `field` true.
fn accepted(answer: Option<&Json>, field: &str) -> bool {
    answer.is_some_and(|a| {
        a.get("action").and_then(Json::as_str) == Some("accept")
            && a.get("content")
                .and_then(|c| c.get(field))
                .and_then(Json::as_bool)
                == Some(true)
    })
}

#[cfg(test)]
mod tests {
    use rmcp::model::InputRequest;

    use super::*;

    #[test]
    fn input_requests_are_what_rmcp_reads() {
        for request in [confirm_request("ok?"), name_request("who?")] {
            let parsed: InputRequest = serde_json::from_value(request.clone()).unwrap();
            assert!(matches!(parsed, InputRequest::Elicitation(_)), "{request}");
        }
    }

    #[test]
    fn answers_accept_only_a_true_confirmation() {
        let yes = json!({"action": "accept", "content": {"confirm": true}});
        let no = json!({"action": "decline"});
        assert!(accepted(Some(&yes), "confirm"));
        assert!(!accepted(Some(&no), "confirm"));
        assert!(!accepted(None, "confirm"));
    }
}
