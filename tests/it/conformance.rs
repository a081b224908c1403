//! The conformance fixtures through replicas of the `stateful-mcp-conformance` binary:
//! a sample of each kind beside the production tools, the 2025-era session state they
//! keep on any replica; and nothing of them in the shipping binary, which refuses the
//! retired `conformance.enabled` key.

use reqwest::Client;
#[expect(deprecated, reason = "sampling is what the 2025-era fixture asks for")]
use rmcp::model::{CreateMessageRequestParams, CreateMessageResult, SamplingMessage};
use rmcp::{
    ClientHandler, ErrorData, RoleClient,
    model::{
        CallToolRequestParams, ClientCapabilities, ClientConfig, GetPromptRequestParams,
        Implementation, ReadResourceRequestParams, ResourceContents,
    },
    service::RequestContext,
};
use serde_json::{Value, json};
use stateful_mcp::mcp::handler::schema::has_nonstandard_format;

use crate::support::{
    client::{
        Client as McpClient, call, create_handle, legacy_client, legacy_client_with,
        stateless_client, text,
    },
    http::{legacy_post, legacy_session, mrtr_call, read_reply},
    redis_server::{RedisServer, unique_prefix},
    replica::{CONFORMANCE_BINARY, Process, SERVER_BINARY},
};

/// The names of the listed tools, after checking every schema carries only formats
/// JSON Schema defines.
async fn tool_names(client: &McpClient) -> Vec<String> {
    let tools = client.list_all_tools().await.unwrap();
    for tool in &tools {
        assert!(
            !has_nonstandard_format(&tool.input_schema)
                && !tool
                    .output_schema
                    .as_deref()
                    .is_some_and(has_nonstandard_format),
            "{} has a format JSON Schema does not define: {:?} {:?}",
            tool.name,
            tool.input_schema,
            tool.output_schema
        );
    }
    tools.into_iter().map(|t| t.name.to_string()).collect()
}

