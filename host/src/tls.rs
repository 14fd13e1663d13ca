//! TLS to the brokers: `amqps://` (RabbitMQ, through lapin) and `rediss://`
//! (Redis), both on rustls with the `ring` provider. Servers are verified
//! against the system's root certificates, plus a CA file when one is set
//! (`--tls-ca-file` / `MDP_TLS_CA_FILE`, the same for both brokers): a
//! private CA needs no change to the system's store. A URL scheme the build
//! cannot honour is refused, never downgraded to plaintext.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

/// The CA file set for this process (`None`: the system's roots only).
static CA_FILE: RwLock<Option<PathBuf>> = RwLock::new(None);

/// Why a TLS setting cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA file cannot be read.
    #[error("TLS CA file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The CA file holds no PEM certificate.
    #[error("TLS CA file {0}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it")]
    NoCertificate(PathBuf),
}

/// Set the CA file trusted, besides the system's roots, by every broker
/// connection opened after this call (`None` to trust the system's only).
pub fn set_ca_file(path: Option<PathBuf>) {
    *CA_FILE.write().unwrap_or_else(|p| p.into_inner()) = path;
}

/// The CA file set with [`set_ca_file`].
pub fn ca_file() -> Option<PathBuf> {
    CA_FILE.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// The PEM text of the CA file, if one is set; checked to hold a certificate
/// so that a wrong file is named at start, not as a failed handshake.
pub fn ca_pem() -> Result<Option<String>, TlsError> {
    ca_file().map(|path| read_pem(&path)).transpose()
}

fn read_pem(path: &Path) -> Result<String, TlsError> {
    let pem = std::fs::read_to_string(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(pem)
}

/// lapin's TLS settings for an `amqps://` connection: the CA file, if set,
/// added to the system's roots.
pub fn amqp_config() -> Result<lapin::tcp::OwnedTLSConfig, TlsError> {
    Ok(lapin::tcp::OwnedTLSConfig {
        identity: None,
        cert_chain: ca_pem()?,
    })
}

/// A Redis client for `url`; a `rediss://` one trusts the CA file when set
/// (instead of the system's roots: the redis crate takes one root store).
pub fn redis_client(url: &str) -> Result<redis::Client, RedisClientError> {
    match ca_pem()? {
        Some(pem) if url.starts_with("rediss://") => Ok(redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.into_bytes()),
            },
        )?),
        _ => Ok(redis::Client::open(url)?),
    }
}

/// Why a Redis client cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum RedisClientError {
    /// The TLS settings.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The URL or the client.
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

/// A hint to append to a failed broker connection's error: over TLS, which
/// port and CA it needs; in plaintext, when the answer did not parse, that
/// the port may be a TLS one.
pub fn connect_hint(url: &str, error: &str) -> &'static str {
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    match scheme {
        "amqps" | "rediss" => {
            " (over TLS: is the port a TLS port, and its certificate from a trusted CA, see --tls-ca-file?)"
        }
        "amqp" | "redis" if error.to_ascii_lowercase().contains("pars") => {
            " (the server's answer did not parse: is it a TLS port? then use amqps:// or rediss://)"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_name_tls_when_it_may_be_the_cause() {
        assert!(connect_hint("amqps://h/", "refused").contains("TLS port"));
        assert!(connect_hint("rediss://h/", "timed out").contains("TLS port"));
        assert!(connect_hint("amqp://h/", "Parsing Error").contains("amqps://"));
        assert!(connect_hint("redis://h/", "Parse error at 1").contains("rediss://"));
        assert_eq!(connect_hint("redis://h/", "connection refused"), "");
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused() {
        let dir = std::env::temp_dir().join(format!("mdp-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("not-a-ca.pem");
        std::fs::write(&file, "hello").unwrap();
        assert!(matches!(read_pem(&file), Err(TlsError::NoCertificate(_))));
        assert!(matches!(
            read_pem(&dir.join("missing.pem")),
            Err(TlsError::Read { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
