//! Typed settings, layered with the `config` crate:
//! built-in defaults < optional file (`--config` / `PATRON_CONFIG`) <
//! environment (`PATRON_` prefix, `__` between levels, e.g.
//! `PATRON_SERVER__ADDR`) < the conventional `DATABASE_URL` and `REDIS_URL`.
//! Invalid configuration fails at start with a message naming the key.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    str::FromStr,
};

use config::{Config, Environment, File};
use patron_cache::{CacheSettings, RedisSettings};
use patron_store::DatabaseSettings;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// All settings of a Patron process.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Settings {
    pub server: ServerSettings,
    /// Services this process serves; default all four.
    pub services: Vec<ServiceKind>,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub cache: CacheSettings,
    pub peers: PeerSettings,
    pub log: LogSettings,
    pub tracing: TracingSettings,
    pub campaign: CampaignSettings,
    /// Where `/metrics` is served (`--metrics-addr`, `PATRON_METRICS_ADDR`);
    /// unset: no metrics endpoint.
    pub metrics_addr: Option<SocketAddr>,
    pub auth: AuthSettings,
    pub tls: TlsSettings,
    pub limits: LimitSettings,
}

/// `auth.*`: who may call. With neither tokens nor JWT set, every call is
/// accepted (the embedded default). grpc.health.v1 is always open so that
/// probes work.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Bearer tokens accepted in `authorization: Bearer <token>`
    /// (`PATRON_AUTH__TOKENS`, comma-separated).
    pub tokens: Vec<SecretString>,
    /// The token this process presents when it calls its peers; default:
    /// the first of `tokens`.
    pub peer_token: Option<SecretString>,
    /// JWT verification, the alternative for meshes that mint tokens.
    pub jwt: Option<JwtSettings>,
}

impl AuthSettings {
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty() || self.jwt.is_some()
    }

    /// What to send to peers, if anything.
    pub fn outgoing_token(&self) -> Option<&SecretString> {
        self.peer_token.as_ref().or(self.tokens.first())
    }
}

/// `auth.jwt.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSettings {
    /// Required `iss` claim.
    pub issuer: String,
    /// Required `aud` claim.
    pub audience: String,
    /// `RS256` (default), `RS384`, `RS512`, `ES256`, `ES384`, `PS256`, `EdDSA` or `HS256`.
    #[serde(default = "default_jwt_algorithm")]
    pub algorithm: String,
    /// The verification key: a PEM public key for the asymmetric
    /// algorithms, the shared secret for HS256.
    pub key: SecretString,
    /// Clock skew allowed on `exp` / `nbf`, in seconds.
    #[serde(default = "default_jwt_leeway")]
    pub leeway_secs: u64,
}

fn default_jwt_algorithm() -> String {
    "RS256".into()
}

fn default_jwt_leeway() -> u64 {
    30
}

/// `tls.*`: TLS on the gRPC port, and mutual TLS when `client_ca` is set.
/// Peers are then called over TLS with the same certificate.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain of this server (also its client certificate
    /// towards peers).
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// PEM CA bundle client certificates must chain to; set: clients must
    /// present one (mTLS).
    pub client_ca: Option<PathBuf>,
    /// PEM CA bundle that peers' server certificates chain to; default:
    /// `client_ca` (one internal CA for the whole deployment).
    pub peer_ca: Option<PathBuf>,
    /// Name expected in peers' certificates; default: the host of the peer
    /// URL (`localhost` for calls to this process).
    pub server_name: Option<String>,
}

impl TlsSettings {
    pub fn enabled(&self) -> bool {
        self.cert.is_some()
    }
}

/// `limits.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// Sustained calls per second allowed to each client (its token, JWT
    /// subject or, without auth, its IP address); beyond the burst it gets
    /// RESOURCE_EXHAUSTED with RetryInfo. 0 = unlimited.
    pub rate_per_client: f64,
    /// Calls a client may make at once above its rate.
    pub burst: u32,
    /// Calls (unary and streams) in progress in this process; beyond it new
    /// calls are shed at once with UNAVAILABLE, so a retry goes to another
    /// replica instead of queueing here. 0 = unlimited.
    pub max_in_flight: u32,
    /// Population-wide calls (RecomputeScores, FitModel, the cohort, churn
    /// and product reports) running at once in this process; more wait
    /// their turn within their deadline (see `population.rs`). 0 =
    /// unlimited.
    pub population_calls: u32,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            rate_per_client: 0.0,
            burst: 100,
            max_in_flight: 2_000,
            population_calls: 2,
        }
    }
}

