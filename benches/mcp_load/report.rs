//! The results: one row per scenario run, printed as a table line as it finishes and
//! written as a JSON line with `--json`, and at the end the ratios against the anchor.

use std::{fmt::Write as _, io::Write as _};

use serde_json::{Map, Value, json};

use crate::{load::Outcome, measure::RedisPerCall, wire::Era};

/// One scenario run.
pub struct Row {
    pub round: usize,
    pub scenario: String,
    /// The replicas' build, for scenarios that run replicas.
    pub build: Option<String>,
    pub era: Era,
    pub sessions: usize,
    pub workers: usize,
    pub driver_threads: usize,
    /// The 1-minute load average when the row finished (other work on the machine).
    pub loadavg: f64,
    pub outcome: Outcome,
}

impl Row {
    /// CPU microseconds per call of `role`, if it was measured.
    pub fn cpu(&self, role: &str) -> Option<f64> {
        self.outcome
            .costs
            .cpu_us
            .iter()
            .find(|(r, _)| r == role)
            .map(|(_, us)| *us)
    }

    /// The sessions whose counter is not the number of increments acknowledged in it.
    pub fn counter_mismatch(&self) -> Option<String> {
        let wrong: Vec<String> = self
            .outcome
            .counters
            .iter()
            .enumerate()
            .filter(|(_, (value, acked))| value != acked)
            .map(|(s, (value, acked))| format!("session {s}: value {value}, {acked} acknowledged"))
            .collect();
        (!wrong.is_empty()).then(|| wrong.join("; "))
    }

    fn label(&self) -> String {
        match &self.build {
            Some(build) => format!("{} [{build}]", self.scenario),
            None => self.scenario.clone(),
        }
    }

    /// The row as one JSON object.
    pub fn to_json(&self) -> Value {
        let o = &self.outcome;
        let us = |d: std::time::Duration| (d.as_secs_f64() * 1e7).round() / 10.0;
        let cpu: Map<String, Value> = o
            .costs
            .cpu_us
            .iter()
            .map(|(role, v)| (role.clone(), json!(round2(*v))))
            .collect();
        let redis = o.costs.redis.as_ref().map(|r| {
            let mut value = redis_json(r);
            if !r.shards.is_empty() {
                value["shards"] = r.shards.iter().map(redis_json).collect();
            }
            value
        });
        json!({
            "kind": "row",
            "round": self.round,
            "scenario": self.scenario,
            "build": self.build,
            "era": self.era.label(),
            "sessions": self.sessions,
            "workers": self.workers,
            "driver_threads": self.driver_threads,
            "window_secs": round2(o.window.as_secs_f64()),
            "calls": o.ok,
            "calls_per_sec": o.calls_per_sec().round(),
            "latency_us": {
                "p50": us(o.quantile(0.50)),
                "p90": us(o.quantile(0.90)),
                "p99": us(o.quantile(0.99)),
                "max": us(o.quantile(1.0)),
            },
            "errors": o.errors,
            "first_error": o.first_error,
            "counter_mismatch": self.counter_mismatch(),
            "cpu_us_per_call": cpu,
            "redis": redis,
            "loadavg_1m": self.loadavg,
        })
    }
}

