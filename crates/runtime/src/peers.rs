//! gRPC clients of the other services. Services reach each other only
//! through these, also when they share a process (then over loopback), so
//! the monolith and split mode run the same code.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use tonic::transport::{Channel, Endpoint};

use crate::config::{ConfigError, ServiceKind, Settings};

#[derive(Clone, Debug, Default)]
pub struct Peers {
    channels: HashMap<ServiceKind, Channel>,
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
        let local_url = format!("http://{}", SocketAddr::new(local_ip, local_addr.port()));
        let mut channels = HashMap::new();
        for kind in ServiceKind::ALL {
            let url = if served.contains(&kind) {
                local_url.clone()
            } else if let Some(url) = settings.peers.get(kind) {
                url.to_owned()
            } else {
                continue;
            };
            let endpoint = Endpoint::from_shared(url.clone())
                .map_err(|e| ConfigError::new(format!("peers.{}: {url:?}: {e}", kind.as_str())))?
                .connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(30))
                .keep_alive_while_idle(true);
            channels.insert(kind, endpoint.connect_lazy());
        }
        Ok(Self { channels })
    }

    /// The channel to `kind`; `None` when it is neither local nor configured.
    pub fn channel(&self, kind: ServiceKind) -> Option<Channel> {
        self.channels.get(&kind).cloned()
    }

    pub fn has(&self, kind: ServiceKind) -> bool {
        self.channels.contains_key(&kind)
    }
}