/// `campaign.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CampaignSettings {
    /// How often the segment watcher looks for view changes to turn into
    /// ENTERED / LEFT membership changes.
    pub watch_interval_ms: u64,
    /// How often campaign asks scoring for scores saved since its last sync.
    pub score_sync_interval_ms: u64,
    /// Keep a mirror of campaign's customer view in memory (rules over a
    /// million customers in milliseconds; about 0.5 KB per customer). When
    /// false, every rule is evaluated against the database.
    pub in_memory_view: bool,
}

impl Default for CampaignSettings {
    fn default() -> Self {
        Self {
            watch_interval_ms: 1_000,
            score_sync_interval_ms: 1_000,
            in_memory_view: true,
        }
    }
}

/// `server.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Listen address (`patron serve --addr` overrides it).
    pub addr: SocketAddr,
    /// Deadline applied to calls that carry none (a shorter client deadline wins).
    pub request_timeout_ms: u64,
    /// Largest request or response message, in bytes.
    pub max_message_bytes: usize,
    /// How long shutdown waits for in-flight calls and streams.
    pub shutdown_grace_secs: u64,
    /// HTTP/2 keepalive ping interval.
    pub keepalive_interval_secs: u64,
    /// Connections are closed (gracefully) after this age, so clients
    /// rebalance across replicas. 0 = never.
    pub max_connection_age_secs: u64,
    /// Concurrent streams per connection.
    pub max_concurrent_streams: u32,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            request_timeout_ms: 30_000,
            max_message_bytes: 16 * 1024 * 1024,
            shutdown_grace_secs: 20,
            keepalive_interval_secs: 30,
            max_connection_age_secs: 0,
            max_concurrent_streams: 256,
        }
    }
}

/// The four services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    Profile,
    Scoring,
    Feedback,
    Campaign,
}

impl ServiceKind {
    pub const ALL: [ServiceKind; 4] = [
        ServiceKind::Profile,
        ServiceKind::Scoring,
        ServiceKind::Feedback,
        ServiceKind::Campaign,
    ];

    /// The fully-qualified gRPC service name (also the health service name).
    pub fn grpc_name(self) -> &'static str {
        use patron_proto::service_names as n;
        match self {
            ServiceKind::Profile => n::PROFILE,
            ServiceKind::Scoring => n::SCORING,
            ServiceKind::Feedback => n::FEEDBACK,
            ServiceKind::Campaign => n::CAMPAIGN,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceKind::Profile => "profile",
            ServiceKind::Scoring => "scoring",
            ServiceKind::Feedback => "feedback",
            ServiceKind::Campaign => "campaign",
        }
    }

    pub fn schema(self) -> patron_store::Schema {
        match self {
            ServiceKind::Profile => patron_store::Schema::Profile,
            ServiceKind::Scoring => patron_store::Schema::Scoring,
            ServiceKind::Feedback => patron_store::Schema::Feedback,
            ServiceKind::Campaign => patron_store::Schema::Campaign,
        }
    }
}

impl FromStr for ServiceKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s.trim())
            .ok_or_else(|| {
                format!("unknown service {s:?}; expected profile, scoring, feedback or campaign")
            })
    }
}

/// `peers.*`: where to reach services this process does not serve, e.g.
/// `http://scoring:50051`. A service served by this process is reached on
/// this process's own address.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct PeerSettings {
    pub profile: Option<String>,
    pub scoring: Option<String>,
    pub feedback: Option<String>,
    pub campaign: Option<String>,
}

impl PeerSettings {
    pub fn get(&self, kind: ServiceKind) -> Option<&str> {
        match kind {
            ServiceKind::Profile => self.profile.as_deref(),
            ServiceKind::Scoring => self.scoring.as_deref(),
            ServiceKind::Feedback => self.feedback.as_deref(),
            ServiceKind::Campaign => self.campaign.as_deref(),
        }
    }
}

/// `log.*`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `auto` (pretty on a terminal, JSON otherwise), `json` or `pretty`.
    pub format: LogFormat,
    /// tracing-subscriber filter; `RUST_LOG` overrides it.
    pub filter: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Auto,
            filter: "info,sqlx=warn,sea_orm=warn,h2=warn,tower=warn".to_owned(),
        }
    }
}

/// `tracing.*`: span export.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracingSettings {
    /// OTLP/gRPC collector, e.g. `http://otel-collector:4317`; unset: no export.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans; default `patron-<services>`.
    pub service_name: Option<String>,
    /// Fraction of new traces recorded (a caller's sampling decision is followed).
    pub sample_ratio: f64,
}

impl Default for TracingSettings {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: None,
            sample_ratio: 1.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Auto,
    Json,
    Pretty,
}

