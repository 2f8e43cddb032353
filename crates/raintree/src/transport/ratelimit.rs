//! Token buckets limiting new inbound connections per remote IP.
//!
//! A handshake costs an X25519 exchange and an Ed25519 verification, so a flood of connection
//! attempts burns CPU before any identity is known. Each IP earns `rate` tokens per second up
//! to `burst`; an accepted socket without a token is closed before any crypto. Pure data: the
//! caller passes the time.

use std::collections::HashMap;
use std::net::IpAddr;

use tokio::time::Instant;

/// Per-IP handshake limits (part of `TransportConfig`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HandshakeLimit {
    /// New inbound connections per second per remote IP, on average; 0 turns the limit off.
    pub rate: f64,
    /// Connections one IP may open at once after a quiet spell.
    pub burst: u32,
    /// Most IPs tracked at once; past it, buckets that are full again are forgotten first.
    pub max_tracked: usize,
}

impl Default for HandshakeLimit {
    fn default() -> Self {
        // A LocalNet of a few hundred processes shares 127.0.0.1, and every one of them dials
        // a node at start: the burst admits that, the rate a reconnect storm after it.
        Self {
            rate: 64.0,
            burst: 512,
            max_tracked: 4096,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Every tracked IP's bucket.
#[derive(Debug)]
pub(crate) struct Limiter {
    limit: HandshakeLimit,
    buckets: HashMap<IpAddr, Bucket>,
}

impl Limiter {
    pub fn new(limit: HandshakeLimit) -> Self {
        Self {
            limit,
            buckets: HashMap::new(),
        }
    }

    /// Takes a token for a new connection from `ip`; false if it has none left.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.limit.rate <= 0.0 {
            return true;
        }
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= self.limit.max_tracked {
            self.make_room(now);
        }
        let full = Bucket {
            tokens: self.limit.burst as f64,
            at: now,
        };
        let b = self.buckets.get(&ip).copied().unwrap_or(full);
        let dt = now.saturating_duration_since(b.at).as_secs_f64();
        let tokens = (b.tokens + dt * self.limit.rate).min(self.limit.burst as f64);
        let allowed = tokens >= 1.0;
        self.buckets.insert(
            ip,
            Bucket {
                tokens: if allowed { tokens - 1.0 } else { tokens },
                at: now,
            },
        );
        allowed
    }

    /// Forgets buckets that have refilled (the same as untracked); if none has, the fullest
    /// one, so the map stays bounded whatever the number of source addresses.
    fn make_room(&mut self, now: Instant) {
        let (rate, burst) = (self.limit.rate, self.limit.burst as f64);
        let refill = |b: &Bucket| {
            (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate).min(burst)
        };
        self.buckets.retain(|_, b| refill(b) < burst);
        if self.buckets.len() < self.limit.max_tracked {
            return;
        }
        let fullest = self
            .buckets
            .iter()
            .max_by(|a, b| refill(a.1).total_cmp(&refill(b.1)))
            .map(|(ip, _)| *ip);
        if let Some(ip) = fullest {
            self.buckets.remove(&ip);
        }
    }

    /// IPs tracked now.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limit() -> HandshakeLimit {
        HandshakeLimit {
            rate: 2.0,
            burst: 3,
            max_tracked: 8,
        }
    }

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut l = Limiter::new(limit());
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert!((0..3).all(|_| l.allow(ip, t0)));
        assert!(!l.allow(ip, t0));
        // Another IP has its own bucket.
        assert!(l.allow(other, t0));
        // Refused attempts cost nothing; tokens come back at `rate`.
        assert!(!l.allow(ip, t0 + Duration::from_millis(400)));
        assert!(l.allow(ip, t0 + Duration::from_millis(500)));
        assert!(!l.allow(ip, t0 + Duration::from_millis(500)));
        // Never more than the burst after a long quiet spell.
        let later = t0 + Duration::from_secs(3600);
        assert!((0..3).all(|_| l.allow(ip, later)));
        assert!(!l.allow(ip, later));
    }

    #[test]
    fn the_map_stays_bounded_and_keeps_empty_buckets() {
        let t0 = Instant::now();
        let mut l = Limiter::new(limit());
        let flooder: IpAddr = "10.9.9.9".parse().unwrap();
        while l.allow(flooder, t0) {}
        for i in 0..1000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            l.allow(ip, t0);
            assert!(l.tracked() <= 8);
        }
        // Spoofed sources cannot launder the flooder's empty bucket away.
        assert!(!l.allow(flooder, t0));
    }

    #[test]
    fn a_zero_rate_turns_the_limit_off() {
        let t0 = Instant::now();
        let mut l = Limiter::new(HandshakeLimit {
            rate: 0.0,
            ..limit()
        });
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert!((0..100).all(|_| l.allow(ip, t0)));
        assert_eq!(l.tracked(), 0);
    }
}