/// Redis's figures per call as JSON (a cluster's `shards` are added by the caller).
fn redis_json(r: &RedisPerCall) -> Value {
    let commands: Map<String, Value> = r
        .commands
        .iter()
        .map(|(c, v)| (c.clone(), json!(round2(*v))))
        .collect();
    let scripts: Map<String, Value> = r
        .script_usec
        .iter()
        .map(|(c, v)| (c.clone(), json!(round2(*v))))
        .collect();
    json!({
        "commands_per_call": commands,
        "script_usec_per_call": scripts,
        "cpu_us_per_call": round2(r.cpu_us),
        "net_in_bytes_per_call": r.net_in.round(),
        "net_out_bytes_per_call": r.net_out.round(),
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The 1-minute load average.
pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Prints rows as a table and keeps them; writes each as a JSON line to `json`.
pub struct Report {
    /// The CPU columns, in order.
    roles: Vec<String>,
    json: Option<std::fs::File>,
    pub rows: Vec<Row>,
}

impl Report {
    /// A report with these CPU columns, writing JSON lines to `json` when given.
    ///
    /// # Panics
    /// When the JSON file cannot be created.
    pub fn new(roles: Vec<String>, json: Option<&std::path::Path>) -> Self {
        let json = json
            .map(|p| std::fs::File::create(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())));
        let mut header = format!(
            "{:<5} {:<32} {:>8} {:>7} {:>7} {:>7} {:>7} {:>6} | CPU µs/call:",
            "round", "scenario", "calls/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors"
        );
        for role in &roles {
            let _ = write!(header, " {role:>8}");
        }
        let _ = write!(header, " | load");
        println!("{header}");
        Self {
            roles,
            json,
            rows: Vec::new(),
        }
    }

    /// Prints `row` (and its Redis figures, its first error), writes its JSON line.
    pub fn add(&mut self, row: Row) {
        let o = &row.outcome;
        let ms = |q: f64| o.quantile(q).as_secs_f64() * 1e3;
        let mut line = format!(
            "{:<5} {:<32} {:>8.0} {:>7.2} {:>7.2} {:>7.2} {:>7.1} {:>6} |             ",
            row.round,
            row.label(),
            o.calls_per_sec(),
            ms(0.50),
            ms(0.90),
            ms(0.99),
            ms(1.0),
            o.errors
        );
        for role in &self.roles {
            match row.cpu(role) {
                Some(us) => {
                    let _ = write!(line, " {us:>8.1}");
                }
                None => {
                    let _ = write!(line, " {:>8}", "-");
                }
            }
        }
        let _ = write!(line, " | {:.1}", row.loadavg);
        println!("{line}");
        if let Some(r) = &o.costs.redis {
            // Background work (leases, the bus) adds commands far rarer than one per
            // call: the JSON line keeps them, the table does not.
            let (frequent, rare): (Vec<_>, Vec<_>) =
                r.commands.iter().partition(|(_, n)| *n >= 0.005);
            let mut commands: Vec<String> = frequent
                .iter()
                .map(|(c, n)| format!("{c} {n:.2}"))
                .collect();
            if !rare.is_empty() {
                commands.push(format!("{} rarer", rare.len()));
            }
            let scripts: Vec<String> = r
                .script_usec
                .iter()
                .map(|(c, us)| format!("{c} {us:.1} µs"))
                .collect();
            println!(
                "      redis per call: {}; per script run: {}; Redis CPU {:.1} µs (INFO cpu); \
                 {:.0} B in, {:.0} B out",
                commands.join(", "),
                if scripts.is_empty() {
                    "-".to_owned()
                } else {
                    scripts.join(", ")
                },
                r.cpu_us,
                r.net_in,
                r.net_out
            );
            if !r.shards.is_empty() {
                let each = |f: &dyn Fn(&RedisPerCall) -> String| {
                    r.shards.iter().map(f).collect::<Vec<_>>().join(" / ")
                };
                println!(
                    "      per master: Redis CPU {} µs; evalsha {}; commands {}",
                    each(&|m| format!("{:.1}", m.cpu_us)),
                    each(&|m| format!("{:.2}", m.per_call("evalsha"))),
                    each(&|m| format!("{:.2}", m.commands.iter().map(|(_, n)| n).sum::<f64>())),
                );
            }
        }
        if let Some(e) = &o.first_error {
            println!("      first error: {e}");
        }
        if let Some(mismatch) = row.counter_mismatch() {
            println!("      counter check failed: {mismatch}");
        }
        if let Some(file) = &mut self.json {
            let _ = writeln!(file, "{}", row.to_json());
            let _ = file.flush();
        }
        self.rows.push(row);
    }

    /// Prints the ratios against the anchor, and between the Redis deployments (calls/s,
    /// Redis CPU and p99 of one node, a primary with a replica, a cluster; with and
    /// without `replica_acks`), per round and over all rounds (means of the rounds'
    /// figures), for every replica build; writes them as JSON lines too.
    pub fn ratios(&mut self) {
        let rounds: Vec<usize> = {
            let mut r: Vec<usize> = self.rows.iter().map(|r| r.round).collect();
            r.dedup();
            r
        };
        let mut builds: Vec<String> = Vec::new();
        for row in &self.rows {
            if let Some(b) = &row.build
                && !builds.contains(b)
            {
                builds.push(b.clone());
            }
        }
        // The mean over `rounds` of `f` of the row of `scenario` (and `build`).
        let mean = |rounds: &[usize],
                    scenario: &str,
                    build: Option<&str>,
                    f: &dyn Fn(&Row) -> Option<f64>| {
            let values: Vec<f64> = self
                .rows
                .iter()
                .filter(|r| {
                    rounds.contains(&r.round)
                        && r.scenario == scenario
                        && (build.is_none() || r.build.as_deref() == build)
                })
                .filter_map(f)
                .collect();
            (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
        };
        let speed = |r: &Row| Some(r.outcome.calls_per_sec());
        type Ratio<'a> = (&'a str, &'a str, &'a str, bool);
        // (label, numerator scenario, denominator scenario, whether both are replicas)
        let ratios: [Ratio; 7] = [
            (
                "redis-2026 / anchor-2026 calls/s",
                "redis-2026",
                "anchor-2026",
                false,
            ),
            (
                "redis-2025 / anchor-2025 calls/s",
                "redis-2025",
                "anchor-2025",
                false,
            ),
            (
                "forwarded-2025 / redis-2025 calls/s",
                "forwarded-2025",
                "redis-2025",
                true,
            ),
            (
                "nginx-2026 / redis-2026 calls/s",
                "nginx-2026",
                "redis-2026",
                true,
            ),
            (
                "cluster-2026 / redis-2026 calls/s",
                "cluster-2026",
                "redis-2026",
                true,
            ),
            (
                "cluster-2026 / redis-2026-replica calls/s",
                "cluster-2026",
                "redis-2026-replica",
                true,
            ),
            (
                "cluster-2025 / redis-2025 calls/s",
                "cluster-2025",
                "redis-2025",
                true,
            ),
        ];
        let redis_cpu = |r: &Row| Some(r.outcome.costs.redis.as_ref()?.cpu_us);
        let p99_ms = |r: &Row| Some(r.outcome.quantile(0.99).as_secs_f64() * 1e3);
        // What one node, or the cluster's busiest master, spends per call of the
        // whole load: the master that saturates first.
        let busiest = |r: &Row| {
            let redis = r.outcome.costs.redis.as_ref()?;
            Some(if redis.shards.is_empty() {
                redis.cpu_us
            } else {
                redis.shards.iter().map(|s| s.cpu_us).fold(0.0, f64::max)
            })
        };
        type Metric<'a> = &'a dyn Fn(&Row) -> Option<f64>;
        // (label, scenario a, scenario b, figure, a / b (else a − b), digits)
        let between: [(&str, &str, &str, Metric, bool, usize); 9] = [
            (
                "redis-2026-replica − redis-2026 Redis CPU µs/call",
                "redis-2026-replica",
                "redis-2026",
                &redis_cpu,
                false,
                1,
            ),
            (
                "redis-2026-acks1 − redis-2026-replica Redis CPU µs/call",
                "redis-2026-acks1",
                "redis-2026-replica",
                &redis_cpu,
                false,
                1,
            ),
            (
                "redis-2026-acks1 − redis-2026-replica p99 ms",
                "redis-2026-acks1",
                "redis-2026-replica",
                &p99_ms,
                false,
                2,
            ),
            (
                "cluster-2026 / redis-2026-replica Redis CPU per call",
                "cluster-2026",
                "redis-2026-replica",
                &redis_cpu,
                true,
                3,
            ),
            (
                "redis-2026 / cluster-2026 busiest master CPU per call",
                "redis-2026",
                "cluster-2026",
                &busiest,
                true,
                3,
            ),
            (
                "cluster-2026-acks1 − cluster-2026 Redis CPU µs/call",
                "cluster-2026-acks1",
                "cluster-2026",
                &redis_cpu,
                false,
                1,
            ),
            (
                "cluster-2026-acks1 − cluster-2026 p99 ms",
                "cluster-2026-acks1",
                "cluster-2026",
                &p99_ms,
                false,
                2,
            ),
            (
                "cluster-2026-acks1 / cluster-2026 calls/s",
                "cluster-2026-acks1",
                "cluster-2026",
                &speed,
                true,
                3,
            ),
            (
                "cluster-2025 / redis-2025 Redis CPU per call",
                "cluster-2025",
                "redis-2025",
                &redis_cpu,
                true,
                3,
            ),
        ];
        let mut columns: Vec<(String, Vec<usize>)> = rounds
            .iter()
            .map(|&r| (format!("round {r}"), vec![r]))
            .collect();
        columns.push(("overall".to_owned(), rounds.clone()));
        let mut lines = Vec::new();
        for build in &builds {
            for (label, num, den, both) in ratios {
                let values: Vec<Option<f64>> = columns
                    .iter()
                    .map(|(_, rs)| {
                        let n = mean(rs, num, Some(build), &speed)?;
                        let d = mean(rs, den, both.then_some(build.as_str()), &speed)?;
                        Some(n / d)
                    })
                    .collect();
                lines.push((format!("{label} [{build}]"), values, 3));
            }
            let values: Vec<Option<f64>> = columns
                .iter()
                .map(|(_, rs)| {
                    let replica = mean(rs, "redis-2026", Some(build), &|r| r.cpu("replicas"))?;
                    let anchor = mean(rs, "anchor-2026", None, &|r| r.cpu("anchor"))?;
                    Some(replica - anchor)
                })
                .collect();
            lines.push((
                format!("replica − anchor CPU µs/call, 2026 [{build}]"),
                values,
                1,
            ));
            for (label, a, b, metric, ratio, digits) in between {
                let values: Vec<Option<f64>> = columns
                    .iter()
                    .map(|(_, rs)| {
                        let a = mean(rs, a, Some(build), metric)?;
                        let b = mean(rs, b, Some(build), metric)?;
                        Some(if ratio { a / b } else { a - b })
                    })
                    .collect();
                lines.push((format!("{label} [{build}]"), values, digits));
            }
        }
        lines.retain(|(_, values, _)| values.iter().any(Option::is_some));
        if lines.is_empty() {
            return;
        }
        let mut header = format!("\n{:<64}", "ratio");
        for (name, _) in &columns {
            let _ = write!(header, " {name:>9}");
        }
        println!("{header}");
        for (label, values, digits) in &lines {
            let mut line = format!("{label:<64}");
            for v in values {
                match v {
                    Some(v) => {
                        let _ = write!(line, " {v:>9.digits$}");
                    }
                    None => {
                        let _ = write!(line, " {:>9}", "-");
                    }
                }
            }
            println!("{line}");
            if let Some(file) = &mut self.json {
                let by_column: Map<String, Value> = columns
                    .iter()
                    .zip(values)
                    .map(|((name, _), v)| {
                        (
                            name.clone(),
                            json!(v.map(|v| (v * 1000.0).round() / 1000.0)),
                        )
                    })
                    .collect();
                let _ = writeln!(
                    file,
                    "{}",
                    json!({"kind": "ratio", "ratio": label, "values": by_column})
                );
            }
        }
    }
}
