//! TLS settings for node connections: which CAs to trust, an optional
//! client certificate (mTLS), and which name each node's certificate must
//! carry.
//!
//! Why a name policy: `CLUSTER SHARDS`/`SLOTS` (and `MOVED`) name nodes by
//! IP address. By default the name checked is the address's host, so a
//! certificate with IP SANs works as is; a cluster whose certificates carry
//! a DNS name instead (one wildcard or one name for every node, as managed
//! services issue them) needs [`TlsConfig::server_name`] or
//! [`TlsConfig::server_names`], like fred's `TlsHostMapping`.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use slotguard_core::{CacheError, NodeAddr};

/// Maps a node to the name its certificate must carry; `None` falls back to
/// the node's host.
pub type ServerNameFn = dyn Fn(&NodeAddr) -> Option<String> + Send + Sync;

#[derive(Clone)]
enum Names {
    Host,
    Fixed(String),
    Custom(Arc<ServerNameFn>),
}

/// TLS on every node connection (commands, topology fetch, probes), with
/// rustls and its `ring` provider.
///
/// ```no_run
/// use slotguard_node::{NodeConfig, TlsConfig};
/// # fn run() -> Result<(), slotguard_core::CacheError> {
/// let tls = TlsConfig::with_ca_file("/etc/redis/ca.pem")?
///     .client_cert_pem(&std::fs::read("client.pem").unwrap(), &std::fs::read("client.key").unwrap())?
///     .server_name("redis.internal");
/// let config = NodeConfig::default().with_tls(tls);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TlsConfig {
    roots: Arc<RootCertStore>,
    client_auth: Option<Arc<ClientAuth>>,
    names: Names,
    client: Arc<ClientConfig>,
}

fn invalid(what: impl fmt::Display) -> CacheError {
    CacheError::InvalidInput(format!("tls configuration: {what}"))
}

impl TlsConfig {
    fn from_roots(roots: RootCertStore) -> Result<Self, CacheError> {
        let roots = Arc::new(roots);
        Ok(Self {
            client: build(&roots, None)?,
            roots,
            client_auth: None,
            names: Names::Host,
        })
    }

    /// Trust the CA certificates in `pem` (one or more `CERTIFICATE`
    /// blocks); an error if there is none or one does not parse.
    pub fn with_ca_pem(pem: &[u8]) -> Result<Self, CacheError> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| invalid(format_args!("CA bundle: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| invalid(format_args!("CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(invalid("no certificate in the CA bundle"));
        }
        Self::from_roots(roots)
    }

    /// [`TlsConfig::with_ca_pem`] from a file.
    pub fn with_ca_file(path: impl AsRef<Path>) -> Result<Self, CacheError> {
        let path = path.as_ref();
        let pem = std::fs::read(path)
            .map_err(|e| invalid(format_args!("cannot read {}: {e}", path.display())))?;
        Self::with_ca_pem(&pem)
    }

    /// Trust the operating system's CA store.
    pub fn with_system_roots() -> Result<Self, CacheError> {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (_added, _ignored) = roots.add_parsable_certificates(found.certs);
        if roots.is_empty() {
            return Err(invalid("no usable certificate in the system store"));
        }
        Self::from_roots(roots)
    }

    /// Present a client certificate (mTLS): `cert_pem` is the chain (leaf
    /// first), `key_pem` its private key (PKCS#8, PKCS#1 or SEC1).
    pub fn client_cert_pem(mut self, cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, CacheError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format_args!("client certificate: {e}")))?;
        if chain.is_empty() {
            return Err(invalid("no client certificate"));
        }
        // The key's parse error is not printed: it could quote key bytes.
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|_| invalid("client key does not parse"))?;
        self.client_auth = Some(Arc::new((chain, key)));
        self.rebuild()?;
        Ok(self)
    }

    /// Every node's certificate must carry `name` (one certificate or a
    /// wildcard for the whole cluster).
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.names = Names::Fixed(name.into());
        self
    }

    /// The name each node's certificate must carry, per node; `None` means
    /// the node's host.
    pub fn server_names(
        mut self,
        names: impl Fn(&NodeAddr) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.names = Names::Custom(Arc::new(names));
        self
    }

    fn rebuild(&mut self) -> Result<(), CacheError> {
        self.client = build(&self.roots, self.client_auth.as_deref())?;
        Ok(())
    }

    /// The name `addr`'s certificate is checked against.
    pub(crate) fn name_for(&self, addr: &NodeAddr) -> Result<ServerName<'static>, String> {
        let name = match &self.names {
            Names::Host => addr.host().to_owned(),
            Names::Fixed(n) => n.clone(),
            Names::Custom(f) => f(addr).unwrap_or_else(|| addr.host().to_owned()),
        };
        ServerName::try_from(name.clone()).map_err(|_| format!("invalid server name {name:?}"))
    }

    pub(crate) fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.client.clone())
    }

    /// The rustls client settings (ring provider, the roots and client
    /// certificate given), for another leaf that dials with them
    /// (`slotguard-fred`).
    pub fn rustls_client_config(&self) -> Arc<ClientConfig> {
        self.client.clone()
    }

    /// The name `addr`'s certificate is checked against, as text: the
    /// node's host, the fixed name, or the per-node function's answer.
    pub fn server_name_for(&self, addr: &NodeAddr) -> String {
        match &self.names {
            Names::Host => addr.host().to_owned(),
            Names::Fixed(n) => n.clone(),
            Names::Custom(f) => f(addr).unwrap_or_else(|| addr.host().to_owned()),
        }
    }
}

