//! TLS on the public listener (`tls.cert_file`, `tls.key_file`): rustls,
//! no OpenSSL. The certificate is read at start (a bad file stops start-up
//! naming its key) and again on SIGHUP; new handshakes get the new one,
//! established connections keep theirs.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::ServerConfig;
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// Why a certificate or key cannot be used, naming the key that points at it.
#[derive(Debug, thiserror::Error)]
#[error("{key} ({path}): {reason}")]
pub struct TlsError {
    /// `tls.cert_file` or `tls.key_file`.
    pub key: &'static str,
    /// The file.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The certificate in use, swapped whole on reload.
struct Certificate {
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Certificate")
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.read()))
    }
}

/// The TLS side of the public listener.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    certificate: Arc<Certificate>,
    cert_file: PathBuf,
    key_file: PathBuf,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish()
    }
}

impl Tls {
    /// Reads the certificate chain and key; serves HTTP/1.1 only (the
    /// WebSocket upgrade is an HTTP/1.1 request).
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Self, TlsError> {
        let key = read_key(cert_file, key_file)?;
        let certificate = Arc::new(Certificate {
            current: RwLock::new(Arc::new(key)),
        });
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|err| TlsError {
                    key: "tls.cert_file",
                    path: cert_file.display().to_string(),
                    reason: err.to_string(),
                })?
                .with_no_client_auth()
                .with_cert_resolver(Arc::clone(&certificate) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            certificate,
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
        })
    }

    /// Reads the files again and serves the new certificate to new
    /// connections. On an error the old one stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = read_key(&self.cert_file, &self.key_file)?;
        *self.certificate.current.write() = Arc::new(key);
        Ok(())
    }

    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

fn read_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, TlsError> {
    let bad = |key: &'static str, path: &Path, reason: String| TlsError {
        key,
        path: path.display().to_string(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|err| bad("tls.cert_file", cert_file, err.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|err| bad("tls.cert_file", cert_file, err.to_string()))?;
    if chain.is_empty() {
        return Err(bad(
            "tls.cert_file",
            cert_file,
            "no PEM certificate in it".into(),
        ));
    }
    let private = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|err| bad("tls.key_file", key_file, err.to_string()))?;
    let signing = any_supported_type(&private)
        .map_err(|err| bad("tls.key_file", key_file, err.to_string()))?;
    let key = CertifiedKey::new(chain, signing);
    key.keys_match().map_err(|err| {
        bad(
            "tls.key_file",
            key_file,
            format!("does not match tls.cert_file: {err}"),
        )
    })?;
    Ok(key)
}
