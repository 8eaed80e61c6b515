//! [`NodeConfig::from_env`]: credentials and TLS from the environment, so an
//! operator can point an application (or `slotguard doctor`) at a secured
//! cluster without code.

use slotguard_core::{CacheError, NodeAddr};

use crate::config::NodeConfig;
use crate::credentials::Credentials;
use crate::tls::TlsConfig;

/// Comma-separated `host:port` of cluster nodes to start from.
pub const ENV_SEEDS: &str = "SLOTGUARD_SEEDS";
/// ACL user name (needs `SLOTGUARD_PASSWORD`).
pub const ENV_USERNAME: &str = "SLOTGUARD_USERNAME";
/// Password: with `SLOTGUARD_USERNAME` for an ACL user, alone for
/// `requirepass` (the `default` user).
pub const ENV_PASSWORD: &str = "SLOTGUARD_PASSWORD";
/// A PEM file of CA certificates; TLS is on when it is set.
pub const ENV_TLS_CA: &str = "SLOTGUARD_TLS_CA";
/// The name every node's certificate must carry, when the certificates do
/// not name the nodes' IP addresses (optional, with `SLOTGUARD_TLS_CA`).
pub const ENV_TLS_SERVER_NAME: &str = "SLOTGUARD_TLS_SERVER_NAME";

impl NodeConfig {
    /// The defaults plus what the environment says: `SLOTGUARD_USERNAME` and
    /// `SLOTGUARD_PASSWORD` (credentials), `SLOTGUARD_TLS_CA` (a PEM file:
    /// TLS on, trusting those CAs) and `SLOTGUARD_TLS_SERVER_NAME`. Unset or
    /// empty variables are ignored.
    ///
    /// An error ([`CacheError::InvalidInput`]) for a user without a
    /// password, or a CA file that cannot be read or holds no certificate;
    /// it never quotes the password.
    pub fn from_env() -> Result<Self, CacheError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`NodeConfig::from_env`] with another source of variables (tests,
    /// a config file).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, CacheError> {
        let get = |name| lookup(name).filter(|v| !v.is_empty());
        let mut config = NodeConfig::default();
        match (get(ENV_USERNAME), get(ENV_PASSWORD)) {
            (Some(user), Some(pass)) => config.credentials = Some(Credentials::user(user, pass)),
            (None, Some(pass)) => config.credentials = Some(Credentials::password(pass)),
            (Some(_), None) => {
                return Err(CacheError::InvalidInput(format!(
                    "{ENV_USERNAME} is set but {ENV_PASSWORD} is not"
                )))
            }
            (None, None) => {}
        }
        if let Some(ca) = get(ENV_TLS_CA) {
            let mut tls = TlsConfig::with_ca_file(&ca)?;
            if let Some(name) = get(ENV_TLS_SERVER_NAME) {
                tls = tls.server_name(name);
            }
            config.tls = Some(tls);
        }
        Ok(config)
    }
}

/// The seeds in `SLOTGUARD_SEEDS` (comma-separated `host:port`, blanks
/// ignored): `Ok(None)` when it is unset, an error
/// ([`CacheError::InvalidInput`]) for an entry that is not an address or a
/// list with none.
pub fn seeds_from_env() -> Result<Option<Vec<NodeAddr>>, CacheError> {
    seeds_from_lookup(|name| std::env::var(name).ok())
}

/// [`seeds_from_env`] with another source of variables.
pub fn seeds_from_lookup(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<Vec<NodeAddr>>, CacheError> {
    let Some(list) = lookup(ENV_SEEDS) else {
        return Ok(None);
    };
    let seeds = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<NodeAddr>()
                .map_err(|e| CacheError::InvalidInput(format!("{ENV_SEEDS}: {s:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if seeds.is_empty() {
        return Err(CacheError::InvalidInput(format!("{ENV_SEEDS} is empty")));
    }
    Ok(Some(seeds))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::HashMap;

    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<NodeConfig, CacheError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        NodeConfig::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn reads_credentials_and_tls() {
        let c = from(&[]).unwrap();
        assert!(c.credentials.is_none() && c.tls.is_none());
        let c = from(&[(ENV_USERNAME, "cache"), (ENV_PASSWORD, "pw-123")]).unwrap();
        let creds = c.credentials.unwrap();
        assert_eq!(creds.username.as_deref(), Some("cache"));
        assert_eq!(creds.password.expose(), "pw-123");
        let c = from(&[(ENV_PASSWORD, "pw-123"), (ENV_USERNAME, "")]).unwrap();
        assert_eq!(c.credentials.unwrap().username, None);
        let err = from(&[(ENV_USERNAME, "cache")]).unwrap_err();
        assert!(matches!(err, CacheError::InvalidInput(_)));

        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        let dir = std::env::temp_dir().join(format!("slotguard-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, pem).unwrap();
        let c = from(&[
            (ENV_TLS_CA, ca.to_str().unwrap()),
            (ENV_TLS_SERVER_NAME, "redis.internal"),
            (ENV_PASSWORD, "pw-123"),
        ])
        .unwrap();
        assert!(c.tls.is_some());
        assert!(!format!("{c:?}").contains("pw-123"));
        std::fs::remove_dir_all(&dir).unwrap();
        let err = from(&[(ENV_TLS_CA, "/nonexistent/ca.pem")]).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn seeds_parse_from_a_comma_list() {
        let seeds = |v: Option<&str>| seeds_from_lookup(|_| v.map(str::to_owned));
        assert_eq!(seeds(None).unwrap(), None);
        let got = seeds(Some(" 127.0.0.1:7000, ,127.0.0.1:7001 "))
            .unwrap()
            .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].port(), 7001);
        assert!(matches!(
            seeds(Some(" , ")),
            Err(CacheError::InvalidInput(_))
        ));
        assert!(matches!(
            seeds(Some("nohost")),
            Err(CacheError::InvalidInput(_))
        ));
    }
}
