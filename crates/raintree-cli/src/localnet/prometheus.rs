//! `--prometheus`: a real Prometheus server scraping every node, checked against the report.

use serde::Serialize;

/// Prometheus's totals over the broadcast phase, which matched the report's.
#[derive(Debug, Serialize, Clone, Copy, Default)]
pub struct PromCheck {
    /// `raintree_deliveries_total` increase over live nodes.
    pub deliveries: u64,
    /// `raintree_transport_bytes_sent_total` increase over live nodes.
    pub bytes_sent: u64,
    /// `raintree_resends_total` increase over live nodes.
    pub resends: u64,
    /// Scrapes Prometheus made of the nodes during the run.
    pub scrapes: u64,
}
