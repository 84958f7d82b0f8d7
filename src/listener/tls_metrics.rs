//! The listeners' TLS instruments: the certificate's expiry, reloads and failed handshakes, by
//! listener.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Unit;

use crate::metrics::Metrics;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    listener: String,
    result: String,
}

#[derive(Debug)]
struct Families {
    expiry: Family<ListenerLabels, Gauge>,
    reloads: Family<ReloadLabels, Counter>,
    handshake_failures: Family<ListenerLabels, Counter>,
}

/// One listener's TLS instruments.
#[derive(Debug, Clone)]
pub(crate) struct TlsMetrics {
    pub(crate) expiry: Gauge,
    success: Counter,
    failure: Counter,
    pub(crate) handshake_failures: Counter,
}

impl TlsMetrics {
    pub(crate) fn new(metrics: &Metrics, listener: &str) -> TlsMetrics {
        let m: Arc<Families> = metrics.instruments(|registry| {
            let m = Families {
                expiry: Family::default(),
                reloads: Family::default(),
                handshake_failures: Family::default(),
            };
            registry.register_with_unit(
                "certificate_expiry_timestamp",
                "When the listener's own TLS certificate expires (notAfter), as a Unix time",
                Unit::Seconds,
                m.expiry.clone(),
            );
            registry.register(
                "tls_reloads",
                "Reloads of a listener's TLS files, by result (a failure keeps the certificate in force)",
                m.reloads.clone(),
            );
            registry.register(
                "tls_handshake_failures",
                "TLS handshakes that failed or timed out, by listener",
                m.handshake_failures.clone(),
            );
            m
        });
        let labels = ListenerLabels {
            listener: listener.to_owned(),
        };
        let result = |result: &str| {
            m.reloads
                .get_or_create(&ReloadLabels {
                    listener: listener.to_owned(),
                    result: result.to_owned(),
                })
                .clone()
        };
        TlsMetrics {
            expiry: m.expiry.get_or_create(&labels).clone(),
            success: result("success"),
            failure: result("failure"),
            handshake_failures: m.handshake_failures.get_or_create(&labels).clone(),
        }
    }

    pub(crate) fn reloaded(&self, ok: bool) {
        if ok {
            self.success.inc();
        } else {
            self.failure.inc();
        }
    }
}
