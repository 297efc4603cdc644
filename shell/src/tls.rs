//! HTTPS for players on other machines: browsers give WebCodecs only to secure pages, and
//! `http://<LAN address>` is not one.

use std::net::SocketAddr;

use anyhow::Context as _;
use axum_server::tls_rustls::RustlsConfig;

use crate::cli::TlsArgs;

/// The TLS configuration the flags ask for, or `None` for plain HTTP.
pub async fn config(args: &TlsArgs, listen: SocketAddr) -> anyhow::Result<Option<RustlsConfig>> {
    // Several crates may race to install a provider; whichever wins is ring-based.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let config = RustlsConfig::from_pem_file(cert, key)
            .await
            .with_context(|| {
                format!(
                    "cannot use TLS certificate {} with key {}",
                    cert.display(),
                    key.display()
                )
            })?;
        return Ok(Some(config));
    }
    if !args.tls_self_signed {
        return Ok(None);
    }
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let ip = listen.ip().to_string();
    if !listen.ip().is_unspecified() && !names.contains(&ip) {
        names.push(ip);
    }
    if let Ok(host) = std::fs::read_to_string("/etc/hostname") {
        let host = host.trim();
        if !host.is_empty() {
            names.push(host.to_owned());
        }
    }
    let certified = rcgen::generate_simple_self_signed(names.clone())
        .context("cannot make a self-signed certificate")?;
    tracing::info!(
        ?names,
        "serving HTTPS with a self-signed certificate: browsers will ask to accept it once"
    );
    let config = RustlsConfig::from_pem(
        certified.cert.pem().into_bytes(),
        certified.signing_key.serialize_pem().into_bytes(),
    )
    .await
    .context("cannot load the self-signed certificate")?;
    Ok(Some(config))
}
