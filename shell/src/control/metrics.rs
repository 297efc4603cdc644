//! The control plane's Prometheus metrics, served on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Why a session was ended by the reaper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// Which error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// How a read of the API token file after it changed went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

/// Every metric of the control plane, registered in its own registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub sessions_active: Gauge,
    pub sessions_created: Counter,
    pub sessions_failed: Counter,
    pub sessions_deleted: Counter,
    pub sessions_reaped: Family<ReasonLabel, Counter>,
    pub create_seconds: Histogram,
    pub errors: Family<KindLabel, Counter>,
    pub api_token_reloads: Family<ResultLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("playpod_control");
        let sessions_active = Gauge::default();
        registry.register(
            "sessions_active",
            "Sessions that exist now",
            sessions_active.clone(),
        );
        let sessions_created = Counter::default();
        registry.register(
            "sessions_created",
            "Sessions created through the API",
            sessions_created.clone(),
        );
        let sessions_failed = Counter::default();
        registry.register(
            "sessions_failed",
            "Session creations that failed after the request was accepted",
            sessions_failed.clone(),
        );
        let sessions_deleted = Counter::default();
        registry.register(
            "sessions_deleted",
            "Sessions deleted through the API",
            sessions_deleted.clone(),
        );
        let sessions_reaped = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "sessions_reaped",
            "Sessions ended by the reaper, by reason (ttl, idle, ended, unready)",
            sessions_reaped.clone(),
        );
        // 10 ms .. ~41 s: three API calls normally take tens of milliseconds.
        let create_seconds = Histogram::new(exponential_buckets(0.01, 2.0, 13));
        registry.register_with_unit(
            "session_create",
            "Time to apply a session's objects",
            Unit::Seconds,
            create_seconds.clone(),
        );
        let errors = Family::<KindLabel, Counter>::default();
        registry.register("errors", "Errors by kind", errors.clone());
        let api_token_reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "api_token_reloads",
            "Reads of the API token file after it changed, by result (ok: a valid token, now in \
             use; invalid: missing or no valid token, the last good one kept)",
            api_token_reloads.clone(),
        );
        Self {
            registry,
            sessions_active,
            sessions_created,
            sessions_failed,
            sessions_deleted,
            sessions_reaped,
            create_seconds,
            errors,
            api_token_reloads,
        }
    }

    /// Counts an error under its metric label.
    pub fn error(&self, err: &super::error::Error) {
        self.errors
            .get_or_create(&KindLabel {
                kind: err.metric_label(),
            })
            .inc();
    }

    /// Counts a reaped session.
    pub fn reaped(&self, reason: &'static str) {
        self.sessions_reaped
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts a read of the changed API token file (`ok` or `invalid`).
    pub fn token_reload(&self, result: &'static str) {
        self.api_token_reloads
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let m = Metrics::new();
        m.sessions_created.inc();
        m.reaped("idle");
        m.error(&super::super::error::Error::TooManySessions(3));
        m.create_seconds.observe(0.05);
        let text = m.encode();
        for needle in [
            "playpod_control_sessions_active 0",
            "playpod_control_sessions_created_total 1",
            "playpod_control_sessions_reaped_total{reason=\"idle\"} 1",
            "playpod_control_errors_total{kind=\"too_many_sessions\"} 1",
            "playpod_control_session_create_seconds_count 1",
            "# EOF",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
    }
}
