//! rustls configurations from PEM files, with the one crypto provider of the whole
//! tree (ring), and the caller's identity from its certificate.

use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::Error;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem = |e| Error::Pem(path.display().to_string(), e);
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem)?;
    if certs.is_empty() {
        return Err(Error::Tls(format!("{}: no certificate", path.display())));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| Error::Pem(path.display().to_string(), e))
}

fn roots(ca: &Path) -> Result<Arc<RootCertStore>, Error> {
    let mut roots = RootCertStore::empty();
    for c in certs(ca)? {
        roots.add(c).map_err(|e| Error::Tls(e.to_string()))?;
    }
    Ok(Arc::new(roots))
}

/// A KME's server side: its certificate and key; clients' certificates checked against
/// `ca`. With `require_client_cert` a client without one fails the TLS handshake;
/// without, it gets through and the API answers it (ETSI 014: 401).
pub fn server(
    ca: &Path,
    cert: &Path,
    key_path: &Path,
    require_client_cert: bool,
) -> Result<Arc<ServerConfig>, Error> {
    let builder = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider());
    let verifier = match require_client_cert {
        true => builder.build(),
        false => builder.allow_unauthenticated().build(),
    }
    .map_err(|e| Error::Tls(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(cert)?, key(key_path)?)
        .map_err(|e| Error::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A key consumer's client side: the KME's certificate checked against `ca`, ours
/// (naming our SAE) presented.
pub fn client(ca: &Path, cert: &Path, key_path: &Path) -> Result<Arc<ClientConfig>, Error> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(certs(cert)?, key(key_path)?)
        .map_err(|e| Error::Tls(e.to_string()))?;
    Ok(Arc::new(config))
}

/// A client that presents no certificate (to test that KMEs refuse it).
pub fn client_without_certificate(ca: &Path) -> Result<Arc<ClientConfig>, Error> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots(ca)?)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The common name of the first certificate in a PEM file (a gateway checks that its
/// certificate names the SAE it says it is).
pub fn certificate_name(path: &Path) -> Result<Option<String>, Error> {
    Ok(common_name(&certs(path)?[0]))
}

/// The common name of a (verified) peer certificate: the caller's SAE ID.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}
