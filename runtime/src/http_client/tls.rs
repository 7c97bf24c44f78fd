//! TLS for the client: a tool's or webhook's [`TlsFiles`] (a CA file, a client certificate and
//! its key, all PEM) in, a rustls `ClientConfig` out — the system's root certificates plus the
//! CA file's, and the client certificate for mutual TLS — or an error naming the file and what
//! is wrong with it; and a handshake failure turned into a sentence a person can act on.
//!
//! The files are read when `flow.toml` is loaded ([`check`], so a mistake stops the command at
//! its line) and again when a call needs them; a built configuration is kept for the process
//! and rebuilt when one of its files changes (a renewed certificate is picked up without a
//! restart). The system's roots (`SSL_CERT_FILE` / `SSL_CERT_DIR` when set, else the
//! distribution's bundle) are read once per process.

use rustls::client::ClientConfig;
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, Error as TlsError, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

/// The largest PEM file read.
const MAX_PEM_BYTES: u64 = 1 << 20;

/// The TLS files of one tool, `[llm]` endpoint, webhook or OTLP exporter (paths already
/// resolved against the directory of `flow.toml`). Empty: the system's roots, no client
/// certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TlsFiles {
    /// `ca_file`: PEM certificates of authorities trusted besides the system's.
    pub ca_file: Option<PathBuf>,
    /// `client_cert`: the PEM certificate chain presented to a server that asks for one.
    pub client_cert: Option<PathBuf>,
    /// `client_key`: the PEM private key of `client_cert` (PKCS#8, PKCS#1 or SEC1).
    pub client_key: Option<PathBuf>,
}

impl TlsFiles {
    /// No files: the system's roots, no client certificate.
    pub const NONE: TlsFiles = TlsFiles {
        ca_file: None,
        client_cert: None,
        client_key: None,
    };

    pub fn is_empty(&self) -> bool {
        self == &TlsFiles::NONE
    }
}

/// What is wrong with a [`TlsFiles`]: the key whose file it is (`ca_file`, `client_cert`,
/// `client_key`) and a sentence that names the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFileError {
    pub key: &'static str,
    pub message: String,
}

impl TlsFileError {
    fn new(key: &'static str, path: &Path, why: impl std::fmt::Display) -> TlsFileError {
        TlsFileError {
            key,
            message: format!("{key} `{}`: {why}", path.display()),
        }
    }
}

/// Reads and checks every file of `files`: each is PEM of the right kind, the key belongs to
/// the certificate, and neither comes without the other.
pub fn check(files: &TlsFiles) -> Result<(), TlsFileError> {
    extra_roots(files)?;
    identity(files)?;
    Ok(())
}

/// A configuration and when its files were last changed ([`stamp`]).
type Built = (Vec<Option<SystemTime>>, Arc<ClientConfig>);

/// The rustls configuration for `files`, built once and kept until one of the files changes.
pub(crate) fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, String> {
    static BUILT: OnceLock<Mutex<HashMap<TlsFiles, Built>>> = OnceLock::new();
    let stamp = stamp(files);
    let built = BUILT.get_or_init(Default::default);
    if let Ok(built) = built.lock()
        && let Some((seen, config)) = built.get(files)
        && *seen == stamp
    {
        return Ok(config.clone());
    }
    let config = Arc::new(build(files).map_err(|e| e.message)?);
    if let Ok(mut built) = built.lock() {
        built.insert(files.clone(), (stamp, config.clone()));
    }
    Ok(config)
}

/// When each file was last changed (`None`: not given, or unreadable).
fn stamp(files: &TlsFiles) -> Vec<Option<SystemTime>> {
    [&files.ca_file, &files.client_cert, &files.client_key]
        .into_iter()
        .map(|path| {
            path.as_ref()
                .and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        })
        .collect()
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The system's root certificates, read once. A bundle that cannot be read leaves only the
/// configured CA files (and a warning in the log).
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::warn!(%error, "cannot read some of the system's root certificates");
        }
        found.certs
    })
}

fn build(files: &TlsFiles) -> Result<ClientConfig, TlsFileError> {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(system_roots().iter().cloned());
    for cert in extra_roots(files)? {
        // `extra_roots` has checked that each one is accepted.
        let _ = roots.add(cert);
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsFileError {
            key: "tls",
            message: format!("cannot set up TLS: {e}"),
        })?
        .with_root_certificates(roots);
    match identity(files)? {
        None => Ok(builder.with_no_client_auth()),
        Some((chain, key, path)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| TlsFileError::new("client_key", &path, key_mismatch(&e))),
    }
}

