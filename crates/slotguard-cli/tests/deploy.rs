//! The deploy files against the metric names slotguard exports: every
//! metric a Grafana query or an alert rule names is one of them, the
//! dashboard is valid JSON with a query in every panel and shows what an
//! operator looks at first, and every alert's `runbook_url` points at a
//! section that exists in `docs/runbook.md`. (`promtool check rules` and
//! `promtool test rules` check the rules themselves: `make rules`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

/// Every metric slotguard exports, by its Prometheus name.
const METRICS: &[&str] = &[
    "redis_fallback_routing_attempts_total",
    "redis_cluster_slots_assigned",
    "redis_cluster_slots_ok",
    "slotguard_breaker_state",
    "slotguard_breaker_transitions_total",
    "slotguard_redirects_total",
    "slotguard_topology_refreshes_total",
    "slotguard_coalesced_total",
    "slotguard_store_loads_total",
    "slotguard_store_breaker_state",
    "slotguard_near_cache_entries",
    "slotguard_near_cache_bytes",
    "slotguard_near_cache_hits_total",
    "slotguard_invalidations_replayed_total",
    "slotguard_write_fences_total",
    "slotguard_writes_refused_total",
    "slotguard_slots_unowned_seconds_total",
];

/// The histograms, queried through their `_bucket`, `_sum` and `_count` series.
const HISTOGRAMS: &[&str] = &[
    "redis_fallback_routing_latency_seconds",
    "db_client_operation_duration_seconds",
    "slotguard_failover_first_replica_answer_seconds",
    "slotguard_failover_promotion_seen_seconds",
    "slotguard_failover_first_write_seconds",
];

fn known(name: &str) -> bool {
    METRICS.contains(&name)
        || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|base| HISTOGRAMS.contains(&base))
        })
}

/// PromQL words that are not metric names when not followed by `(`.
const KEYWORDS: &[&str] = &[
    "and", "or", "unless", "bool", "offset", "inf", "nan", "Inf", "NaN", "atan2",
];
/// Aggregation operators: may be followed by `by (...)` before their `(`.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];
/// Modifiers whose parenthesised list holds label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Skips from `open` at `chars[i]` to just past its matching `close`,
/// stepping over quoted strings.
fn skip_group(chars: &[char], mut i: usize, open: char, close: char) -> usize {
    let mut depth = 0;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => i = skip_string(chars, i),
            c if c == open => {
                depth += 1;
                i += 1;
            }
            c if c == close => {
                depth -= 1;
                i += 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    i
}

fn skip_string(chars: &[char], i: usize) -> usize {
    let quote = chars[i];
    let mut j = i + 1;
    while j < chars.len() && chars[j] != quote {
        if chars[j] == '\\' {
            j += 1;
        }
        j += 1;
    }
    j + 1
}

fn next_non_space(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    i
}

/// The metric names a PromQL expression selects: identifiers that are not
/// functions, operators, keywords, label names (in `{...}`, `by (...)`) or
/// Grafana variables (`$job`, `$__rate_interval`).
fn metric_names(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i = skip_string(&chars, i);
        } else if c == '{' {
            i = skip_group(&chars, i, '{', '}');
        } else if c == '[' {
            i = skip_group(&chars, i, '[', ']');
        } else if c == '$' {
            i += 1;
            if chars.get(i) == Some(&'{') {
                i = skip_group(&chars, i, '{', '}');
            }
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
        } else if c.is_ascii_digit() || c == '.' {
            // Numbers and durations (0.95, 5m, 1e3).
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = next_non_space(&chars, i);
            let before_paren = chars.get(next) == Some(&'(');
            if LABEL_LISTS.contains(&word.as_str()) {
                if before_paren {
                    i = skip_group(&chars, next, '(', ')');
                }
            } else if !before_paren
                && !AGGREGATIONS.contains(&word.as_str())
                && !KEYWORDS.contains(&word.as_str())
            {
                out.push(word);
            }
        } else {
            i += 1;
        }
    }
    out
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every `"expr"` string anywhere in the dashboard.
fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// The `expr:` of every rule in a rules file: one line, or the indented
/// block under `expr: |`. (promtool validates the YAML; this only reads
/// the expressions out of it.)
fn rule_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if rest.starts_with('|') || rest.starts_with('>') {
            let indent = line.len() - line.trim_start().len();
            let block: Vec<&str> = lines[n + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                .copied()
                .collect();
            out.push(block.join("\n"));
        } else {
            out.push(rest.trim_matches(['"', '\'']).to_owned());
        }
    }
    out
}

