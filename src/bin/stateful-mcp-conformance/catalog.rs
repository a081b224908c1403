//! The fixture resources, resource template, prompts and completions, with the names
//! and payloads the conformance scenarios check.

use rmcp::{
    ErrorData as McpError,
    model::{
        CompleteRequestParams, CompleteResult, CompletionInfo, ContentBlock, GetPromptResult,
        Prompt, PromptArgument, PromptMessage, ReadResourceResult, Reference, Resource,
        ResourceContents, ResourceTemplate, Role,
    },
};
use serde_json::{Map, Value};

/// A 1×1 red PNG.
pub(super) const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg==";
/// A WAV file with no samples.
pub(super) const WAV: &str = "UklGRiQAAABXQVZFZm10IBAAAAABAAEARKwAAIhYAQACABAAZGF0YQAAAAA=";

const STATIC_TEXT: &str = "test://static-text";
const STATIC_BINARY: &str = "test://static-binary";
const TEMPLATE_PREFIX: &str = "test://template/";
const TEMPLATE_SUFFIX: &str = "/data";
/// Longest `{id}` the template accepts.
const MAX_TEMPLATE_ID: usize = 128;

/// The fixture resources.
pub(super) fn resources() -> Vec<Resource> {
    vec![
        Resource::new(STATIC_TEXT, "static_text")
            .with_title("Static text resource")
            .with_description("A static text resource for testing")
            .with_mime_type("text/plain"),
        Resource::new(STATIC_BINARY, "static_binary")
            .with_title("Static binary resource")
            .with_description("A static binary resource (a PNG image) for testing")
            .with_mime_type("image/png"),
    ]
}

/// The fixture resource templates.
pub(super) fn templates() -> Vec<ResourceTemplate> {
    vec![
        ResourceTemplate::new(
            format!("{TEMPLATE_PREFIX}{{id}}{TEMPLATE_SUFFIX}"),
            "template_data",
        )
        .with_title("Dynamic resource")
        .with_description("A dynamic resource with parameter substitution")
        .with_mime_type("application/json"),
    ]
}

/// Reads a fixture resource; `None` when `uri` names none.
pub(super) fn read(uri: &str) -> Option<ReadResourceResult> {
    let contents = match uri {
        STATIC_TEXT => {
            ResourceContents::text("This is the content of the static text resource.", uri)
                .with_mime_type("text/plain")
        }
        STATIC_BINARY => ResourceContents::blob(PNG, uri).with_mime_type("image/png"),
        _ => {
            let id = uri
                .strip_prefix(TEMPLATE_PREFIX)?
                .strip_suffix(TEMPLATE_SUFFIX)
                .filter(|id| !id.is_empty() && id.len() <= MAX_TEMPLATE_ID && !id.contains('/'))?;
            let text = serde_json::json!({
                "id": id,
                "templateTest": true,
                "data": format!("Data for ID: {id}"),
            });
            ResourceContents::text(text.to_string(), uri).with_mime_type("application/json")
        }
    };
    Some(ReadResourceResult::new(vec![contents]))
}

const SIMPLE_PROMPT: &str = "test_simple_prompt";
const PROMPT_WITH_ARGUMENTS: &str = "test_prompt_with_arguments";
const PROMPT_WITH_RESOURCE: &str = "test_prompt_with_embedded_resource";
const PROMPT_WITH_IMAGE: &str = "test_prompt_with_image";

/// The fixture prompts (the MRTR prompt is in `mrtr.rs`).
pub(super) fn prompts() -> Vec<Prompt> {
    vec![
        Prompt::new(
            SIMPLE_PROMPT,
            Some("A simple prompt without arguments"),
            None,
        ),
        Prompt::new(
            PROMPT_WITH_ARGUMENTS,
            Some("A prompt with two required arguments"),
            Some(vec![
                PromptArgument::new("arg1")
                    .with_description("First test argument")
                    .with_required(true),
                PromptArgument::new("arg2")
                    .with_description("Second test argument")
                    .with_required(true),
            ]),
        ),
        Prompt::new(
            PROMPT_WITH_RESOURCE,
            Some("A prompt that embeds a resource"),
            Some(vec![
                PromptArgument::new("resourceUri")
                    .with_description("URI of the resource to embed")
                    .with_required(true),
            ]),
        ),
        Prompt::new(
            PROMPT_WITH_IMAGE,
            Some("A prompt that includes an image"),
            None,
        ),
    ]
}