#[tokio::test]
async fn fixtures_are_served_beside_the_production_tools() {
    let redis = RedisServer::shared_or_start().await;
    let replica = Process::start(
        CONFORMANCE_BINARY,
        redis.url(),
        &unique_prefix("fixtures"),
        &[],
    )
    .await;
    let client = stateless_client(&replica.url()).await;

    let names = tool_names(&client).await;
    for expected in [
        "counter",
        "prime_count",
        "test_simple_text",
        "json_schema_2020_12_tool",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    let simple = call(&client, "test_simple_text", json!({})).await;
    assert_eq!(text(&simple), "This is a simple text response for testing.");
    // The production tools answer as before.
    assert_eq!(create_handle(&client).await.len(), 40);

    let read = client
        .read_resource(ReadResourceRequestParams::new("test://template/42/data"))
        .await
        .unwrap();
    let ResourceContents::TextResourceContents { text: data, .. } = &read.contents[0] else {
        panic!("text contents expected: {read:?}");
    };
    assert!(data.contains("Data for ID: 42"), "{data}");

    let args = json!({"arg1": "hello", "arg2": "world"});
    let prompt = client
        .get_prompt(
            GetPromptRequestParams::new("test_prompt_with_arguments")
                .with_arguments(args.as_object().cloned().unwrap()),
        )
        .await
        .unwrap();
    let rendered = serde_json::to_string(&prompt.messages).unwrap();
    assert!(
        rendered.contains("arg1='hello', arg2='world'"),
        "{rendered}"
    );
}

#[tokio::test]
async fn request_state_is_sealed_and_a_tampered_one_refused() {
    let redis = RedisServer::shared_or_start().await;
    let replica =
        Process::start(CONFORMANCE_BINARY, redis.url(), &unique_prefix("mrtr"), &[]).await;
    let url = replica.url();
    let tool = "test_input_required_result_request_state";

    let first = mrtr_call(&url, tool, json!({})).await;
    assert_eq!(first["result"]["resultType"], "input_required", "{first}");
    let state = first["result"]["requestState"].as_str().unwrap().to_owned();
    let confirmed = json!({"confirm": {"action": "accept", "content": {"ok": true}}});

    let tampered = mrtr_call(
        &url,
        tool,
        json!({"inputResponses": confirmed, "requestState": format!("{state}x")}),
    )
    .await;
    assert_eq!(tampered["error"]["code"], -32602, "{tampered}");
    // A state sealed for one fixture does not open another.
    let elsewhere = mrtr_call(
        &url,
        "test_input_required_result_tampered_state",
        json!({"inputResponses": confirmed, "requestState": state}),
    )
    .await;
    assert_eq!(elsewhere["error"]["code"], -32602, "{elsewhere}");

    let done = mrtr_call(
        &url,
        tool,
        json!({"inputResponses": confirmed, "requestState": state}),
    )
    .await;
    assert_eq!(
        done["result"]["content"][0]["text"], "Confirmed: state-ok",
        "{done}"
    );
}

/// What a 2025-era `test_tool_with_logging` call in `session` on `url` reports: how many
/// of its info messages passed the session's log level.
async fn logging_report(url: &str, session: &str) -> String {
    let reply = legacy_request(
        url,
        session,
        "tools/call",
        json!({"name": "test_tool_with_logging", "arguments": {}}),
    )
    .await;
    reply["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("test_tool_with_logging: {reply}"))
        .to_owned()
}

/// Sends the 2025-era request `method` with `params` in `session` to `url`; its reply.
async fn legacy_request(url: &str, session: &str, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let response = legacy_post(&Client::new(), url, session, &body)
        .send()
        .await
        .unwrap();
    read_reply(response).await.1
}

/// The data keys of `session`, as `session_info` on `url` reports them.
async fn data_keys(url: &str, session: &str) -> Vec<String> {
    let info = legacy_request(
        url,
        session,
        "tools/call",
        json!({"name": "session_info", "arguments": {}}),
    )
    .await;
    serde_json::from_value(info["result"]["structuredContent"]["data_keys"].clone())
        .unwrap_or_else(|_| panic!("session_info: {info}"))
}

#[tokio::test]
async fn a_session_keeps_its_log_level_and_subscriptions_on_every_replica() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("fixture-state");
    let a = Process::start(CONFORMANCE_BINARY, redis.url(), &prefix, &[]).await;
    let b = Process::start(CONFORMANCE_BINARY, redis.url(), &prefix, &[]).await;
    let session = legacy_session(&a.url()).await;

    // Info messages pass a session at `debug` and are held back at `warning`, whichever
    // replica set the level and whichever serves the call.
    let set = legacy_request(
        &a.url(),
        &session,
        "logging/setLevel",
        json!({"level": "warning"}),
    )
    .await;
    assert_eq!(set["result"], json!({}), "{set}");
    assert_eq!(
        logging_report(&b.url(), &session).await,
        "Logging test completed: 0 of 3 info messages passed the log level"
    );
    legacy_request(
        &b.url(),
        &session,
        "logging/setLevel",
        json!({"level": "debug"}),
    )
    .await;
    assert_eq!(
        logging_report(&a.url(), &session).await,
        "Logging test completed: 3 of 3 info messages passed the log level"
    );

    let uri = json!({"uri": "test://watched-resource"});
    let subscribed = legacy_request(&a.url(), &session, "resources/subscribe", uri.clone()).await;
    assert_eq!(subscribed["result"], json!({}), "{subscribed}");
    let subscription = |keys: &[String]| {
        keys.iter()
            .any(|k| k.starts_with("conformance.subscription."))
    };
    assert!(subscription(&data_keys(&b.url(), &session).await));
    legacy_request(&b.url(), &session, "resources/unsubscribe", uri).await;
    assert!(!subscription(&data_keys(&a.url(), &session).await));
}

/// A client model that answers every sampling request by echoing the question.
struct EchoModel;

#[expect(deprecated, reason = "sampling is what the 2025-era fixture asks for")]
impl ClientHandler for EchoModel {
    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        let asked = params
            .messages
            .first()
            .and_then(|m| m.content.first())
            .and_then(|c| c.as_text())
            .map(|t| t.text.clone())
            .unwrap_or_default();
        Ok(CreateMessageResult::new(
            SamplingMessage::assistant_text(format!("echo: {asked}")),
            "echo-model".to_owned(),
        ))
    }

    fn get_info(&self) -> ClientConfig {
        let capabilities = ClientCapabilities::builder().enable_sampling().build();
        ClientConfig::new(capabilities, Implementation::new("echo-model", "1"))
    }
}

