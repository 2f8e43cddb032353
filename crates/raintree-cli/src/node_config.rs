//! The node's TOML config file: every option, its default, and conversion to a `NodeConfig`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use raintree::node::{NodeConfig, PeerEntry};
use raintree::transport::{Identity, TransportConfig};
use raintree_proto::broadcast::{Config as ProtocolConfig, Redundancy};
use raintree_proto::wire::Strategy;
use raintree_proto::Address;
use serde::{Deserialize, Serialize};

/// A peer as written in the config file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's address: 40 hex characters.
    pub address: Address,
    /// Where it listens, `ip:port`.
    pub addr: SocketAddr,
}

/// The `raintree node --config FILE` file. Every field but `key` has a default.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// Ed25519 secret key, 64 hex characters (from `raintree keygen`). Required.
    pub key: String,
    /// TCP listen address for peers. Default `127.0.0.1:7000`.
    pub listen: SocketAddr,
    /// Admin HTTP address (`/metrics`, `/health`, `/broadcast`); loopback only. Default `127.0.0.1:0`.
    pub admin: SocketAddr,
    /// Accept peers outside the peer list. Default false.
    pub open: bool,
    /// `reference` or `exact`; every node of a network must agree. Default `exact`.
    pub strategy: Strategy,
    /// `off`, `left`, `right` or `both`. Default `off`.
    pub redundancy: Redundancy,
    /// Expect ACKs for tree sends and resend on timeout. Default true.
    pub acks: bool,
    /// ACK deadline in milliseconds before any round trip is measured. Default 500.
    pub ack_timeout_ms: u64,
    /// Shortest adaptive ACK deadline in milliseconds. Default 200.
    pub min_ack_timeout_ms: u64,
    /// Longest adaptive ACK deadline in milliseconds. Default 2000.
    pub max_ack_timeout_ms: u64,
    /// Seconds a failed peer is passed over unless it answers a probe first. Default 300.
    pub suspicion_ttl_s: u64,
    /// Run the IGYW clean-up chain. Default false.
    pub cleanup: bool,
    /// Delay before offering IGYW, in milliseconds. Default 1000.
    pub cleanup_delay_ms: u64,
    /// IGYW answer deadline in milliseconds. Default 500.
    pub igyw_timeout_ms: u64,
    /// Silent neighbours skipped before the chain gives up. Default 8.
    pub igyw_skip_limit: u32,
    /// HAVE answers in a row the chain passes before it stops (docs/HOSTILE.md). Default 4.
    pub igyw_have_limit: u32,
    /// Message ids remembered for dedup. Default 65536.
    pub seen_capacity: usize,
    /// How long a message id is remembered, in seconds. Default 120.
    pub seen_ttl_s: u64,
    /// Most ids one origin (or all unlisted origins together) may hold in the seen-set once
    /// it is half full; past it the origin's new ids are refused. Default 16384.
    pub origin_share: usize,
    /// Bytes of messages kept for resends, clean-up and owed peers (payload plus 1,536
    /// each); past it, messages from peers are forwarded once, untracked. Default 33554432.
    pub held_bytes: usize,
    /// Bytes of deliveries the application has not read before the node stops reading the
    /// network. Default 16777216 (16 MiB).
    pub delivery_buffer_bytes: usize,
    /// Largest payload in bytes. Default 4194304 (4 MiB).
    pub max_payload_bytes: usize,
    /// Inbound connection limit. Default 125.
    pub max_inbound: usize,
    /// Outbound connection limit. Default 125.
    pub max_outbound: usize,
    /// Handshake deadline in milliseconds. Default 5000.
    pub handshake_timeout_ms: u64,
    /// Idle connections close after this many seconds. Default 300.
    pub idle_timeout_s: u64,
    /// Per-peer send queue bound in bytes. Default 16777216 (16 MiB).
    pub queue_bytes: usize,
    /// Send queue bound in bytes for all peers together. Default 33554432 (32 MiB).
    pub total_queue_bytes: usize,
    /// Payload bytes of received messages waiting for the node's driver. Default 16777216.
    pub event_bytes: usize,
    /// New inbound connections per second per remote IP, on average; 0 turns the limit off.
    /// Default 64.
    pub handshake_rate_per_ip: f64,
    /// New inbound connections one IP may open at once. Default 512.
    pub handshake_burst_per_ip: u32,
    /// Misbehaviour score at which a peer is disconnected and banned; 0 turns bans off.
    /// Default 100.
    pub ban_threshold: f64,
    /// Seconds a ban lasts. Default 600.
    pub ban_duration_s: u64,
    /// Seconds for a misbehaviour score to halve. Default 60.
    pub score_half_life_s: u64,
    /// Seconds a graceful shutdown may spend draining queues. Default 5.
    pub shutdown_deadline_s: u64,
    /// The peer list; self may be listed.
    pub peers: Vec<PeerConfig>,
}

