//! Every metric the node exports, defined here and nowhere else: names `cx_<subsystem>_<what>_<unit>`,
//! in the Prometheus text format (the `prometheus` crate encodes it). Two kinds: counters and
//! histograms updated where things happen (`Metrics`, cloned into the publisher and the journal),
//! and gauges and counters read at each scrape from the sync status and the transport's counters
//! (`render`), so they cannot drift from what `cxnode status` shows.

use super::pb;
use super::transport::TransportStats;
use crate::record::Region;
use prometheus::{Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

/// Bucket bounds of the fsync latency histogram (seconds): 50 µs to ~3.3 s, doubling.
pub const FSYNC_BUCKETS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_2, 0.000_4, 0.000_8, 0.001_6, 0.003_2, 0.006_4, 0.012_8, 0.025_6, 0.051_2, 0.102_4,
    0.204_8, 0.409_6, 0.819_2, 1.638_4, 3.276_8,
];

/// The content type of `/metrics`.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The metrics updated as things happen.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Operations of publish requests by outcome (appended, duplicate).
    pub operations: IntCounterVec,
    /// Operations refused, by the reason code publishers get.
    pub rejections: IntCounterVec,
    /// Time of each journal fsync (group commit).
    pub fsync: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("metric names and labels are valid constants")
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    GaugeVec::new(Opts::new(name, help), labels).expect("metric names and labels are valid constants")
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let operations = counter_vec(
            "cx_publish_operations_total",
            "Operations of publish requests committed to the journal, by outcome (appended, duplicate).",
            &["outcome"],
        );
        let rejections = counter_vec(
            "cx_publish_rejections_total",
            "Operations of publish requests refused, by reason code.",
            &["reason"],
        );
        let fsync = Histogram::with_opts(
            HistogramOpts::new(
                "cx_journal_fsync_duration_seconds",
                "Time of each journal fsync (one per group commit).",
            )
            .buckets(FSYNC_BUCKETS.to_vec()),
        )
        .expect("fsync histogram options are valid constants");
        for m in [
            Box::new(operations.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(rejections.clone()),
            Box::new(fsync.clone()),
        ] {
            registry.register(m).expect("each live metric is registered once");
        }
        Metrics {
            registry,
            operations,
            rejections,
            fsync,
        }
    }

    /// The text exposition of every metric: the live ones, then those read from `status` and
    /// `transport` now. `now` is unix seconds (expiry is exported as seconds left).
    pub fn render(&self, status: &pb::SyncStatusResponse, transport: &TransportStats, now: i64) -> String {
        let mut families = self.registry.gather();
        families.extend(scraped(status, transport, now).gather());
        let mut out = Vec::new();
        // Encoding text into a Vec cannot fail for families gathered from valid metrics.
        let _ = prometheus::TextEncoder::new().encode(&families, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

fn region(code: u32) -> String {
    Region::code_text(code)
}

fn int_gauge(registry: &Registry, name: &str, help: &str, v: i64) {
    let g = IntGauge::new(name, help).expect("metric names are valid constants");
    g.set(v);
    let _ = registry.register(Box::new(g));
}

fn float_gauge(registry: &Registry, name: &str, help: &str, v: f64) {
    let g = Gauge::new(name, help).expect("metric names are valid constants");
    g.set(v);
    let _ = registry.register(Box::new(g));
}

/// A registry of the values read at this scrape.
fn scraped(s: &pb::SyncStatusResponse, t: &TransportStats, now: i64) -> Registry {
    let r = Registry::new();
    int_gauge(
        &r,
        "cx_journal_size_bytes",
        "Durable size of the journal.",
        s.journal_bytes as i64,
    );

    let received = counter_vec(
        "cx_sync_received_entries_total",
        "Entries received from each peer, per origin, since start.",
        &["peer", "origin"],
    );
    let received_bytes = counter_vec(
        "cx_sync_received_bytes_total",
        "Bytes of entries received from each peer, per origin, since start.",
        &["peer", "origin"],
    );
    let duplicates = counter_vec(
        "cx_sync_duplicate_entries_total",
        "Entries received from each peer that this node held already, per origin.",
        &["peer", "origin"],
    );
    let connected = gauge_vec(
        "cx_sync_peer_connected",
        "1 while the link to the peer is up, 0 otherwise.",
        &["peer"],
    );
    let errors = counter_vec(
        "cx_sync_peer_errors_total",
        "Failures of the link to each peer since start.",
        &["peer"],
    );
    for p in &s.peers {
        connected
            .with_label_values(&[&p.address])
            .set(f64::from(u8::from(p.connected)));
        errors.with_label_values(&[&p.address]).inc_by(p.errors_total);
        for o in &p.origins {
            let labels = [p.address.as_str(), &region(o.origin)];
            received.with_label_values(&labels).inc_by(o.entries_received);
            received_bytes.with_label_values(&labels).inc_by(o.bytes_received);
            duplicates.with_label_values(&labels).inc_by(o.duplicates_dropped);
        }
    }
    let head = gauge_vec(
        "cx_sync_head_seq",
        "This node's head (seq) of each origin's log.",
        &["origin"],
    );
    let lag = gauge_vec(
        "cx_sync_lag_entries",
        "Entries of each origin a peer holds and this node does not yet.",
        &["origin"],
    );
    let lag_s = gauge_vec(
        "cx_sync_lag_seconds",
        "How long this node has been behind a peer on each origin (0 when not behind).",
        &["origin"],
    );
    let stalled = gauge_vec(
        "cx_sync_origin_stalled",
        "1 when this node is behind on the origin and has made no progress for the stall window.",
        &["origin"],
    );
    let forked = gauge_vec(
        "cx_sync_origin_forked",
        "1 when two signed, conflicting heads of the origin are held (fork evidence).",
        &["origin"],
    );
    for o in &s.origins {
        let l = [region(o.origin)];
        let l = [l[0].as_str()];
        head.with_label_values(&l).set(o.local_head as f64);
        lag.with_label_values(&l).set(o.lag_entries as f64);
        lag_s.with_label_values(&l).set(o.lag_seconds);
        stalled.with_label_values(&l).set(f64::from(u8::from(o.stalled)));
        forked.with_label_values(&l).set(f64::from(u8::from(o.forked)));
    }
    let index = s.index.clone().unwrap_or_default();
    int_gauge(
        &r,
        "cx_index_entries",
        "Journal entries in the merged view.",
        index.indexed_entries as i64,
    );
    int_gauge(
        &r,
        "cx_index_lag_entries",
        "Journal entries not yet in the merged view.",
        index.lag_entries as i64,
    );
    float_gauge(
        &r,
        "cx_index_lag_seconds",
        "How long the merged view has not stood at the journal's end.",
        index.lag_seconds,
    );
    int_gauge(
        &r,
        "cx_index_undecodable_entries",
        "Entries whose operation this node's schema cannot decode.",
        index.undecodable_entries as i64,
    );
    int_gauge(
        &r,
        "cx_feed_subscribers",
        "Feed subscriptions open now.",
        s.feed_subscribers as i64,
    );
    int_gauge(
        &r,
        "cx_repair_overdue_records",
        "This node's repairs past their sync deadline that a department has not acknowledged.",
        s.overdue_repairs.len() as i64,
    );

    let handshakes = prometheus::IntCounter::new("cx_tls_handshakes_total", "TLS connections admitted since start.")
        .expect("metric names are valid constants");
    handshakes.inc_by(t.handshakes_ok.load(std::sync::atomic::Ordering::Relaxed));
    let refusals = counter_vec(
        "cx_tls_refusals_total",
        "Connections refused since start, by reason (source_handshakes, identity_connections, revoked, tls).",
        &["reason"],
    );
    for (reason, n) in t.refusals() {
        refusals.with_label_values(&[reason]).inc_by(n);
    }
    let expiry = gauge_vec(
        "cx_tls_certificate_expiry_seconds",
        "Seconds until a certificate expires (negative: expired), for this node's own (role node) and those of the peers connected now (role peer).",
        &["identity", "role"],
    );
    for c in &s.certificates {
        expiry
            .with_label_values(&[c.identity.as_str(), c.role.as_str()])
            .set((c.not_after_unix_seconds - now) as f64);
    }
    if s.revocation_on && s.crl_next_update_unix_seconds > 0 {
        int_gauge(
            &r,
            "cx_tls_crl_next_update_seconds",
            "Seconds until the revocation list in force reaches its nextUpdate (negative: stale).",
            s.crl_next_update_unix_seconds - now,
        );
    }
    int_gauge(
        &r,
        "cx_node_alarms",
        "Conditions an operator must act on now (see cxnode status).",
        s.alarms.len() as i64,
    );
    int_gauge(
        &r,
        "cx_node_ready",
        "1 when the node can serve (store, tls, writer, indexer and sync driver up).",
        i64::from(s.ready),
    );
    let up = gauge_vec(
        "cx_node_component_up",
        "1 while a part the node needs is up (store, tls, writer, indexer, sync).",
        &["component"],
    );
    for h in &s.health {
        up.with_label_values(&[h.component.as_str()])
            .set(f64::from(u8::from(h.up)));
    }
    for m in [
        Box::new(received) as Box<dyn prometheus::core::Collector>,
        Box::new(received_bytes),
        Box::new(duplicates),
        Box::new(connected),
        Box::new(errors),
        Box::new(head),
        Box::new(lag),
        Box::new(lag_s),
        Box::new(stalled),
        Box::new(forked),
        Box::new(handshakes),
        Box::new(refusals),
        Box::new(expiry),
        Box::new(up),
    ] {
        let _ = r.register(m);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_values_and_live_counters_appear_under_their_names() {
        let m = Metrics::new();
        m.operations.with_label_values(&["appended"]).inc_by(7);
        m.rejections.with_label_values(&["USCC_BAD_CHECK_DIGIT"]).inc();
        m.fsync.observe(0.002);
        let status = pb::SyncStatusResponse {
            region: 330000,
            journal_bytes: 4096,
            origins: vec![pb::OriginStatus {
                origin: 320000,
                local_head: 10,
                best_peer_head: 15,
                lag_entries: 5,
                lag_seconds: 12.5,
                stalled: true,
                ..Default::default()
            }],
            certificates: vec![pb::CertificateExpiry {
                identity: "cx://node/330000".into(),
                not_after_unix_seconds: 1_000 + 86_400,
                role: "node".into(),
            }],
            ready: true,
            ..Default::default()
        };
        let text = m.render(&status, &TransportStats::default(), 1_000);
        for line in [
            "cx_publish_operations_total{outcome=\"appended\"} 7",
            "cx_publish_rejections_total{reason=\"USCC_BAD_CHECK_DIGIT\"} 1",
            "cx_journal_fsync_duration_seconds_count 1",
            "cx_journal_size_bytes 4096",
            "cx_sync_lag_entries{origin=\"320000\"} 5",
            "cx_sync_lag_seconds{origin=\"320000\"} 12.5",
            "cx_sync_origin_stalled{origin=\"320000\"} 1",
            "cx_tls_certificate_expiry_seconds{identity=\"cx://node/330000\",role=\"node\"} 86400",
            "cx_tls_refusals_total{reason=\"revoked\"} 0",
            "cx_node_ready 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }
}