#[test]
fn the_name_extractor_finds_metrics_and_only_metrics() {
    let q = r#"histogram_quantile(0.95, sum by (path, le) (rate(redis_fallback_routing_latency_seconds_bucket{job=~"$job",path="a b"}[$__rate_interval]))) / on (job) group_left sum without (x) (slotguard_breaker_state offset 5m) > bool 0.05 and ${var} unless up"#;
    assert_eq!(
        metric_names(q),
        vec![
            "redis_fallback_routing_latency_seconds_bucket",
            "slotguard_breaker_state",
            "up"
        ]
    );
    assert!(known("redis_fallback_routing_latency_seconds_bucket"));
    assert!(known("slotguard_breaker_state"));
    assert!(!known("up"), "not a slotguard metric");
    assert!(
        !known("slotguard_breaker_state_bucket"),
        "a gauge, not a histogram"
    );
    assert!(!known("slotgaurd_breaker_state"), "a typo");
}

#[test]
fn every_dashboard_query_names_known_metrics_and_shows_the_essentials() {
    let text = read("deploy/grafana/slotguard.json");
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is valid JSON");
    let panels = dash["panels"].as_array().expect("panels");
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let targets = p["targets"].as_array();
        assert!(
            targets.is_some_and(|t| !t.is_empty()),
            "panel {} has no query",
            p["title"]
        );
    }
    let mut all = Vec::new();
    exprs(&dash["panels"], &mut all);
    let mut used = BTreeSet::new();
    for e in &all {
        let names = metric_names(e);
        assert!(!names.is_empty(), "no metric in {e}");
        for n in names {
            assert!(known(&n), "unknown metric {n} in dashboard query {e}");
            used.insert(n);
        }
    }
    // Template variables: `label_values(<metric>{...}, <label>)`.
    for var in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = var["query"]["query"].as_str() {
            let inner = q.strip_prefix("label_values(").unwrap_or(q);
            let metric = inner.split(['{', ',', ')']).next().unwrap().trim();
            assert!(known(metric), "unknown metric {metric} in variable {q}");
        }
    }
    // Answers per path, fallback rate and latency, slots, breakers,
    // redirects, refreshes, store loads, near-cache.
    for essential in [
        "redis_fallback_routing_attempts_total",
        "redis_fallback_routing_latency_seconds_bucket",
        "redis_cluster_slots_ok",
        "slotguard_breaker_state",
        "slotguard_redirects_total",
        "slotguard_topology_refreshes_total",
        "slotguard_store_loads_total",
        "slotguard_near_cache_entries",
        "slotguard_near_cache_hits_total",
        "slotguard_writes_refused_total",
    ] {
        assert!(
            used.contains(essential),
            "the dashboard does not show {essential}"
        );
    }
}

#[test]
fn every_alert_names_known_metrics_and_links_an_existing_runbook_section() {
    let rules = read("deploy/prometheus/alerts.yml");
    let exprs = rule_exprs(&rules);
    assert_eq!(exprs.len(), 5, "one expr per alert: {exprs:#?}");
    for e in &exprs {
        let names = metric_names(e);
        assert!(!names.is_empty(), "no metric in {e}");
        for n in names {
            assert!(known(&n), "unknown metric {n} in alert expr {e}");
        }
    }
    let runbook = read("docs/runbook.md");
    let anchors: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("runbook_url:"))
        .map(|u| u.trim().trim_matches('"'))
        .map(|u| {
            let (page, anchor) = u.split_once('#').expect("a runbook_url with an anchor");
            assert!(page.ends_with("docs/runbook.md"), "{u}");
            anchor
        })
        .collect();
    assert_eq!(anchors.len(), exprs.len(), "every alert has a runbook_url");
    for a in anchors {
        assert!(
            runbook.contains(&format!("<a id=\"{a}\"></a>")),
            "docs/runbook.md has no section #{a}"
        );
    }
}
