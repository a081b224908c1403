//! Tool schemas that carry only what JSON Schema defines: schemars marks integers with
//! formats of its own (`uint64`, `int64`, `double`, ...), which no validator knows and
//! which clients such as the MCP Inspector warn about. [`standard_formats_only`] removes
//! them from a tool's input and output schemas, [`standard_schemas`] from every tool of
//! a router.

use std::sync::Arc;

use rmcp::{
    handler::server::router::tool::ToolRouter,
    model::{JsonObject, Tool},
};
use serde_json::Value;

/// The `format` values JSON Schema 2020-12 defines (Validation, section 7.3).
pub const STANDARD_FORMATS: &[&str] = &[
    "date-time",
    "date",
    "time",
    "duration",
    "email",
    "idn-email",
    "hostname",
    "idn-hostname",
    "ipv4",
    "ipv6",
    "uri",
    "uri-reference",
    "iri",
    "iri-reference",
    "uuid",
    "uri-template",
    "json-pointer",
    "relative-json-pointer",
    "regex",
];

/// Keywords whose value is one subschema.
const SUBSCHEMA: &[&str] = &[
    "items",
    "additionalItems",
    "additionalProperties",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contains",
    "propertyNames",
    "not",
    "if",
    "then",
    "else",
];
/// Keywords whose value is an array of subschemas.
const SUBSCHEMA_ARRAYS: &[&str] = &["allOf", "anyOf", "oneOf", "prefixItems"];
/// Keywords whose value maps names to subschemas.
const SUBSCHEMA_MAPS: &[&str] = &[
    "properties",
    "patternProperties",
    "dependentSchemas",
    "$defs",
    "definitions",
];

/// Removes every `format` JSON Schema does not define from `tool`'s input and output
/// schemas.
pub fn standard_formats_only(tool: &mut Tool) {
    clean(&mut tool.input_schema);
    if let Some(output) = &mut tool.output_schema {
        clean(output);
    }
}

/// `router` with [`standard_formats_only`] applied to each of its tools.
pub fn standard_schemas<S>(mut router: ToolRouter<S>) -> ToolRouter<S> {
    for route in router.map.values_mut() {
        standard_formats_only(&mut route.attr);
    }
    router
}

fn clean(schema: &mut Arc<JsonObject>) {
    let mut copy = JsonObject::clone(schema);
    if strip(&mut copy) {
        *schema = Arc::new(copy);
    }
}

/// Whether `schema` or any of its subschemas has a `format` JSON Schema does not define.
pub fn has_nonstandard_format(schema: &JsonObject) -> bool {
    strip(&mut schema.clone())
}

/// Removes the formats JSON Schema does not define from `schema` and its subschemas
/// (never from values of `const`, `enum`, `default` or `examples`, which may look like
/// schemas without being ones); whether it removed any.
fn strip(schema: &mut JsonObject) -> bool {
    let mut removed = schema
        .get("format")
        .and_then(Value::as_str)
        .is_some_and(|f| !STANDARD_FORMATS.contains(&f));
    if removed {
        schema.remove("format");
    }
    for (key, value) in schema.iter_mut() {
        let key = key.as_str();
        let subschemas: Vec<&mut JsonObject> = if SUBSCHEMA.contains(&key) {
            value.as_object_mut().into_iter().collect()
        } else if SUBSCHEMA_ARRAYS.contains(&key) {
            value
                .as_array_mut()
                .into_iter()
                .flatten()
                .filter_map(Value::as_object_mut)
                .collect()
        } else if SUBSCHEMA_MAPS.contains(&key) {
            value
                .as_object_mut()
                .into_iter()
                .flat_map(|map| map.values_mut())
                .filter_map(Value::as_object_mut)
                .collect()
        } else {
            Vec::new()
        };
        for sub in subschemas {
            removed |= strip(sub);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(value: Value) -> JsonObject {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn nonstandard_formats_go_and_standard_ones_stay() {
        let mut tool = Tool::new(
            "t",
            "d",
            object(json!({
                "type": "object",
                "properties": {
                    "limit": {"type": "integer", "format": "uint64", "minimum": 0},
                    "when": {"type": "string", "format": "date-time"},
                    "format": {"type": "string"},
                    "nested": {"anyOf": [{"type": "number", "format": "double"}, {"type": "null"}]},
                    "list": {"type": "array", "items": {"type": "integer", "format": "int32"}},
                    "picked": {"const": {"format": "uint8"}}
                },
                "$defs": {"Id": {"type": "integer", "format": "int64"}}
            })),
        );
        tool.output_schema = Some(Arc::new(object(json!({
            "type": "object",
            "properties": {"count": {"type": "integer", "format": "uint64"}}
        }))));
        assert!(has_nonstandard_format(&tool.input_schema));

        standard_formats_only(&mut tool);

        assert!(!has_nonstandard_format(&tool.input_schema));
        assert!(!has_nonstandard_format(
            tool.output_schema.as_ref().unwrap()
        ));
        let input = Value::Object((*tool.input_schema).clone());
        assert_eq!(
            input["properties"]["limit"],
            json!({"type": "integer", "minimum": 0})
        );
        assert_eq!(input["properties"]["when"]["format"], "date-time");
        assert_eq!(input["properties"]["format"], json!({"type": "string"}));
        // A `const` value is data, not a schema: left as it is.
        assert_eq!(input["properties"]["picked"]["const"]["format"], "uint8");
    }
}
