//! From `serve`'s flags to a [`Config`]: each flag in its field, host
//! names resolved, and the combinations that cannot work refused with
//! a line that says why.

use std::net::SocketAddr;

use crate::config::Config;
use crate::net;
use crate::proxy::Trust;

use super::values::{resolve, AddrArg};
use super::ServeArgs;

/// Where `serve` listens without an `--addr`.
const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8989);

impl ServeArgs {
    /// The addresses of every `--addr`, in order, each once (port 0
    /// excepted: each asks for a port of its own), host names resolved
    /// to every address they have, or 127.0.0.1:8989 without one; why
    /// not, in one line.
    pub fn addrs(&self) -> Result<Vec<SocketAddr>, String> {
        if self.addrs.is_empty() {
            return Ok(vec![DEFAULT_ADDR]);
        }
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for arg in &self.addrs {
            let resolved = match arg {
                AddrArg::Ip(addr) => vec![*addr],
                AddrArg::Name(host, port) => resolve(host, *port)?,
            };
            for addr in resolved {
                if addr.port() == 0 || !addrs.contains(&addr) {
                    addrs.push(addr);
                }
            }
        }
        let max = crate::listener::MAX_LISTENERS;
        if addrs.len() > max {
            return Err(format!(
                "--addr names {} addresses; a server can listen on at most \
                 {max}",
                addrs.len()
            ));
        }
        Ok(addrs)
    }

    /// The server configuration these flags describe, or why they
    /// describe none (a host name that does not resolve, a flag that
    /// cannot take effect beside the others). A flag not given keeps
    /// [`Config::new`]'s default.
    pub fn config(&self) -> Result<Config, String> {
        let mut config = Config::new(SocketAddr::from(([127, 0, 0, 1], 0)));
        config.addrs = self.addrs()?;
        config.mode = self.mode;
        config.model = self.model;
        config.max_connections =
            usize::try_from(self.max_connections).unwrap_or(usize::MAX);
        config.max_connections_per_ip =
            usize::try_from(self.max_connections_per_ip).unwrap_or(usize::MAX);
        if let Some(bytes) = self.max_output_memory {
            config.max_output_memory =
                usize::try_from(bytes).unwrap_or(usize::MAX);
        }
        config.send_buffer =
            self.send_buffer.and_then(|b| usize::try_from(b).ok());
        config.receive_buffer =
            self.receive_buffer.and_then(|b| usize::try_from(b).ok());
        config.idle_timeout =
            (!self.idle_timeout.is_zero()).then_some(self.idle_timeout);
        config.backlog = self.backlog.unwrap_or(config.backlog);
        if let Some(kib) = self.thread_stack_kib {
            config.thread_stack_kib =
                usize::try_from(kib).unwrap_or(usize::MAX);
        }
        config.log_rate = self.log_rate.unwrap_or(config.log_rate);
        config.log_burst = self.log_burst.unwrap_or(config.log_burst);
        config.log_total_rate =
            self.log_total_rate.unwrap_or(config.log_total_rate);
        config.stats_interval =
            (!self.stats_interval.is_zero()).then_some(self.stats_interval);
        config.drain = self.drain;
        config.workers = match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n as usize,
        };
        config.pin = self.pin;
        if config.workers > config.max_connections {
            return Err(format!(
                "--workers {} is more than --max-connections {}: every \
                 worker needs room for at least one connection",
                config.workers, config.max_connections
            ));
        }
        config.metrics_addr = self.metrics_addr;
        config.proxy = self.proxy_protocol.then(|| crate::proxy::Proxy {
            trust: self.proxy_from.clone().unwrap_or_else(Trust::loopback),
        });
        if let Some(refused) = self.refusal(&config) {
            return Err(refused);
        }
        match metrics_clash(&config) {
            Some(clash) => Err(clash),
            None => Ok(config),
        }
    }
}

/// Why `--metrics-addr` cannot be served beside the client listeners,
/// if it cannot: scrapers and clients on one address would each get
/// the other's connections.
pub(crate) fn metrics_clash(config: &Config) -> Option<String> {
    let metrics = config.metrics_addr?;
    let client = config.addrs.iter().find(|&&c| net::overlaps(metrics, c))?;
    Some(format!(
        "--metrics-addr {metrics} overlaps the client address {client}: \
         scrapers and clients need addresses of their own"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metrics_address_that_overlaps_the_clients_is_named() {
        let mut config = Config::new("127.0.0.1:8989".parse().unwrap());
        assert_eq!(metrics_clash(&config), None);
        config.metrics_addr = Some("127.0.0.1:9898".parse().unwrap());
        assert_eq!(metrics_clash(&config), None);
        config.metrics_addr = Some("0.0.0.0:8989".parse().unwrap());
        let clash = metrics_clash(&config).unwrap();
        assert!(clash.contains("0.0.0.0:8989"), "{clash}");
        assert!(clash.contains("127.0.0.1:8989"), "{clash}");
    }
}
