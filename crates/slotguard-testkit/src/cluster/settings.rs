//! Which server settings a [`LocalCluster`](super::LocalCluster) runs with
//! that differ from Redis's own defaults.
//!
//! Defaults are the product: a test or a demo that ran on tuned servers
//! would show behaviour a user never gets. So the testkit writes Redis's
//! defaults for everything that changes how the cluster answers clients,
//! except the node timeout it states ([`ClusterSpec::node_timeout_ms`]),
//! and a test that needs another setting asks for it where it starts its
//! cluster ([`ClusterSpec::with_config`]), with a comment saying why.
//!
//! The harness settings below change how the servers are *run* (where they
//! listen and log, no snapshots to disk, the `DEBUG` command the faults use),
//! not what a client sees from a healthy or degraded cluster.

use super::ClusterSpec;

/// One server setting that differs from Redis's default.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerSetting {
    /// The `redis.conf` directive, e.g. `cluster-node-timeout`.
    pub name: String,
    /// The value the cluster runs with.
    pub value: String,
    /// Redis 7.0's default, when the testkit knows it.
    pub redis_default: Option<&'static str>,
    /// Why it differs.
    pub why: &'static str,
}

/// The directives every node gets besides its ports and directories, with
/// Redis's default and why the testkit differs. Written into every node's
/// config by the testkit.
pub(crate) const HARNESS: &[(&str, &str, &str, &str)] = &[
    (
        "bind",
        "127.0.0.1",
        "* -::*",
        "loopback only: the test machine's network is not the cluster's",
    ),
    (
        "protected-mode",
        "no",
        "yes",
        "the default user has no password on loopback",
    ),
    (
        "enable-debug-command",
        "yes",
        "no",
        "the testkit's DEBUG SLEEP fault",
    ),
    (
        "save",
        "\"\"",
        "3600 1 300 100 60 10000",
        "a cache: no RDB snapshots to disk",
    ),
    (
        "repl-diskless-sync-delay",
        "0",
        "5",
        "replicas (re)sync without a 5 s wait, so starts and rejoins are not 5 s slower",
    ),
];

/// Redis 7.0's defaults of the directives tests are known to change.
const KNOWN_DEFAULTS: &[(&str, &str)] = &[
    ("cluster-node-timeout", "15000"),
    ("cluster-require-full-coverage", "yes"),
    ("cluster-allow-reads-when-down", "no"),
    ("cluster-replica-validity-factor", "10"),
    ("cluster-allow-replica-migration", "yes"),
    ("lua-time-limit", "5000"),
    ("busy-reply-threshold", "5000"),
    ("tls-auth-clients", "yes"),
    ("maxmemory", "0"),
    ("maxmemory-policy", "noeviction"),
];

/// Redis 7.0's default node timeout, in milliseconds.
pub const REDIS_DEFAULT_NODE_TIMEOUT_MS: u64 = 15_000;

/// Redis 7.0's default of directive `name`, when the testkit knows it.
pub fn redis_default(name: &str) -> Option<&'static str> {
    let known = KNOWN_DEFAULTS.iter().map(|&(n, d)| (n, d));
    let harness = HARNESS.iter().map(|&(n, _, d, _)| (n, d));
    known
        .chain(harness)
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, d)| d)
}

impl ClusterSpec {
    /// Adds a `redis.conf` directive (after the testkit's own, so it wins).
    /// Say at the call why the test needs it: the default is Redis's.
    #[must_use]
    pub fn with_config(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_config.push((name.into(), value.into()));
        self
    }

    /// Sets `cluster-node-timeout` in milliseconds.
    #[must_use]
    pub fn with_node_timeout_ms(mut self, ms: u64) -> Self {
        self.node_timeout_ms = ms;
        self
    }

    /// Every server setting of this spec that differs from Redis's default:
    /// the harness's, the node timeout (when not Redis's), and each extra
    /// directive whose value is not the default (the last one of a name
    /// wins, as in `redis.conf`).
    pub fn non_default_settings(&self) -> Vec<ServerSetting> {
        let mut out: Vec<ServerSetting> = HARNESS
            .iter()
            .map(|&(name, value, default, why)| ServerSetting {
                name: name.to_owned(),
                value: value.to_owned(),
                redis_default: Some(default),
                why,
            })
            .collect();
        if self.node_timeout_ms != REDIS_DEFAULT_NODE_TIMEOUT_MS {
            out.push(ServerSetting {
                name: "cluster-node-timeout".to_owned(),
                value: self.node_timeout_ms.to_string(),
                redis_default: Some("15000"),
                why: "the spec's node timeout: failovers in seconds, not tens of seconds",
            });
        }
        for (name, value) in &self.extra_config {
            out.retain(|s| !s.name.eq_ignore_ascii_case(name));
            let default = redis_default(name);
            if default == Some(value.as_str()) {
                continue;
            }
            out.push(ServerSetting {
                name: name.clone(),
                value: value.clone(),
                redis_default: default,
                why: "requested by the spec",
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn default_spec_differs_only_in_harness_settings_and_node_timeout() {
        let names: Vec<String> = ClusterSpec::default()
            .non_default_settings()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert!(names.contains(&"cluster-node-timeout".to_owned()));
        for cluster_behaviour in [
            "cluster-require-full-coverage",
            "cluster-allow-reads-when-down",
            "cluster-replica-validity-factor",
        ] {
            assert!(!names.iter().any(|n| n == cluster_behaviour), "{names:?}");
        }
    }

    #[test]
    fn extra_config_is_listed_unless_it_is_the_default() {
        let spec = ClusterSpec::default()
            .with_node_timeout_ms(REDIS_DEFAULT_NODE_TIMEOUT_MS)
            .with_config("cluster-require-full-coverage", "no")
            .with_config("cluster-allow-replica-migration", "yes");
        let settings = spec.non_default_settings();
        assert!(!settings.iter().any(|s| s.name == "cluster-node-timeout"));
        assert!(!settings
            .iter()
            .any(|s| s.name == "cluster-allow-replica-migration"));
        let full = settings
            .iter()
            .find(|s| s.name == "cluster-require-full-coverage")
            .unwrap();
        assert_eq!(
            (full.value.as_str(), full.redis_default),
            ("no", Some("yes"))
        );
    }
}