impl Default for FileConfig {
    fn default() -> Self {
        // Protocol defaults come from the engine so the file and the library never disagree.
        let p = ProtocolConfig::default();
        let t = TransportConfig::new(SocketAddr::from(([127, 0, 0, 1], 7000)));
        let node = NodeConfig::new(Identity::from_secret_bytes(&[0; 32]), t.listen, Vec::new());
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            key: String::new(),
            listen: t.listen,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            open: false,
            strategy: p.strategy,
            redundancy: p.redundancy,
            acks: p.acks,
            ack_timeout_ms: ms(p.ack_timeout),
            min_ack_timeout_ms: ms(p.min_ack_timeout),
            max_ack_timeout_ms: ms(p.max_ack_timeout),
            suspicion_ttl_s: p.suspicion_ttl.as_secs(),
            cleanup: p.cleanup,
            cleanup_delay_ms: ms(p.cleanup_delay),
            igyw_timeout_ms: ms(p.igyw_timeout),
            igyw_skip_limit: p.igyw_skip_limit,
            igyw_have_limit: p.igyw_have_limit,
            seen_capacity: p.seen_capacity,
            seen_ttl_s: p.seen_ttl.as_secs(),
            origin_share: p.origin_share,
            held_bytes: p.held_bytes,
            delivery_buffer_bytes: node.delivery_buffer_bytes,
            max_payload_bytes: p.max_payload,
            max_inbound: t.max_inbound,
            max_outbound: t.max_outbound,
            handshake_timeout_ms: ms(t.handshake_timeout),
            idle_timeout_s: t.idle_timeout.as_secs(),
            queue_bytes: t.queue_bytes,
            total_queue_bytes: t.total_queue_bytes,
            event_bytes: t.event_bytes,
            handshake_rate_per_ip: t.handshake_limit.rate,
            handshake_burst_per_ip: t.handshake_limit.burst,
            ban_threshold: t.score.ban_threshold,
            ban_duration_s: t.score.ban_duration.as_secs(),
            score_half_life_s: t.score.half_life.as_secs(),
            shutdown_deadline_s: 5,
            peers: Vec::new(),
        }
    }
}

