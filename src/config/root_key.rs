//! The root Vultr API key: from `VULTR_API_KEY_FILE` (preferred) or
//! `VULTR_API_KEY`, into a `SecretString` at once.

use secrecy::SecretString;

use super::ServeArgs;

/// Why the root key could not be loaded; each message names the variable.
#[derive(Debug, thiserror::Error)]
pub enum RootKeyError {
    #[error(
        "VULTR_API_KEY is not set (nor VULTR_API_KEY_FILE): keydesk needs the root Vultr API key"
    )]
    Missing,
    #[error("VULTR_API_KEY_FILE {path}: {source}")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    #[error("VULTR_API_KEY_FILE {0} is empty")]
    EmptyFile(String),
    #[error("VULTR_API_KEY is empty")]
    Empty,
    #[error(
        "VULTR_API_KEY and VULTR_API_KEY_FILE are both set: keep one (the file, so the key is not in the environment)"
    )]
    Both,
}

impl ServeArgs {
    /// The root key from the file (preferred) or the variable.
    pub fn root_key(&self) -> Result<SecretString, RootKeyError> {
        if self.vultr_api_key_file.is_some() && self.vultr_api_key.is_some() {
            return Err(RootKeyError::Both);
        }
        if let Some(path) = &self.vultr_api_key_file {
            let shown = path.display().to_string();
            let raw = std::fs::read_to_string(path).map_err(|source| RootKeyError::Unreadable {
                path: shown.clone(),
                source,
            })?;
            warn_if_world_readable(path);
            let key = raw.trim();
            if key.is_empty() {
                return Err(RootKeyError::EmptyFile(shown));
            }
            return Ok(SecretString::from(key.to_string()));
        }
        match self.vultr_api_key.as_deref().map(str::trim) {
            None => Err(RootKeyError::Missing),
            Some("") => Err(RootKeyError::Empty),
            Some(k) => Ok(SecretString::from(k.to_string())),
        }
    }
}

#[cfg(unix)]
fn warn_if_world_readable(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o004 != 0
    {
        tracing::warn!(path = %path.display(), "VULTR_API_KEY_FILE is world-readable; chmod 600 it");
    }
}

#[cfg(not(unix))]
fn warn_if_world_readable(_: &std::path::Path) {}
