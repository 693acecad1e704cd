//! The Redfish face's certificate: the operator's PEM pair (`--redfish-cert`/`--redfish-key`),
//! or a self-signed pair made on first start and kept in the state directory, so that a client
//! that pinned it (Ironic's `redfish_verify_ca`) keeps trusting it across restarts.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tracing::info;

use crate::settings::RedfishSettings;

/// File names of the self-signed pair in the state directory.
pub const CERT_FILE: &str = "redfish-cert.pem";
/// See [`CERT_FILE`].
pub const KEY_FILE: &str = "redfish-key.pem";

/// The TLS acceptor the settings ask for.
pub fn acceptor(s: &RedfishSettings) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let (cert, key) = match &s.cert_key {
        Some((c, k)) => (c.clone(), k.clone()),
        None => {
            let (c, k) = (s.state_dir.join(CERT_FILE), s.state_dir.join(KEY_FILE));
            if !c.exists() || !k.exists() {
                make_self_signed(&s.state_dir, &c, &k, s.addr.ip())?;
            }
            (c, k)
        }
    };
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(server_config(
        &cert, &key,
    )?)))
}

/// The TLS configuration of a PEM pair (also what `ovbmc check` tries, without serving).
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<rustls::ServerConfig> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| anyhow::anyhow!("Redfish certificate {}: {e}", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!(
            "Redfish certificate {}: no certificate in it",
            cert.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("Redfish key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("Redfish TLS")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("Redfish TLS: the key does not fit the certificate")?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Make a self-signed pair for the host's names and write it, the key 0600 (created so:
/// never readable by others, not even for a moment).
fn make_self_signed(
    dir: &Path,
    cert: &Path,
    key: &Path,
    listen: std::net::IpAddr,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "Redfish state directory {} (set --redfish-state-dir or [redfish] state_dir)",
            dir.display()
        )
    })?;
    let mut names = vec!["localhost".to_string()];
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if !h.is_empty() && h != "localhost" {
            names.push(h.to_string());
        }
    }
    // IP SANs: the listen address (a client that dials it by address verifies it) and loopback.
    for ip in [
        listen,
        [127, 0, 0, 1].into(),
        std::net::Ipv6Addr::LOCALHOST.into(),
    ] {
        let ip = ip.to_string();
        if (!listen.is_unspecified() || ip != listen.to_string()) && !names.contains(&ip) {
            names.push(ip);
        }
    }
    let made = rcgen::generate_simple_self_signed(names).context("making a certificate")?;
    let write = |path: &Path, mode: u32, text: &str| -> anyhow::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)
            .with_context(|| format!("writing {}", path.display()))?;
        f.write_all(text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))
    };
    write(key, 0o600, &made.signing_key.serialize_pem())?;
    write(cert, 0o644, &made.cert.pem())?;
    info!(cert = %cert.display(), "redfish: made a self-signed certificate");
    Ok(())
}