/// Why a config file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// TOML syntax or a field of the wrong type, unknown or missing (the message names it).
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the field.
        source: toml::de::Error,
    },
    /// A field parsed but its value is unusable.
    #[error("field `{field}`: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl FileConfig {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.to_owned(),
                source,
            },
            other => other,
        })
    }

    /// Parses and checks config text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let cfg: FileConfig = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: PathBuf::new(),
            source,
        })?;
        cfg.identity()?;
        let positive = [
            ("ack_timeout_ms", cfg.ack_timeout_ms),
            ("min_ack_timeout_ms", cfg.min_ack_timeout_ms),
            ("max_ack_timeout_ms", cfg.max_ack_timeout_ms),
            ("suspicion_ttl_s", cfg.suspicion_ttl_s),
            ("igyw_timeout_ms", cfg.igyw_timeout_ms),
            ("handshake_timeout_ms", cfg.handshake_timeout_ms),
            ("idle_timeout_s", cfg.idle_timeout_s),
            ("seen_ttl_s", cfg.seen_ttl_s),
            ("max_inbound", cfg.max_inbound as u64),
            ("max_outbound", cfg.max_outbound as u64),
            ("queue_bytes", cfg.queue_bytes as u64),
            ("total_queue_bytes", cfg.total_queue_bytes as u64),
            ("event_bytes", cfg.event_bytes as u64),
            ("held_bytes", cfg.held_bytes as u64),
            ("origin_share", cfg.origin_share as u64),
            ("delivery_buffer_bytes", cfg.delivery_buffer_bytes as u64),
            ("ban_duration_s", cfg.ban_duration_s),
            ("score_half_life_s", cfg.score_half_life_s),
            ("seen_capacity", cfg.seen_capacity as u64),
            ("max_payload_bytes", cfg.max_payload_bytes as u64),
        ];
        if let Some((field, _)) = positive.into_iter().find(|&(_, v)| v == 0) {
            return Err(ConfigError::Invalid {
                field,
                reason: "must be greater than 0".into(),
            });
        }
        for (field, v) in [
            ("ban_threshold", cfg.ban_threshold),
            ("handshake_rate_per_ip", cfg.handshake_rate_per_ip),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(ConfigError::Invalid {
                    field,
                    reason: "must be a finite number >= 0".into(),
                });
            }
        }
        if cfg.handshake_rate_per_ip > 0.0 && cfg.handshake_burst_per_ip == 0 {
            return Err(ConfigError::Invalid {
                field: "handshake_burst_per_ip",
                reason: "must be greater than 0 while handshake_rate_per_ip is".into(),
            });
        }
        if cfg.min_ack_timeout_ms > cfg.max_ack_timeout_ms {
            return Err(ConfigError::Invalid {
                field: "min_ack_timeout_ms",
                reason: format!(
                    "must not exceed max_ack_timeout_ms ({})",
                    cfg.max_ack_timeout_ms
                ),
            });
        }
        Ok(cfg)
    }

    /// The node identity from `key`.
    pub fn identity(&self) -> Result<Identity, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            field: "key",
            reason,
        };
        if self.key.is_empty() {
            return Err(invalid("missing: run `raintree keygen` for one".into()));
        }
        let mut secret = [0u8; 32];
        hex::decode_to_slice(self.key.trim(), &mut secret)
            .map_err(|e| invalid(format!("expected 64 hex characters: {e}")))?;
        Ok(Identity::from_secret_bytes(&secret))
    }

    /// The protocol settings.
    pub fn protocol(&self) -> ProtocolConfig {
        ProtocolConfig {
            strategy: self.strategy,
            acks: self.acks,
            ack_timeout: Duration::from_millis(self.ack_timeout_ms),
            min_ack_timeout: Duration::from_millis(self.min_ack_timeout_ms),
            max_ack_timeout: Duration::from_millis(self.max_ack_timeout_ms),
            suspicion_ttl: Duration::from_secs(self.suspicion_ttl_s),
            redundancy: self.redundancy,
            cleanup: self.cleanup,
            igyw_timeout: Duration::from_millis(self.igyw_timeout_ms),
            igyw_skip_limit: self.igyw_skip_limit,
            igyw_have_limit: self.igyw_have_limit,
            cleanup_delay: Duration::from_millis(self.cleanup_delay_ms),
            seen_capacity: self.seen_capacity,
            seen_ttl: Duration::from_secs(self.seen_ttl_s),
            origin_share: self.origin_share,
            held_bytes: self.held_bytes,
            max_payload: self.max_payload_bytes,
            ..ProtocolConfig::default()
        }
    }

    /// The library config for `raintree::node::Node::start`.
    pub fn node_config(&self) -> Result<NodeConfig, ConfigError> {
        let peers = self
            .peers
            .iter()
            .map(|p| PeerEntry {
                address: p.address,
                addr: p.addr,
            })
            .collect();
        let mut cfg = NodeConfig::new(self.identity()?, self.listen, peers);
        cfg.protocol = self.protocol();
        cfg.delivery_buffer_bytes = self.delivery_buffer_bytes;
        let t = &mut cfg.transport;
        t.open = self.open;
        t.max_inbound = self.max_inbound;
        t.max_outbound = self.max_outbound;
        t.handshake_timeout = Duration::from_millis(self.handshake_timeout_ms);
        t.idle_timeout = Duration::from_secs(self.idle_timeout_s);
        t.queue_bytes = self.queue_bytes;
        t.max_payload = self.max_payload_bytes;
        t.total_queue_bytes = self.total_queue_bytes;
        t.event_bytes = self.event_bytes;
        t.handshake_limit.rate = self.handshake_rate_per_ip;
        t.handshake_limit.burst = self.handshake_burst_per_ip;
        t.score.ban_threshold = self.ban_threshold;
        t.score.ban_duration = Duration::from_secs(self.ban_duration_s);
        t.score.half_life = Duration::from_secs(self.score_half_life_s);
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        "11".repeat(32)
    }

    #[test]
    fn minimal_config_takes_defaults() {
        let cfg = FileConfig::parse(&format!("key = \"{}\"\n", key())).unwrap();
        assert_eq!(cfg.max_inbound, 125);
        assert_eq!(cfg.strategy, Strategy::Exact);
        assert!(cfg.peers.is_empty());
        let node = cfg.node_config().unwrap();
        assert_eq!(node.transport.max_outbound, 125);
    }

    /// docs/NODE.md documents every field with its default; hold it to the code.
    #[test]
    fn documented_config_block_lists_every_field_with_its_default() {
        let doc = include_str!("../../../docs/NODE.md");
        let start = doc
            .find("```toml\nkey = ")
            .expect("docs/NODE.md has the config block")
            + 8;
        let block = &doc[start..start + doc[start..].find("```").unwrap()];
        let block = block
            .replace("<64 hex characters from raintree keygen>", &key())
            .replace("<40 hex characters>", &"ab".repeat(20));
        let documented = FileConfig::parse(&block).expect("documented config parses");
        let mut defaults = FileConfig {
            key: key(),
            ..FileConfig::default()
        };
        defaults.peers = documented.peers.clone();
        assert_eq!(
            toml::to_string(&documented).unwrap(),
            toml::to_string(&defaults).unwrap()
        );
        let fields = toml::Value::try_from(&defaults).unwrap();
        for name in fields.as_table().unwrap().keys() {
            assert!(
                block.contains(&format!("{name} = ")) || name == "peers",
                "{name} undocumented"
            );
        }
    }

    #[test]
    fn errors_name_the_field() {
        let unknown = FileConfig::parse(&format!("key = \"{}\"\nspeed = 3\n", key()))
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("speed"), "{unknown}");
        let wrong_type = FileConfig::parse(&format!("key = \"{}\"\nacks = 3\n", key()))
            .unwrap_err()
            .to_string();
        assert!(wrong_type.contains("acks"), "{wrong_type}");
        let zero = FileConfig::parse(&format!("key = \"{}\"\nack_timeout_ms = 0\n", key()))
            .unwrap_err()
            .to_string();
        assert!(zero.contains("ack_timeout_ms"), "{zero}");
        let bad_key = FileConfig::parse("key = \"zz\"\n").unwrap_err().to_string();
        assert!(bad_key.contains("`key`"), "{bad_key}");
        let bad_peer = FileConfig::parse(&format!(
            "key = \"{}\"\n[[peers]]\naddress = \"abc\"\naddr = \"127.0.0.1:1\"\n",
            key()
        ))
        .unwrap_err()
        .to_string();
        assert!(bad_peer.contains("address"), "{bad_peer}");
    }
}