/// Configuration errors; the message names the offending key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl ConfigError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// Environment the loader reads. Passed in (rather than read globally) so
/// tests can load configuration without touching the process environment.
pub type EnvMap = std::collections::HashMap<String, String>;

impl Settings {
    /// Loads settings from the process environment and an optional file.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, std::env::vars().collect())
    }

    /// Loads settings from the given environment and an optional file.
    pub fn load_from(file: Option<&Path>, env: EnvMap) -> Result<Self, ConfigError> {
        let mut builder = Config::builder();
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| env.get("PATRON_CONFIG").map(Into::into));
        if let Some(path) = &file {
            if !path.is_file() {
                return Err(ConfigError(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            builder = builder.add_source(File::from(path.as_path()).required(true));
        }
        let patron_env: EnvMap = env
            .iter()
            .filter(|(k, _)| k.starts_with("PATRON_") && k.as_str() != "PATRON_CONFIG")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        builder = builder.add_source(
            Environment::with_prefix("PATRON")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("services")
                .with_list_parse_key("auth.tokens")
                .source(Some(patron_env)),
        );
        let config = builder.build().map_err(|e| ConfigError(e.to_string()))?;
        let mut settings: Settings = config
            .try_deserialize()
            .map_err(|e| ConfigError(e.to_string()))?;
        if let Some(url) = env.get("DATABASE_URL").filter(|u| !u.is_empty()) {
            settings.database.url = SecretString::from(url.clone());
        }
        if let Some(url) = env.get("REDIS_URL").filter(|u| !u.is_empty()) {
            settings.redis.url = Some(SecretString::from(url.clone()));
        }
        settings.validate()?;
        Ok(settings)
    }

    /// Cross-field checks `serde` cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.server.max_message_bytes < 1024 {
            return Err(ConfigError(
                "server.max_message_bytes must be at least 1024".into(),
            ));
        }
        if self.server.request_timeout_ms == 0 {
            return Err(ConfigError(
                "server.request_timeout_ms must be positive".into(),
            ));
        }
        if self.campaign.watch_interval_ms == 0 || self.campaign.score_sync_interval_ms == 0 {
            return Err(ConfigError(
                "campaign.watch_interval_ms and campaign.score_sync_interval_ms must be positive"
                    .into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.cache.ttl_jitter) {
            return Err(ConfigError(
                "cache.ttl_jitter must be between 0 and 1".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.tracing.sample_ratio) {
            return Err(ConfigError(
                "tracing.sample_ratio must be between 0 and 1".into(),
            ));
        }
        if let Some(url) = &self.tracing.otlp_endpoint
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError(format!(
                "tracing.otlp_endpoint: {url:?} must be an http:// or https:// URL"
            )));
        }
        if self.limits.rate_per_client < 0.0 || !self.limits.rate_per_client.is_finite() {
            return Err(ConfigError(
                "limits.rate_per_client must be a finite number >= 0".into(),
            ));
        }
        if self.limits.rate_per_client > 0.0 && self.limits.burst == 0 {
            return Err(ConfigError(
                "limits.burst must be at least 1 when limits.rate_per_client is set".into(),
            ));
        }
        if self
            .auth
            .tokens
            .iter()
            .any(|t| t.expose_secret().trim().is_empty())
        {
            return Err(ConfigError("auth.tokens: a token is empty".into()));
        }
        match (&self.tls.cert, &self.tls.key) {
            (Some(_), None) => return Err(ConfigError("tls.key is required with tls.cert".into())),
            (None, Some(_)) => return Err(ConfigError("tls.cert is required with tls.key".into())),
            _ => {}
        }
        if !self.tls.enabled() && (self.tls.client_ca.is_some() || self.tls.peer_ca.is_some()) {
            return Err(ConfigError(
                "tls.client_ca / tls.peer_ca need tls.cert and tls.key".into(),
            ));
        }
        for (key, path) in [
            ("tls.cert", &self.tls.cert),
            ("tls.key", &self.tls.key),
            ("tls.client_ca", &self.tls.client_ca),
            ("tls.peer_ca", &self.tls.peer_ca),
        ] {
            if let Some(path) = path
                && !path.is_file()
            {
                return Err(ConfigError(format!(
                    "{key}: {} is not a readable file",
                    path.display()
                )));
            }
        }
        for (key, url) in [
            ("peers.profile", &self.peers.profile),
            ("peers.scoring", &self.peers.scoring),
            ("peers.feedback", &self.peers.feedback),
            ("peers.campaign", &self.peers.campaign),
        ] {
            if let Some(url) = url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return Err(ConfigError(format!(
                    "{key}: {url:?} must be an http:// or https:// URL"
                )));
            }
        }
        Ok(())
    }

    /// `service.name` of exported spans: `patron-<service>` for one
    /// service, `patron` for several.
    pub fn service_name(&self) -> String {
        match self.effective_services().as_slice() {
            [one] => format!("patron-{}", one.as_str()),
            _ => "patron".to_owned(),
        }
    }

    /// The services to serve (all when none are configured).
    pub fn effective_services(&self) -> Vec<ServiceKind> {
        if self.services.is_empty() {
            ServiceKind::ALL.to_vec()
        } else {
            let mut out = Vec::new();
            for s in &self.services {
                if !out.contains(s) {
                    out.push(*s);
                }
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> EnvMap {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_serve_everything_on_sqlite() {
        let s = Settings::load_from(None, EnvMap::new()).unwrap();
        assert_eq!(s.server.addr.to_string(), "127.0.0.1:50051");
        assert_eq!(s.effective_services().len(), 4);
        assert_eq!(s.database.url.expose_secret(), "sqlite://patron.db");
        assert!(s.redis.url.is_none());
    }

    #[test]
    fn file_then_env_then_conventional_urls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("patron.toml");
        std::fs::write(
            &path,
            "services = [\"scoring\"]\n[server]\naddr = \"0.0.0.0:6000\"\nrequest_timeout_ms = 5\n[database]\nurl = \"sqlite://file.db\"\n",
        )
        .unwrap();
        let s = Settings::load_from(
            Some(&path),
            env(&[
                ("PATRON_SERVER__REQUEST_TIMEOUT_MS", "7"),
                ("PATRON_SERVICES", "profile,campaign"),
                ("DATABASE_URL", "postgres://root@localhost/patron"),
                ("REDIS_URL", "redis://127.0.0.1:6379"),
            ]),
        )
        .unwrap();
        assert_eq!(s.server.addr.to_string(), "0.0.0.0:6000");
        assert_eq!(s.server.request_timeout_ms, 7);
        assert_eq!(
            s.services,
            vec![ServiceKind::Profile, ServiceKind::Campaign]
        );
        assert_eq!(
            s.database.url.expose_secret(),
            "postgres://root@localhost/patron"
        );
        assert!(s.redis.url.is_some());
    }

    #[test]
    fn invalid_values_name_the_key() {
        let err = Settings::load_from(None, env(&[("PATRON_SERVER__ADDR", "not-an-address")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.addr"), "{err}");

        let err = Settings::load_from(None, env(&[("PATRON_DATABASE__MAX_CONNECTIONS", "many")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("database.max_connections"), "{err}");

        let err = Settings::load_from(None, env(&[("PATRON_SERVICES", "profile,billing")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("billing"), "{err}");

        let err = Settings::load_from(None, env(&[("PATRON_PEERS__SCORING", "scoring:50051")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("peers.scoring"), "{err}");

        let err = Settings::load_from(None, env(&[("PATRON_DATABASE__URLL", "x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("urll"), "{err}");
    }

    #[test]
    fn security_settings_from_the_environment() {
        let s = Settings::load_from(
            None,
            env(&[
                ("PATRON_AUTH__TOKENS", "alpha,beta"),
                ("PATRON_METRICS_ADDR", "127.0.0.1:9100"),
                ("PATRON_LIMITS__RATE_PER_CLIENT", "50"),
            ]),
        )
        .unwrap();
        let tokens: Vec<_> = s.auth.tokens.iter().map(|t| t.expose_secret()).collect();
        assert_eq!(tokens, ["alpha", "beta"]);
        assert_eq!(s.auth.outgoing_token().unwrap().expose_secret(), "alpha");
        assert_eq!(s.metrics_addr.unwrap().to_string(), "127.0.0.1:9100");
        assert_eq!(s.limits.rate_per_client, 50.0);
        // Secrets never reach Debug output (and so never the logs).
        assert!(!format!("{s:?}").contains("alpha"));

        let err = Settings::load_from(None, env(&[("PATRON_TLS__CERT", "/nonexistent.pem")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("tls.key"), "{err}");
        let err = Settings::load_from(
            None,
            env(&[
                ("PATRON_TLS__CERT", "/nonexistent.pem"),
                ("PATRON_TLS__KEY", "/nonexistent.key"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("tls.cert"), "{err}");
    }

    #[test]
    fn missing_config_file_is_an_error() {
        let err = Settings::load_from(Some(Path::new("/nonexistent/patron.toml")), EnvMap::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/patron.toml"), "{err}");
    }
}
