//! Certificates for TLS clusters, made by the test with `rcgen`: a CA, one
//! server certificate shared by every node (SANs `127.0.0.1`, `localhost`
//! and [`TlsFiles::SERVER_NAME`]), a client certificate for mTLS, and an
//! unrelated CA for "wrong CA" tests.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use crate::error::TestkitError;

/// The PEM material of a TLS cluster ([`LocalCluster::tls`](super::LocalCluster::tls)).
#[derive(Clone)]
pub struct TlsFiles {
    /// The CA that signed every node's certificate (PEM).
    pub ca_pem: String,
    /// Where `ca_pem` is written.
    pub ca_path: PathBuf,
    /// A client certificate signed by the same CA (PEM), for mTLS.
    pub client_cert_pem: String,
    /// Its private key (PEM).
    pub client_key_pem: String,
    /// A CA that signed nothing here: a client trusting only it must fail.
    pub unrelated_ca_pem: String,
    pub(super) server_cert: PathBuf,
    pub(super) server_key: PathBuf,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("ca_path", &self.ca_path)
            .finish_non_exhaustive()
    }
}

fn err(what: &str, e: rcgen::Error) -> TestkitError {
    TestkitError::Unexpected(format!("generating {what}: {e}"))
}

fn ca(name: &str) -> Result<(CertificateParams, KeyPair, String), TestkitError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| err("a CA", e))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().map_err(|e| err("a CA key", e))?;
    let cert = params.self_signed(&key).map_err(|e| err("a CA", e))?;
    Ok((params, key, cert.pem()))
}

fn leaf(
    names: &[&str],
    cn: &str,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<(String, String), TestkitError> {
    let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    let mut params = CertificateParams::new(names).map_err(|e| err("a certificate", e))?;
    params.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().map_err(|e| err("a key", e))?;
    let cert = params
        .signed_by(&key, issuer)
        .map_err(|e| err("a certificate", e))?;
    Ok((cert.pem(), key.serialize_pem()))
}

impl TlsFiles {
    /// The DNS name on every node's certificate besides `127.0.0.1` and
    /// `localhost` (for tests of a fixed server name; never resolved).
    pub const SERVER_NAME: &'static str = "node.slotguard.test";

    /// Generate everything and write the server's files into `dir`.
    pub(super) fn generate(dir: &Path) -> Result<TlsFiles, TestkitError> {
        let (ca_params, ca_key, ca_pem) = ca("slotguard-testkit CA")?;
        let issuer = Issuer::new(ca_params, ca_key);
        let (server_pem, server_key_pem) = leaf(
            &["127.0.0.1", "localhost", Self::SERVER_NAME],
            "slotguard-testkit node",
            &issuer,
        )?;
        let (client_cert_pem, client_key_pem) = leaf(&[], "slotguard-testkit client", &issuer)?;
        let (_, _, unrelated_ca_pem) = ca("unrelated CA")?;
        let write = |name: &str, text: &str| -> Result<PathBuf, TestkitError> {
            let path = dir.join(name);
            fs::write(&path, text).map_err(|source| TestkitError::Io {
                context: format!("writing {}", path.display()),
                source,
            })?;
            Ok(path)
        };
        Ok(TlsFiles {
            ca_path: write("ca.pem", &ca_pem)?,
            server_cert: write("node.pem", &server_pem)?,
            server_key: write("node.key", &server_key_pem)?,
            ca_pem,
            client_cert_pem,
            client_key_pem,
            unrelated_ca_pem,
        })
    }

    /// The `redis.conf` lines of a node serving TLS on `tls_port` (the
    /// plaintext `port` stays for the testkit's admin client).
    pub(super) fn config(&self, tls_port: u16) -> String {
        let q = |p: &Path| format!("\"{}\"", p.display());
        format!(
            "tls-port {tls_port}\n\
             tls-cert-file {cert}\n\
             tls-key-file {key}\n\
             tls-ca-cert-file {ca}\n\
             tls-auth-clients optional\n\
             tls-cluster yes\n\
             tls-replication yes\n",
            cert = q(&self.server_cert),
            key = q(&self.server_key),
            ca = q(&self.ca_path),
        )
    }
}