type ClientAuth = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn build(
    roots: &Arc<RootCertStore>,
    auth: Option<&ClientAuth>,
) -> Result<Arc<ClientConfig>, CacheError> {
    // The ring provider, named explicitly: rustls' process-wide default
    // would be aws-lc-rs (cmake, slow builds) or whatever another crate
    // installed.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(invalid)?
        .with_root_certificates(roots.clone());
    let client = match auth {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => builder
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(|e| invalid(format_args!("client certificate: {e}")))?,
    };
    Ok(Arc::new(client))
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = match &self.names {
            Names::Host => "node host".to_owned(),
            Names::Fixed(n) => format!("{n:?}"),
            Names::Custom(_) => "custom".to_owned(),
        };
        f.debug_struct("TlsConfig")
            .field("roots", &self.roots.len())
            .field(
                "client_cert",
                &self.client_auth.as_ref().map(|_| "present (key redacted)"),
            )
            .field("server_name", &names)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ca_pem() -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        (pem, rcgen::Issuer::new(params, key))
    }

    #[test]
    fn bad_bundles_and_keys_are_typed_errors_without_key_bytes() {
        assert!(matches!(
            TlsConfig::with_ca_pem(b"not a pem"),
            Err(CacheError::InvalidInput(_))
        ));
        assert!(TlsConfig::with_ca_file("/nonexistent/ca.pem").is_err());
        let (ca, issuer) = ca_pem();
        let tls = TlsConfig::with_ca_pem(ca.as_bytes()).unwrap();
        let params = rcgen::CertificateParams::new(vec!["client".to_owned()]).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap().pem();
        let key_pem = key.serialize_pem();
        let err = tls
            .clone()
            .client_cert_pem(
                cert.as_bytes(),
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            )
            .unwrap_err();
        assert!(!err.to_string().contains("AAAA"), "{err}");
        let tls = tls
            .client_cert_pem(cert.as_bytes(), key_pem.as_bytes())
            .unwrap();
        let shown = format!("{tls:?}");
        assert!(
            !shown.contains("PRIVATE") && shown.contains("key redacted"),
            "{shown}"
        );
    }

    #[test]
    fn server_names_follow_the_policy() {
        let (ca, _) = ca_pem();
        let tls = TlsConfig::with_ca_pem(ca.as_bytes()).unwrap();
        let ip: NodeAddr = "127.0.0.1:7000".parse().unwrap();
        let v6: NodeAddr = "[::1]:7000".parse().unwrap();
        assert!(matches!(tls.name_for(&ip), Ok(ServerName::IpAddress(_))));
        assert!(matches!(tls.name_for(&v6), Ok(ServerName::IpAddress(_))));
        let fixed = tls.clone().server_name("redis.internal");
        assert_eq!(fixed.name_for(&ip).unwrap().to_str(), "redis.internal");
        let mapped = tls.server_names(|a| (a.port() == 7000).then(|| "n1.internal".to_owned()));
        assert_eq!(mapped.name_for(&ip).unwrap().to_str(), "n1.internal");
        let other: NodeAddr = "127.0.0.1:7001".parse().unwrap();
        assert!(matches!(
            mapped.name_for(&other),
            Ok(ServerName::IpAddress(_))
        ));
    }
}
