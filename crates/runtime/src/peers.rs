//! gRPC clients of the other services. Services reach each other only
//! through these, also when they share a process (then over loopback), so
//! the monolith and split mode run the same code.
//!
//! Every call to a peer carries this process's bearer token (when
//! `auth` is on) and the current `traceparent`; with `tls.*` set it goes
//! over TLS, presenting this process's certificate.

use std::{
    collections::HashMap,
    net::SocketAddr,
    task::{Context, Poll},
    time::Duration,
};

use http::{HeaderValue, Request};
use secrecy::ExposeSecret;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tower::Service;

use crate::{
    config::{ConfigError, ServiceKind, Settings, TlsSettings},
    trace::TraceContext,
};

/// A channel to a peer that adds credentials and trace context.
#[derive(Clone, Debug)]
pub struct PeerChannel {
    channel: Channel,
    authorization: Option<HeaderValue>,
}

impl PeerChannel {
    /// `token`: sent as `authorization: Bearer <token>` on every call.
    pub fn new(channel: Channel, token: Option<&str>) -> Result<Self, ConfigError> {
        let authorization = token
            .map(|t| {
                let mut v = HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| {
                    ConfigError::new("auth token: only visible ASCII characters are allowed")
                })?;
                v.set_sensitive(true);
                Ok::<_, ConfigError>(v)
            })
            .transpose()?;
        Ok(Self {
            channel,
            authorization,
        })
    }
}

impl Service<Request<tonic::body::Body>> for PeerChannel {
    type Response = <Channel as Service<Request<tonic::body::Body>>>::Response;
    type Error = <Channel as Service<Request<tonic::body::Body>>>::Error;
    type Future = <Channel as Service<Request<tonic::body::Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<Request<tonic::body::Body>>::poll_ready(&mut self.channel, cx)
    }

    fn call(&mut self, mut req: Request<tonic::body::Body>) -> Self::Future {
        let headers = req.headers_mut();
        if let Some(auth) = &self.authorization
            && !headers.contains_key(http::header::AUTHORIZATION)
        {
            headers.insert(http::header::AUTHORIZATION, auth.clone());
        }
        if !headers.contains_key("traceparent") {
            let parent = TraceContext::current().unwrap_or_else(TraceContext::new_root);
            if let Ok(v) = HeaderValue::from_str(&parent.to_traceparent()) {
                headers.insert("traceparent", v);
            }
        }
        self.channel.call(req)
    }
}

#[derive(Clone, Debug, Default)]
pub struct Peers {
    channels: HashMap<ServiceKind, PeerChannel>,
}

impl Peers {
    /// Lazy channels to every service that is served locally (via
    /// `local_addr`) or has a configured endpoint. Nothing connects yet.
    pub fn new(
        settings: &Settings,
        local_addr: SocketAddr,
        served: &[ServiceKind],
    ) -> Result<Self, ConfigError> {
        let local_ip = if local_addr.ip().is_unspecified() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            local_addr.ip()
        };
        let scheme = if settings.tls.enabled() {
            "https"
        } else {
            "http"
        };
        let local_url = format!(
            "{scheme}://{}",
            SocketAddr::new(local_ip, local_addr.port())
        );
        let token = settings.auth.outgoing_token().map(|t| t.expose_secret());
        let tls = client_tls(&settings.tls)?;
        let mut channels = HashMap::new();
        for kind in ServiceKind::ALL {
            let local = served.contains(&kind);
            let url = if local {
                local_url.clone()
            } else if let Some(url) = settings.peers.get(kind) {
                url.to_owned()
            } else {
                continue;
            };
            let key = format!("peers.{}", kind.as_str());
            let mut endpoint = Endpoint::from_shared(url.clone())
                .map_err(|e| ConfigError::new(format!("{key}: {url:?}: {e}")))?
                .connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(30))
                .keep_alive_while_idle(true);
            if url.starts_with("https://") {
                let Some(tls) = &tls else {
                    return Err(ConfigError::new(format!(
                        "{key}: {url:?} is https but tls.cert / tls.key are not set"
                    )));
                };
                let mut config = tls.clone();
                match (&settings.tls.server_name, local) {
                    (Some(name), _) => config = config.domain_name(name.clone()),
                    (None, true) => config = config.domain_name("localhost"),
                    (None, false) => {}
                }
                endpoint = endpoint
                    .tls_config(config)
                    .map_err(|e| ConfigError::new(format!("{key}: TLS: {e}")))?;
            }
            channels.insert(kind, PeerChannel::new(endpoint.connect_lazy(), token)?);
        }
        Ok(Self { channels })
    }

    /// The channel to `kind`; `None` when it is neither local nor configured.
    pub fn channel(&self, kind: ServiceKind) -> Option<PeerChannel> {
        self.channels.get(&kind).cloned()
    }

    pub fn has(&self, kind: ServiceKind) -> bool {
        self.channels.contains_key(&kind)
    }
}

/// TLS for calls to peers: trust `tls.peer_ca` (or `tls.client_ca`) and
/// present this process's certificate. `None` without `tls.cert`.
fn client_tls(tls: &TlsSettings) -> Result<Option<ClientTlsConfig>, ConfigError> {
    let Some(identity) = identity(tls)? else {
        return Ok(None);
    };
    let mut config = ClientTlsConfig::new().identity(identity);
    match tls.peer_ca.as_ref().or(tls.client_ca.as_ref()) {
        Some(ca) => config = config.ca_certificate(Certificate::from_pem(read(ca, "tls.peer_ca")?)),
        None => {
            return Err(ConfigError::new(
                "tls.peer_ca (or tls.client_ca): needed to verify peers' certificates",
            ));
        }
    }
    Ok(Some(config))
}

/// This process's certificate and key (`tls.cert`, `tls.key`) when TLS is
/// on: its identity as a server and, towards peers, as a client.
pub(crate) fn identity(tls: &TlsSettings) -> Result<Option<Identity>, ConfigError> {
    let (Some(cert), Some(key)) = (&tls.cert, &tls.key) else {
        return Ok(None);
    };
    Ok(Some(Identity::from_pem(
        read(cert, "tls.cert")?,
        read(key, "tls.key")?,
    )))
}

pub(crate) fn read(path: &std::path::Path, key: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| ConfigError::new(format!("{key}: {}: {e}", path.display())))
}
