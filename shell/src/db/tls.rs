//! TLS to PostgreSQL with rustls, configured the way libpq is: `sslmode` and `sslrootcert`
//! in the database URL.
//!
//! tokio-postgres understands only `sslmode=disable|prefer|require` and no `sslrootcert`, so
//! both are taken out of the URL here and turned into a rustls client configuration; the rest
//! of the URL goes to tokio-postgres unchanged. Semantics follow libpq:
//!
//! | sslmode | encrypted | certificate checked |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default) | if the server offers TLS | chain, only when `sslrootcert` is given |
//! | `require` | always | chain, only when `sslrootcert` is given |
//! | `verify-ca` | always | chain against `sslrootcert` |
//! | `verify-full` | always | chain against `sslrootcert`, and the host name |

use std::fmt;
use std::sync::Arc;

use diesel::ConnectionError;
use diesel_async::AsyncPgConnection;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::Host;
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`, all five values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }

    /// The mode tokio-postgres negotiates with (it only knows whether TLS is optional).
    fn negotiation(self) -> tokio_postgres::config::SslMode {
        match self {
            Self::Disable => tokio_postgres::config::SslMode::Disable,
            Self::Prefer => tokio_postgres::config::SslMode::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A database URL that cannot be turned into a connection configuration. Never contains the
/// password: only parameter names and `sslrootcert` paths are quoted.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error(
        "invalid database URL: sslmode={0:?} is not one of disable, prefer, require, verify-ca, \
         verify-full"
    )]
    InvalidSslMode(String),
    #[error(
        "invalid database URL: sslmode={0} needs sslrootcert=FILE (the PEM certificate of the CA \
         that signed the server's certificate)"
    )]
    MissingRootCert(SslMode),
    #[error("cannot read sslrootcert {path}: {reason}")]
    RootCert { path: String, reason: String },
    #[error("invalid database URL: {0}")]
    Url(#[source] tokio_postgres::Error),
    #[error("cannot set up TLS: {0}")]
    Rustls(String),
}

/// How to connect: tokio-postgres's configuration and the TLS to use with it.
pub struct ConnectSpec {
    config: tokio_postgres::Config,
    mode: SslMode,
    tls: Option<MakeRustlsConnect>,
}

impl ConnectSpec {
    /// Parses `url` (`postgres://...` or libpq's `key=value` form; `sslmode` beyond `require`
    /// and `sslrootcert` only in the URL form) and reads `sslrootcert`, if any.
    pub fn parse(url: &str) -> Result<Self, TlsConfigError> {
        let (rest, mode, root_cert) = split_tls_params(url)?;
        let mut config: tokio_postgres::Config = rest.parse().map_err(TlsConfigError::Url)?;
        let mode = match mode {
            Some(mode) => mode,
            None => match config.get_ssl_mode() {
                tokio_postgres::config::SslMode::Disable => SslMode::Disable,
                tokio_postgres::config::SslMode::Require => SslMode::Require,
                _ => SslMode::Prefer,
            },
        };
        config.ssl_mode(mode.negotiation());
        let tls = match mode {
            SslMode::Disable => None,
            _ => Some(MakeRustlsConnect::new(client_config(mode, root_cert.as_deref())?)),
        };
        Ok(Self { config, mode, tls })
    }

    pub fn mode(&self) -> SslMode {
        self.mode
    }

    /// Opens the connection; a TLS failure says what was checked and why it failed.
    pub async fn connect(self) -> Result<AsyncPgConnection, ConnectionError> {
        let Self { config, mode, tls } = self;
        let bad = |err: tokio_postgres::Error| {
            ConnectionError::BadConnection(describe_failure(&err, mode, &config))
        };
        match tls {
            None => {
                let (client, connection) =
                    config.connect(tokio_postgres::NoTls).await.map_err(bad)?;
                AsyncPgConnection::try_from_client_and_connection(client, connection).await
            }
            Some(tls) => {
                let (client, connection) = config.connect(tls).await.map_err(bad)?;
                AsyncPgConnection::try_from_client_and_connection(client, connection).await
            }
        }
    }
}

/// Takes `sslmode` and `sslrootcert` out of a `postgres://` URL's query.
fn split_tls_params(
    url: &str,
) -> Result<(String, Option<SslMode>, Option<String>), TlsConfigError> {
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let Some((base, query)) = url.split_once('?').filter(|_| is_url) else {
        return Ok((url.to_owned(), None, None));
    };
    let (mut mode, mut root_cert, mut kept) = (None, None, Vec::new());
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => {
                let value = percent_decode(value);
                mode = Some(
                    SslMode::parse(&value).ok_or(TlsConfigError::InvalidSslMode(value.clone()))?,
                );
            }
            "sslrootcert" => root_cert = Some(percent_decode(value)),
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    Ok((rest, mode, root_cert))
}

