use std::path::Path;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::StoreError;

/// `database.*` configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres://user:pass@host:port/db` or `sqlite://path/to/file.db`
    /// (also `DATABASE_URL`). Default: `sqlite://patron.db`.
    pub url: SecretString,
    pub max_connections: u32,
    pub min_connections: u32,
    pub connect_timeout_ms: u64,
    /// How long a request waits for a pooled connection before UNAVAILABLE.
    pub acquire_timeout_ms: u64,
    /// Apply pending migrations at start-up.
    pub migrate_on_start: bool,
    /// How long start-up waits for the database before giving up.
    pub startup_timeout_secs: u64,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from("sqlite://patron.db"),
            max_connections: 16,
            min_connections: 0,
            connect_timeout_ms: 5_000,
            acquire_timeout_ms: 5_000,
            migrate_on_start: true,
            startup_timeout_secs: 30,
        }
    }
}

impl DatabaseSettings {
    pub fn with_url(url: impl Into<String>) -> Self {
        Self {
            url: SecretString::from(url.into()),
            ..Self::default()
        }
    }

    pub fn is_sqlite(&self) -> bool {
        self.url.expose_secret().starts_with("sqlite:")
    }

    /// Validates the URL. SQLite files are created when missing (but their
    /// directory must exist: a typo should fail loudly, not create a tree).
    pub(crate) fn normalized_url(&self) -> Result<String, StoreError> {
        let url = self.url.expose_secret().trim();
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let rest = rest.trim_start_matches("//");
            let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
            if path.is_empty() || path == ":memory:" {
                return Ok(url.to_owned());
            }
            let parent = Path::new(path)
                .parent()
                .filter(|p| !p.as_os_str().is_empty());
            if let Some(dir) = parent
                && !dir.is_dir()
            {
                return Err(StoreError::Config(format!(
                    "database.url: directory {} of SQLite file {path} does not exist",
                    dir.display()
                )));
            }
            let query = if query.contains("mode=") {
                query.to_owned()
            } else if query.is_empty() {
                "mode=rwc".to_owned()
            } else {
                format!("{query}&mode=rwc")
            };
            return Ok(format!("sqlite://{path}?{query}"));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(url.to_owned());
        }
        Err(StoreError::Config(format!(
            "database.url: unsupported URL {:?}; use postgres://... or sqlite://...",
            redact_url(url)
        )))
    }
}

/// Replaces the password of a URL with `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/patron"),
            "postgres://app:***@db:5432/patron"
        );
        assert_eq!(redact_url("postgres://root@db/x"), "postgres://root@db/x");
        assert_eq!(redact_url("sqlite://patron.db"), "sqlite://patron.db");
    }

    #[test]
    fn sqlite_urls_create_the_file_but_not_the_directory() {
        let s = DatabaseSettings::with_url("sqlite://patron.db");
        assert_eq!(s.normalized_url().unwrap(), "sqlite://patron.db?mode=rwc");
        let s = DatabaseSettings::with_url("sqlite:///no/such/dir/patron.db");
        let err = s.normalized_url().unwrap_err().to_string();
        assert!(err.contains("/no/such/dir"), "{err}");
        let s = DatabaseSettings::with_url("mysql://x");
        assert!(s.normalized_url().is_err());
    }
}