/// The certificates of the CA file, each checked to be one rustls accepts as a root.
fn extra_roots(files: &TlsFiles) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let Some(path) = &files.ca_file else {
        return Ok(Vec::new());
    };
    let certs = certificates("ca_file", path)?;
    let mut probe = RootCertStore::empty();
    for (n, cert) in certs.iter().enumerate() {
        probe.add(cert.clone()).map_err(|e| {
            TlsFileError::new(
                "ca_file",
                path,
                format!("certificate {} is not a usable CA certificate ({e})", n + 1),
            )
        })?;
    }
    Ok(certs)
}

/// The client certificate chain and its key, when both are given; checked to belong together.
type Identity = (
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
    PathBuf,
);

fn identity(files: &TlsFiles) -> Result<Option<Identity>, TlsFileError> {
    let (cert, key) = match (&files.client_cert, &files.client_key) {
        (None, None) => return Ok(None),
        (Some(cert), None) => {
            return Err(TlsFileError::new(
                "client_cert",
                cert,
                "a client certificate needs its private key too (client_key)",
            ));
        }
        (None, Some(key)) => {
            return Err(TlsFileError::new(
                "client_key",
                key,
                "a private key needs its certificate too (client_cert)",
            ));
        }
        (Some(cert), Some(key)) => (cert, key),
    };
    let chain = certificates("client_cert", cert)?;
    let bytes = read("client_key", key)?;
    let der = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsFileError::new(
            "client_key",
            key,
            "holds no private key (expected a PEM block such as -----BEGIN PRIVATE KEY-----)",
        ),
        other => TlsFileError::new("client_key", key, format!("is not valid PEM ({other})")),
    })?;
    // Whether the key fits the certificate (and is a kind rustls can sign with).
    rustls::sign::CertifiedKey::from_der(chain.clone(), der.clone_key(), &provider())
        .map_err(|e| TlsFileError::new("client_key", key, key_mismatch(&e)))?;
    Ok(Some((chain, der, key.clone())))
}

fn key_mismatch(error: &TlsError) -> String {
    match error {
        TlsError::InconsistentKeys(_) => {
            "this key does not belong to the certificate of client_cert".to_string()
        }
        other => format!("cannot use this key ({other})"),
    }
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    flow_compiler::sources::read_regular_file(path, MAX_PEM_BYTES)
        .map_err(|why| TlsFileError::new(key, path, format!("cannot read it: {why}")))
}

/// The certificates of a PEM file: at least one.
fn certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let bytes = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsFileError::new(key, path, format!("is not valid PEM ({e})")))?;
    if certs.is_empty() {
        return Err(TlsFileError::new(
            key,
            path,
            "holds no certificate (expected a PEM block -----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

/// `2020-12-31T00:00:00.000Z`.
fn date(time: &rustls_pki_types::UnixTime) -> String {
    let ms = time.as_secs().saturating_mul(1000).min(i64::MAX as u64) as i64;
    crate::vm::value::format_time(ms)
}

/// A failed handshake with `host`, said so that a person knows what to change.
pub(crate) fn describe(error: &TlsError, host: &str, files: &TlsFiles) -> String {
    let certificate = |what: String| format!("the server's certificate {what}");
    match error {
        TlsError::InvalidCertificate(cert) => match cert {
            CertificateError::ExpiredContext { time, not_after } => certificate(format!(
                "has expired: it was valid until {}, and it is {} here",
                date(not_after),
                date(time)
            )),
            CertificateError::Expired => certificate("has expired".to_string()),
            CertificateError::NotValidYetContext { time, not_before } => certificate(format!(
                "is not valid yet: it is valid from {}, and it is {} here",
                date(not_before),
                date(time)
            )),
            CertificateError::NotValidYet => certificate("is not valid yet".to_string()),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                certificate(format!(
                    "is not valid for the host name `{host}` ({error}); use the name the certificate gives in the URL"
                ))
            }
            CertificateError::UnknownIssuer => {
                let trusted = match &files.ca_file {
                    Some(path) => format!("the system's roots and ca_file `{}`", path.display()),
                    None => "the system's roots; no ca_file is configured".to_string(),
                };
                certificate(format!(
                    "is not signed by a certificate authority flowrt trusts ({trusted}); set ca_file to the PEM file of the authority that signed it"
                ))
            }
            _ => certificate(format!("was refused ({error})")),
        },
        TlsError::AlertReceived(alert) => {
            let hint = match files.client_cert {
                None => "; if it requires a client certificate, set client_cert and client_key",
                Some(_) => "; it may not accept the client certificate of client_cert",
            };
            format!("the server refused the TLS handshake (alert: {alert:?}){hint}")
        }
        other => format!("TLS error: {other}"),
    }
}
