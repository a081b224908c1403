//! The Grafana dashboard (`deploy/grafana/stateful-mcp.json`) and the alert rules
//! (`deploy/prometheus/alerts.yml`) name only metrics a replica exposes, and
//! `deploy/prometheus/metrics.txt`, the list `scripts/check-deploy.sh` checks both files
//! against without building the server, is exactly what a Redis replica exposes.
//!
//! A series of a labelled family appears only once something counted under a label, so
//! the test first makes every family appear: a tool call, a forwarded 2025-era request,
//! and a Redis outage (store errors).

use std::collections::{BTreeMap, BTreeSet};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{
    client::{call, create_handle, stateless_client},
    http::{legacy_post, legacy_session},
    redis_server::{RedisServer, unique_prefix},
    replica::Replica,
    wait::wait_until,
};

const DASHBOARD: &str = "deploy/grafana/stateful-mcp.json";
const RULES: &str = "deploy/prometheus/alerts.yml";
const LIST: &str = "deploy/prometheus/metrics.txt";

/// Sample names (`_total`, `_bucket`, `_info` included, as queries name them) and the
/// label names each is exposed with.
type Exposed = BTreeMap<String, BTreeSet<String>>;

#[tokio::test]
async fn the_dashboard_and_the_alert_rules_name_only_metrics_a_replica_exposes() {
    let mut redis = RedisServer::start().await;
    let prefix = unique_prefix("deploy-metrics");
    let upkeep = [("STATEFUL_MCP__SESSION__MAINTENANCE_INTERVAL_SECS", "1")];
    let a = Replica::start(redis.url(), &prefix, &upkeep).await;
    let b = Replica::start(redis.url(), &prefix, &upkeep).await;

    // Requests and tool calls by label, and their latencies.
    let client = stateless_client(&a.url()).await;
    let handle = create_handle(&client).await;
    call(
        &client,
        "counter",
        json!({"operation": "increment", "session_id": handle}),
    )
    .await;
    // A 2025-era session A holds, one of its requests sent to B: a forward.
    let session = legacy_session(&a.url()).await;
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let pinged = legacy_post(&reqwest::Client::new(), &b.url(), &session, &ping)
        .send()
        .await
        .unwrap();
    assert_eq!(pinged.status(), StatusCode::OK);
    wait_until("B counted the forward", async || {
        b.metric(&[
            "stateful_mcp_session_forwards_total{",
            "outcome=\"forwarded\"",
        ])
        .await
        .is_some()
    })
    .await;
    wait_until("an upkeep round reached Redis", async || {
        a.metric(&["stateful_mcp_store_reachable{"]).await == Some(1.0)
    })
    .await;
    let mut exposed = Exposed::new();
    add_samples(&mut exposed, &scrape(&a).await);
    add_samples(&mut exposed, &scrape(&b).await);

    // Redis goes away: A's next upkeep round fails.
    redis.kill();
    wait_until("an upkeep round failed", async || {
        a.metric(&["stateful_mcp_store_reachable{"]).await == Some(0.0)
    })
    .await;
    let during_outage = scrape(&a).await;
    assert!(
        during_outage.contains("stateful_mcp_store_errors_total{"),
        "{during_outage}"
    );
    add_samples(&mut exposed, &during_outage);

    let listed = read_list(&read(LIST));
    assert!(
        listed == exposed,
        "{LIST} is not what a replica exposes; it should read:\n{}",
        render_list(&exposed)
    );

    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON");
    let mut strings = Vec::new();
    collect_strings(&dashboard, &mut strings);
    for (file, names) in [
        (DASHBOARD, metric_names(strings.iter().map(String::as_str))),
        (RULES, metric_names(read(RULES).lines())),
    ] {
        assert!(names.len() >= 5, "{file} names {names:?}");
        let unknown: Vec<_> = names.iter().filter(|n| !exposed.contains_key(*n)).collect();
        assert!(
            unknown.is_empty(),
            "{file} names {unknown:?}, which no replica exposes"
        );
    }
}

/// The text of the repository's file `path`.
fn read(path: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

async fn scrape(replica: &Replica) -> String {
    reqwest::get(replica.endpoint("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Adds the samples of the exposition `text` to `exposed`.
fn add_samples(exposed: &mut Exposed, text: &str) {
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = exposed.entry(line[..end].to_owned()).or_default();
        if line[end..].starts_with('{') {
            labels.extend(label_names(&line[end + 1..]));
        }
    }
}

/// The label names of `name="value",…}`, values with escaped quotes included.
fn label_names(mut rest: &str) -> Vec<String> {
    let mut names = Vec::new();
    while let Some(eq) = rest.find("=\"") {
        names.push(rest[..eq].trim_start_matches(',').to_owned());
        let mut escaped = false;
        let close = rest[eq + 2..]
            .find(|c: char| {
                let end = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                end
            })
            .expect("a closed label value");
        rest = &rest[eq + 2 + close + 1..];
        if rest.starts_with('}') {
            break;
        }
    }
    names
}

/// `metrics.txt`: one sample name a line, then its label names separated by commas;
/// `#` starts a comment.
fn read_list(text: &str) -> Exposed {
    text.lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (name, labels) = l.split_once(' ').unwrap_or((l, ""));
            let labels = labels.split(',').map(str::trim).filter(|s| !s.is_empty());
            (name.to_owned(), labels.map(str::to_owned).collect())
        })
        .collect()
}

fn render_list(exposed: &Exposed) -> String {
    exposed
        .iter()
        .map(|(name, labels)| {
            let labels: Vec<_> = labels.iter().map(String::as_str).collect();
            format!("{name} {}\n", labels.join(",")).replace(" \n", "\n")
        })
        .collect()
}

fn collect_strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        Value::Object(fields) => fields.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

/// Every `stateful_mcp_…` word in `texts`: metric names in queries, and in any text
/// beside them (a description that names a metric must name a real one).
fn metric_names<'a>(texts: impl Iterator<Item = &'a str>) -> BTreeSet<String> {
    const PREFIX: &str = "stateful_mcp_";
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut names = BTreeSet::new();
    for text in texts {
        let mut from = 0;
        while let Some(at) = text[from..].find(PREFIX).map(|i| from + i) {
            let len = text[at..].find(|c| !word(c)).unwrap_or(text.len() - at);
            let before = text[..at].chars().next_back();
            if !before.is_some_and(|c| word(c) || c == ':') {
                names.insert(text[at..at + len].to_owned());
            }
            from = at + len;
        }
    }
    names
}

#[test]
fn metric_names_are_whole_words_and_labels_are_parsed_with_escapes() {
    let names = metric_names(
        [
            "sum(rate(stateful_mcp_a_total[5m])) / x_stateful_mcp_b",
            "stateful_mcp:recorded stateful_mcp_c_bucket{le=\"1\"}",
        ]
        .into_iter(),
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["stateful_mcp_a_total", "stateful_mcp_c_bucket"]
    );
    let mut exposed = Exposed::new();
    add_samples(
        &mut exposed,
        "# TYPE x counter\nx_total{replica=\"r\",tool=\"a\\\",b=\\\"c\"} 1\ny 2\n# EOF\n",
    );
    assert_eq!(
        render_list(&exposed),
        "x_total replica,tool\ny\n",
        "{exposed:?}"
    );
    assert_eq!(read_list(&render_list(&exposed)), exposed);
}
