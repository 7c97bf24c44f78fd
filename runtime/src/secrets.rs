//! Keeping `Secret` values out of the database file in clear. The history, the audit trail and
//! outputs hold `"[redacted]"`; a checkpoint must keep the value itself (the run needs it when
//! it resumes), so it holds it sealed with ChaCha20-Poly1305 under the database's secret key.
//!
//! The key comes from `FLOW_SECRET_KEY` (64 hex digits) or, by default, from a key file next
//! to the database (`flow.db.key`, created with mode 0600 on first use). Losing the key makes
//! the secrets of waiting runs unreadable — and only those.

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

#[derive(Clone)]
pub struct SecretKey([u8; 32]);

static KEY: OnceLock<SecretKey> = OnceLock::new();

/// The process's key: the one installed with [`install`], or a random one (for a process that
/// never resumes what it wrote, such as a benchmark).
pub fn current() -> &'static SecretKey {
    KEY.get_or_init(|| SecretKey(random_bytes()))
}

/// Installs the key for this process. The first call wins.
pub fn install(key: SecretKey) {
    let _ = KEY.set(key);
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The OS random source failing is not something a workflow runtime can work around.
    if getrandom::fill(&mut bytes).is_err() {
        bytes = [0u8; N];
    }
    bytes
}

impl SecretKey {
    /// The key of the store a `--db` value names: `FLOW_SECRET_KEY`, or for SQLite the key
    /// file beside the database. A PostgreSQL store is shared by workers on many machines,
    /// which must all seal with the same key: it must come from `FLOW_SECRET_KEY`.
    pub fn for_store(spec: &str) -> Result<SecretKey, String> {
        if crate::store::postgres::is_postgres_url(spec) {
            let hex = std::env::var("FLOW_SECRET_KEY").map_err(|_| {
                "a PostgreSQL store needs FLOW_SECRET_KEY (64 hexadecimal digits, the same on every worker) to seal secrets in checkpoints; make one with `flowrt key generate` and keep it in your secret store".to_string()
            })?;
            return SecretKey::from_hex(hex.trim()).ok_or_else(|| {
                "FLOW_SECRET_KEY must be 64 hexadecimal digits (32 bytes)".to_string()
            });
        }
        let path = spec.strip_prefix("sqlite:").unwrap_or(spec);
        SecretKey::for_database(Path::new(path))
    }

    /// `FLOW_SECRET_KEY` when set, else the key file beside `database` (created if missing).
    pub fn for_database(database: &Path) -> Result<SecretKey, String> {
        if let Ok(hex) = std::env::var("FLOW_SECRET_KEY") {
            return SecretKey::from_hex(hex.trim()).ok_or_else(|| {
                "FLOW_SECRET_KEY must be 64 hexadecimal digits (32 bytes)".to_string()
            });
        }
        let path = key_path(database);
        match std::fs::read_to_string(&path) {
            Ok(text) => SecretKey::from_hex(text.trim()).ok_or_else(|| {
                format!(
                    "{} is not a secret key (64 hexadecimal digits)",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = SecretKey(random_bytes());
                write_private(&path, &key.to_hex())
                    .map_err(|e| format!("cannot create the secret key {}: {e}", path.display()))?;
                Ok(key)
            }
            Err(e) => Err(format!(
                "cannot read the secret key {}: {e}",
                path.display()
            )),
        }
    }

    pub fn from_hex(hex: &str) -> Option<SecretKey> {
        if hex.len() != 64 {
            return None;
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(SecretKey(key))
    }

    /// The key itself, for deriving the audit key from it ([`crate::audit::key`]).
    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A fresh random key, for `flowrt key generate`.
    pub fn generate() -> SecretKey {
        SecretKey(random_bytes())
    }

    pub fn to_hex(&self) -> String {
        flow_stdlib::hex::encode(&self.0)
    }

    /// A random nonce followed by the ciphertext and its tag.
    pub fn seal(&self, clear: &str) -> Vec<u8> {
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.0));
        let nonce: [u8; 12] = random_bytes();
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), clear.as_bytes())
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend(sealed);
        out
    }

    pub fn open(&self, sealed: &[u8]) -> Result<String, String> {
        if sealed.len() < 12 {
            return Err("a sealed secret is too short".to_string());
        }
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.0));
        let clear = cipher
            .decrypt(Nonce::from_slice(&sealed[..12]), &sealed[12..])
            .map_err(|_| {
                "cannot open a secret of this run: the secret key (FLOW_SECRET_KEY or the database's .key file) is not the one it was written with".to_string()
            })?;
        String::from_utf8(clear).map_err(|_| "a sealed secret is not text".to_string())
    }
}

fn key_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".key");
    PathBuf::from(name)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_their_key() {
        let key = SecretKey([7; 32]);
        let sealed = key.seal("hunter2");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(key.open(&sealed).as_deref(), Ok("hunter2"));
        assert!(SecretKey([8; 32]).open(&sealed).is_err());
        assert!(key.open(&sealed[..5]).is_err());
    }

    #[test]
    fn the_key_file_is_created_once_and_reused() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db = dir.path().join("flow.db");
        let first = SecretKey::for_database(&db).expect("creates the key");
        let second = SecretKey::for_database(&db).expect("reads the key");
        assert_eq!(first.0, second.0);
        assert!(dir.path().join("flow.db.key").exists());
    }
}