#[tokio::test]
async fn a_2025_session_samples_the_clients_model() {
    let redis = RedisServer::shared_or_start().await;
    let replica = Process::start(
        CONFORMANCE_BINARY,
        redis.url(),
        &unique_prefix("sampling"),
        &[],
    )
    .await;
    let client = legacy_client_with(&replica.url(), EchoModel).await;

    let args = json!({"prompt": "What is the capital of France?"});
    let args = args.as_object().cloned().unwrap_or_default();
    let sampled = client
        .call_tool(CallToolRequestParams::new("test_sampling").with_arguments(args))
        .await
        .unwrap();
    assert_eq!(
        text(&sampled),
        "LLM response: echo: What is the capital of France?"
    );
}

/// Fixture tools of every kind (content, MRTR, schema, sampling, listen triggers, tasks).
const FIXTURE_TOOLS: &[&str] = &[
    "test_simple_text",
    "test_image_content",
    "test_tool_with_logging",
    "test_sampling",
    "test_input_required_result_request_state",
    "test_trigger_tool_change",
    "json_schema_2020_12_tool",
    "greet",
    "slow_compute",
    "failing_job",
    "confirm_delete",
    "test_tool_with_task",
];

#[tokio::test]
async fn the_shipping_binary_serves_no_fixture() {
    let fixtures = Process::memory(CONFORMANCE_BINARY, &[]).await;
    let shipping = Process::memory(SERVER_BINARY, &[]).await;
    let with_fixtures = tool_names(&stateless_client(&fixtures.url()).await).await;
    let legacy = legacy_client(&shipping.url()).await;

    let names = tool_names(&legacy).await;
    assert!(names.iter().any(|n| n == "session_create"), "{names:?}");
    for fixture in FIXTURE_TOOLS {
        assert!(with_fixtures.iter().any(|n| n == fixture), "{fixture}");
        assert!(
            !names.iter().any(|n| n == fixture),
            "{fixture} in {names:?}"
        );
    }
    // Every tool the shipping binary lists is a production tool the other lists too.
    assert!(names.iter().all(|n| with_fixtures.contains(n)), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("test_")), "{names:?}");
    let unknown = crate::support::client::try_call(&legacy, "test_simple_text", json!({})).await;
    assert!(unknown.is_err(), "{unknown:?}");
    let prompts = legacy.list_prompts(None).await;
    assert!(prompts.is_err(), "{prompts:?}");
    let read = legacy
        .read_resource(ReadResourceRequestParams::new("test://static-text"))
        .await;
    assert!(read.is_err(), "{read:?}");
    let stateless = tool_names(&stateless_client(&shipping.url()).await).await;
    for fixture in FIXTURE_TOOLS {
        assert!(!stateless.iter().any(|n| n == fixture), "{fixture}");
    }
}

#[test]
fn the_shipping_binary_refuses_the_retired_conformance_key() {
    let output = std::process::Command::new(SERVER_BINARY)
        .env("STATEFUL_MCP__STORE__BACKEND", "memory")
        .env("STATEFUL_MCP__SERVER__BIND", "127.0.0.1:0")
        .env("STATEFUL_MCP__CONFORMANCE__ENABLED", "true")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("`conformance.enabled`") && stderr.contains("stateful-mcp-conformance"),
        "{stderr}"
    );
}
