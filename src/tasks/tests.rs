//! What a task record read from the store keeps: the fields release 0.1.0 writes, and
//! of a later schema version what this release knows.

use super::*;

fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Every field the previous release's scripts write (`create.lua`, `finish.lua`,
/// `ask.lua`), as this release reads it.
#[test]
fn reads_the_previous_releases_records() {
    let r = TaskRecord::from_fields(
        "t1",
        fields(&[
            ("v", "1"),
            ("owner", "alice"),
            ("replica", "replica-a"),
            ("tool", "prime_count"),
            ("status", "input_required"),
            ("created", "1000"),
            ("updated", "2000"),
            ("ttl", "60000"),
            ("poll", "500"),
            ("lease", "9000"),
            ("msg", "waiting"),
            ("q:confirm", r#"{"method":"elicitation/create"}"#),
        ]),
    );
    assert_eq!(r.owner, "alice");
    assert_eq!(r.tool, "prime_count");
    assert_eq!(r.status, TaskStatus::InputRequired);
    assert_eq!((r.created_ms, r.updated_ms), (1000, 2000));
    assert_eq!((r.ttl_ms, r.poll_ms), (60_000, 500));
    assert_eq!(r.message.as_deref(), Some("waiting"));
    assert_eq!(r.input_requests["confirm"]["method"], "elicitation/create");
    assert_eq!(r.result, None);
}

/// A record of a later schema version keeps what this release knows; its unknown
/// fields are not taken for input requests or results.
#[test]
fn reads_what_it_knows_of_a_later_schema_version() {
    let r = TaskRecord::from_fields(
        "t2",
        fields(&[
            ("v", "2"),
            ("owner", "bob"),
            ("status", "completed"),
            ("result", r#"{"content":[]}"#),
            ("priority", "high"),
            ("x:trace", "00-ab-cd-01"),
        ]),
    );
    assert_eq!(r.owner, "bob");
    assert_eq!(r.status, TaskStatus::Completed);
    assert_eq!(r.result, Some(serde_json::json!({"content": []})));
    assert!(r.input_requests.is_empty(), "{:?}", r.input_requests);
}