/// Renders a fixture prompt; `None` when `name` names none.
///
/// # Errors
/// Invalid params when a required argument is missing.
pub(super) fn prompt(
    name: &str,
    arguments: Option<&Map<String, Value>>,
) -> Option<Result<GetPromptResult, McpError>> {
    let argument = |key: &str| -> Result<String, McpError> {
        arguments
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| {
                McpError::invalid_params(
                    format!("prompt `{name}` needs the argument `{key}`"),
                    None,
                )
            })
    };
    let messages = match name {
        SIMPLE_PROMPT => Ok(vec![PromptMessage::new_text(
            Role::User,
            "This is a simple prompt for testing.",
        )]),
        PROMPT_WITH_ARGUMENTS => argument("arg1").and_then(|arg1| {
            let arg2 = argument("arg2")?;
            Ok(vec![PromptMessage::new_text(
                Role::User,
                format!("Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"),
            )])
        }),
        PROMPT_WITH_RESOURCE => argument("resourceUri").map(|uri| {
            vec![
                PromptMessage::new_resource(
                    Role::User,
                    uri,
                    Some("text/plain".to_owned()),
                    Some("Embedded resource content for testing.".to_owned()),
                    None,
                    None,
                    None,
                ),
                PromptMessage::new_text(Role::User, "Please process the embedded resource above."),
            ]
        }),
        PROMPT_WITH_IMAGE => Ok(vec![
            PromptMessage::new(Role::User, ContentBlock::image(PNG, "image/png")),
            PromptMessage::new_text(Role::User, "Please analyze the image above."),
        ]),
        _ => return None,
    };
    Some(messages.map(GetPromptResult::new))
}

/// Completions for the fixture prompts' arguments and the template's `{id}`: the known
/// values that start with what the client typed.
///
/// # Errors
/// Never in practice (the value lists are far below the spec's limit of 100).
pub(super) fn complete(request: &CompleteRequestParams) -> Result<CompleteResult, McpError> {
    let candidates: &[&str] = match (&request.r#ref, request.argument.name.as_str()) {
        (Reference::Prompt(_), "arg1") => &["paris", "park", "party"],
        (Reference::Prompt(_), "arg2") => &["hello", "world"],
        (Reference::Prompt(_), "resourceUri") => &[STATIC_TEXT, STATIC_BINARY],
        (Reference::Resource(_), "id") => &["1", "2", "3", "123"],
        _ => &[],
    };
    let typed = request.argument.value.as_str();
    let values = candidates
        .iter()
        .filter(|c| c.starts_with(typed))
        .map(|c| (*c).to_owned())
        .collect();
    let info = CompletionInfo::new(values).map_err(|e| McpError::internal_error(e, None))?;
    Ok(CompleteResult::new(info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_substitutes_its_id_and_refuses_other_uris() {
        let found = read("test://template/123/data").unwrap();
        let ResourceContents::TextResourceContents { text, .. } = &found.contents[0] else {
            panic!("text contents expected");
        };
        assert!(text.contains("Data for ID: 123"), "{text}");
        assert!(read("test://template//data").is_none());
        assert!(read("test://template/a/b/data").is_none());
        assert!(read("test://nonexistent").is_none());
    }

    #[test]
    fn prompts_check_their_arguments() {
        let args = serde_json::json!({"arg1": "hello", "arg2": "world"});
        let rendered = prompt(PROMPT_WITH_ARGUMENTS, args.as_object())
            .unwrap()
            .unwrap();
        let text = serde_json::to_string(&rendered.messages).unwrap();
        assert!(text.contains("arg1='hello', arg2='world'"), "{text}");
        let missing = serde_json::json!({"arg1": "hello"});
        assert!(
            prompt(PROMPT_WITH_ARGUMENTS, missing.as_object())
                .unwrap()
                .is_err()
        );
        assert!(prompt("no_such_prompt", None).is_none());
    }
}