/// `%XX` escapes of a URL query value (a path may need them); anything else as is.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn client_config(mode: SslMode, root_cert: Option<&str>) -> Result<ClientConfig, TlsConfigError> {
    // ring, not aws-lc-rs: no C/cmake build of aws-lc. rustls deprecates ring's provider for
    // lacking post-quantum key exchange; the classical suites are what libpq offers today.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match (mode, root_cert) {
        (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
            return Err(TlsConfigError::MissingRootCert(mode))
        }
        // libpq: without a root certificate, prefer and require encrypt but trust any server.
        (_, None) => Arc::new(AcceptAnyCert(provider.clone())),
        (mode, Some(path)) => {
            let webpki = WebPkiServerVerifier::builder_with_provider(
                Arc::new(load_roots(path)?),
                provider.clone(),
            )
            .build()
            .map_err(|err| TlsConfigError::Rustls(err.to_string()))?;
            if mode == SslMode::VerifyFull {
                webpki
            } else {
                // libpq: with a root certificate, prefer and require check the chain too.
                Arc::new(ChainOnly(webpki))
            }
        }
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| TlsConfigError::Rustls(err.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(config)
}

fn load_roots(path: &str) -> Result<RootCertStore, TlsConfigError> {
    let failed = |reason: String| TlsConfigError::RootCert { path: path.to_owned(), reason };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|err| failed(err.to_string()))? {
        let cert = cert.map_err(|err| failed(err.to_string()))?;
        roots.add(cert).map_err(|err| failed(err.to_string()))?;
    }
    if roots.is_empty() {
        return Err(failed("no PEM certificate in it".to_owned()));
    }
    Ok(roots)
}

/// The message of a failed connection: tokio-postgres's, and for a rejected certificate what
/// the check was (the rustls error alone, "UnknownIssuer", leaves an operator guessing).
fn describe_failure(
    err: &tokio_postgres::Error,
    mode: SslMode,
    config: &tokio_postgres::Config,
) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(current) = source {
        // An io::Error's `source()` skips the error it wraps: look inside explicitly.
        let inner = current
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        if let Some(rustls_err @ rustls::Error::InvalidCertificate(cert_err)) =
            inner.or_else(|| current.downcast_ref::<rustls::Error>())
        {
            return certificate_message(err, rustls_err, cert_err, mode, config);
        }
        source = current.source();
    }
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(current) = source {
        message.push_str(&format!(": {current}"));
        source = current.source();
    }
    message
}

fn certificate_message(
    err: &tokio_postgres::Error,
    rustls_err: &rustls::Error,
    cert_err: &CertificateError,
    mode: SslMode,
    config: &tokio_postgres::Config,
) -> String {
    let host = config
        .get_hosts()
        .iter()
        .find_map(|host| match host {
            Host::Tcp(name) => Some(name.as_str()),
            #[allow(unreachable_patterns)]
            _ => None,
        })
        .unwrap_or("the server");
    let why = match cert_err {
        CertificateError::UnknownIssuer | CertificateError::BadSignature => {
            "its certificate is not signed by the CA in sslrootcert".to_owned()
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            format!(
                "its certificate is not valid for the host name {host:?} (verify-full checks the \
                 name, verify-ca only the CA)"
            )
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "its certificate has expired".to_owned()
        }
        _ => "its certificate was rejected".to_owned(),
    };
    format!("TLS to {host} failed (sslmode={mode}): {why} ({err}: {rustls_err})")
}

/// Encryption without authentication (libpq's `require` without a root certificate). The
/// handshake signatures are still checked, so the peer holds the key of the certificate it sent.
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
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
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the name is not checked. webpki checks
/// the chain before the name, so a name mismatch means the chain was good.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_the_url() {
        let (rest, mode, root) = split_tls_params(
            "postgres://u:p@db:5432/pk?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem",
        )
        .expect("valid");
        assert_eq!(rest, "postgres://u:p@db:5432/pk?application_name=x");
        assert_eq!(mode, Some(SslMode::VerifyFull));
        assert_eq!(root.as_deref(), Some("/etc/ca.pem"));

        let (rest, mode, root) = split_tls_params("postgres://db/pk?sslmode=require").expect("ok");
        assert_eq!((rest.as_str(), mode, root), ("postgres://db/pk", Some(SslMode::Require), None));

        let (rest, mode, _) = split_tls_params("host=db sslmode=require").expect("ok");
        assert_eq!((rest.as_str(), mode), ("host=db sslmode=require", None));
    }

    #[test]
    fn bad_tls_parameters_are_refused_by_name() {
        let err = ConnectSpec::parse("postgres://u:secret@db/pk?sslmode=allow").err().expect("bad");
        assert!(matches!(err, TlsConfigError::InvalidSslMode(ref v) if v == "allow"), "{err}");
        let err = ConnectSpec::parse("postgres://db/pk?sslmode=verify-full").err().expect("bad");
        assert!(err.to_string().contains("needs sslrootcert"), "{err}");
        let err = ConnectSpec::parse("postgres://u:secret@db/pk?sslmode=require&sslrootcert=nope")
            .err()
            .expect("bad");
        assert!(err.to_string().contains("cannot read sslrootcert nope"), "{err}");
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn sslmode_defaults_to_prefer_and_key_value_strings_keep_theirs() {
        assert_eq!(ConnectSpec::parse("postgres://db/pk").expect("ok").mode(), SslMode::Prefer);
        assert_eq!(
            ConnectSpec::parse("host=db sslmode=disable").expect("ok").mode(),
            SslMode::Disable
        );
    }

    #[test]
    fn percent_escapes_are_decoded() {
        assert_eq!(percent_decode("a%2Fb%20c"), "a/b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
