//! Dialing a node over mutual TLS (TLS 1.3, our certificate, the federation CA as the only root),
//! for the CLI, peers and tests. Also turns tonic's transport errors into messages a person can act
//! on: with TLS 1.3 a refused client certificate surfaces only at the first RPC, deep in the
//! error's source chain.

use crate::pki::{self, TlsFiles};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error("bad node address {address:?}: {reason} (expected host:port, e.g. 127.0.0.1:7443)")]
    Address { address: String, reason: String },
    #[error("cannot connect to {address}: {reason}")]
    Connect { address: String, reason: String },
}

/// Splits "host:port" (an optional https:// in front is accepted) into host and port.
fn host_port(address: &str) -> Result<(String, u16), ClientError> {
    let bad = |reason: &str| ClientError::Address {
        address: address.to_string(),
        reason: reason.to_string(),
    };
    let rest = address
        .strip_prefix("https://")
        .unwrap_or(address)
        .trim_end_matches('/');
    let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    let port = port.parse::<u16>().map_err(|_| bad("port is not a number"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("no host"));
    }
    Ok((host.to_string(), port))
}

/// Finds out why a TLS connection to `address` fails, for a message a person can act on. With TLS
/// 1.3 the server judges our certificate after the client considers the handshake done, so tonic
/// only sees a closed connection; a raw connection reads the server's alert instead.
pub async fn diagnose(address: &str, files: &TlsFiles, server_name: Option<&str>) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (host, port) = host_port(address).ok()?;
    let config = pki::client_config(files).ok()?;
    let name = rustls::pki_types::ServerName::try_from(server_name.unwrap_or(&host).to_string()).ok()?;
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host.as_str(), port)))
        .await
        .ok()?
        .ok()?;
    let mut tls = match TlsConnector::from(config).connect(name, tcp).await {
        Ok(t) => t,
        Err(e) => return Some(explain(&e)),
    };
    // The HTTP/2 preface; a server that accepted us answers with its SETTINGS.
    if let Err(e) = tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await {
        return Some(explain(&e));
    }
    let mut buf = [0u8; 16];
    match tokio::time::timeout(CONNECT_TIMEOUT, tls.read(&mut buf)).await {
        Ok(Err(e)) => Some(explain(&e)),
        Ok(Ok(0)) => Some("the server closed the connection after the handshake".to_string()),
        _ => None,
    }
}

/// Opens a channel to `address` authenticating with `files`. `server_name` overrides the name the
/// server certificate must carry (default: the host part of the address). The server must prove
/// it is a node (`cx://node/*`): a department's or publisher's certificate chains to the same CA
/// and would otherwise receive what we send.
pub async fn connect(address: &str, files: &TlsFiles, server_name: Option<&str>) -> Result<Channel, ClientError> {
    connect_expecting(address, files, server_name, None).await
}

/// Like `connect`; with `expected`, the server must be exactly that identity (a peer configured
/// as the node of region R must prove it is `cx://node/R`), otherwise any node.
pub async fn connect_expecting(
    address: &str,
    files: &TlsFiles,
    server_name: Option<&str>,
    expected: Option<crate::pki::Identity>,
) -> Result<Channel, ClientError> {
    let (host, port) = host_port(address)?;
    let config = pki::client_config(files)?;
    let name = server_name.unwrap_or(&host).to_string();
    let server_name = rustls::pki_types::ServerName::try_from(name.clone()).map_err(|_| ClientError::Address {
        address: address.to_string(),
        reason: format!("{name:?} is not a valid server name"),
    })?;
    let connector = TlsConnector::from(Arc::clone(&config));
    let target = format!("{host}:{port}");
    // The URI only carries the authority for HTTP/2; TLS is done by the connector below.
    let uri_host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    let endpoint = Endpoint::from_shared(format!("http://{uri_host}:{port}"))
        .map_err(|e| ClientError::Address {
            address: address.to_string(),
            reason: e.to_string(),
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let connector = connector.clone();
            let server_name = server_name.clone();
            let target = target.clone();
            let expected = expected.clone();
            async move {
                let tcp = TcpStream::connect(&target).await?;
                tcp.set_nodelay(true)?;
                let tls = connector.connect(server_name, tcp).await?;
                let leaf = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .ok_or_else(|| {
                        std::io::Error::new(std::io::ErrorKind::PermissionDenied, "server presented no certificate")
                    })?;
                let found = crate::pki::identity_from_cert_der(leaf.as_ref())
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e.to_string()))?;
                match &expected {
                    Some(expected) if &found != expected => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::PermissionDenied,
                            format!("server is {found}, not the expected {expected}"),
                        ));
                    }
                    None if !matches!(found, crate::pki::Identity::Node(_)) => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::PermissionDenied,
                            format!("server is {found}, not a node of the federation (cx://node/<region>)"),
                        ));
                    }
                    _ => {}
                }
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|e| ClientError::Connect {
            address: address.to_string(),
            reason: explain(&e),
        })
}

/// The most specific message in an error's source chain, with a hint for the usual TLS refusals.
pub fn explain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut messages = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        messages.push(s.to_string());
        source = s.source();
    }
    let all = messages.join(": ");
    let hint = if all.contains("CertificateRevoked") || all.contains("certificate revoked") {
        " (the server refused our certificate: it is revoked)"
    } else if all.contains("CertificateExpired") || all.contains("certificate expired") || all.contains("Expired") {
        " (a certificate is expired or not yet valid)"
    } else if all.contains("UnknownCA") || all.contains("UnknownIssuer") || all.contains("unknown ca") {
        " (the certificates do not chain to the same federation CA)"
    } else if all.contains("CertificateRequired") || all.contains("certificate required") {
        " (the server requires a client certificate)"
    } else if all.contains("DecryptError") || all.contains("decrypterror") || all.contains("BadSignature") {
        " (a certificate's signature does not verify: it was issued by a different CA than the federation CA the other side trusts)"
    } else if all.contains("BadCertificate") || all.contains("bad certificate") {
        " (the server refused our certificate)"
    } else {
        ""
    };
    format!("{all}{hint}")
}

/// A status from a call, explained for a person (transport failures get their source chain).
pub fn explain_status(status: &tonic::Status) -> String {
    match std::error::Error::source(status) {
        Some(source) => format!("{}: {}", status.message(), explain(source)),
        None => format!("{:?}: {}", status.code(), status.message()),
    }
}
