//! Prometheus metrics. Label values come from fixed sets, never from
//! request content.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::denial::Reason;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    pub operation: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenialLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreOpLabels {
    pub store: String,
    pub operation: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    pub store: String,
    pub operation: &'static str,
}

fn store_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

pub struct Metrics {
    pub store_operations: Family<StoreOpLabels, Counter>,
    pub store_duration: Family<StoreLabels, Histogram, fn() -> Histogram>,
    registry: Mutex<Registry>,
    pub reviews: Family<ReviewLabels, Counter>,
    pub denials: Family<DenialLabels, Counter>,
    pub duration: Histogram,
    pub in_flight: Gauge,
    pub cert_reloads: Family<OutcomeLabels, Counter>,
    pub config_reloads: Family<OutcomeLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("secret_santa");
        let reviews = Family::<ReviewLabels, Counter>::default();
        registry.register(
            "reviews",
            "Admission reviews by operation and outcome",
            reviews.clone(),
        );
        let denials = Family::<DenialLabels, Counter>::default();
        registry.register("denials", "Denied reviews by reason", denials.clone());
        // 100 µs .. ~13 s
        let duration = Histogram::new([
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            2.5, 5.0, 10.0,
        ]);
        registry.register(
            "review_duration_seconds",
            "Time spent answering one review, from decoded request to encoded response",
            duration.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "reviews_in_flight",
            "Reviews being answered now",
            in_flight.clone(),
        );
        let cert_reloads = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "certificate_reloads",
            "Serving certificate reloads after a file change, by outcome",
            cert_reloads.clone(),
        );
        let store_operations = Family::<StoreOpLabels, Counter>::default();
        registry.register(
            "store_operations",
            "Calls to external stores by store, operation and result",
            store_operations.clone(),
        );
        let store_duration: Family<StoreLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(store_histogram);
        registry.register(
            "store_operation_duration_seconds",
            "Latency of calls to external stores",
            store_duration.clone(),
        );
        let config_reloads = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Admin config reloads after a file change, by outcome",
            config_reloads.clone(),
        );
        // Pre-create the denial series so dashboards see zeros.
        for r in Reason::ALL {
            let _ = denials.get_or_create(&DenialLabels { reason: r.as_str() });
        }
        Self {
            store_operations,
            store_duration,
            registry: Mutex::new(registry),
            reviews,
            denials,
            duration,
            in_flight,
            cert_reloads,
            config_reloads,
        }
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = match self.registry.lock() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}
