//! The TLS client configuration for connections the HTTP client does not make itself — the
//! WebSocket to nova-serialproxy (`wss://`): the same trust as the cloud's HTTPS (the
//! platform's roots, plus the `cacert` bundle of clouds.yaml / `OS_CACERT`), or none at all
//! when the cloud config says `verify: false` / `insecure: true` (warned at start-up by the
//! session, as for HTTPS).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject as _;

use super::CloudError;
use super::config::CloudConfig;

/// A client configuration that trusts what `cfg` says to trust.
pub fn client_config(cfg: &CloudConfig) -> Result<Arc<rustls::ClientConfig>, CloudError> {
    client_config_for(cfg.cacert.as_deref(), cfg.verify_tls)
}

pub(crate) fn client_config_for(
    cacert: Option<&Path>,
    verify_tls: bool,
) -> Result<Arc<rustls::ClientConfig>, CloudError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = if verify_tls {
        let mut extra = Vec::new();
        if let Some(path) = cacert {
            let bad = |e: &dyn std::fmt::Display| {
                CloudError::Config(format!("cacert {}: {e}", path.display()))
            };
            for c in CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
                extra.push(c.map_err(|e| bad(&e))?);
            }
        }
        Arc::new(
            rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
                .map_err(|e| CloudError::Config(format!("TLS roots: {e}")))?,
        )
    } else {
        Arc::new(NoVerification(provider.signature_verification_algorithms))
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CloudError::Config(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// `verify: false`: any certificate is accepted, but the handshake's signatures are still
/// checked (the peer must hold the key of the certificate it shows).
#[derive(Debug)]
struct NoVerification(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_broken_ca_bundle_is_a_clear_error() {
        let e = client_config_for(Some(Path::new("/nonexistent/ca.pem")), true).unwrap_err();
        assert!(e.to_string().contains("cacert /nonexistent/ca.pem"), "{e}");
        let dir = std::env::temp_dir().join(format!("ovbmc-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("bad.pem");
        std::fs::write(
            &f,
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(client_config_for(Some(&f), true).is_err());
        assert!(client_config_for(None, false).is_ok());
    }
}
