//! HTTP in, AdmissionReview out. The only place that turns a [`Denial`]
//! into an `allowed: false` response. Every decodable request gets HTTP 200.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use kube::core::admission::Operation;
use tracing::Instrument;

use crate::admission;
use crate::denial::Denial;
use crate::metrics::{DenialLabels, Metrics, ReviewLabels};
use crate::review::Reviewer;

pub const MUTATE_PATH: &str = "/mutate";
/// Time kept back from the apiserver's `?timeout=` so our answer arrives first.
const TIMEOUT_MARGIN: Duration = Duration::from_millis(500);

/// The shared state of the webhook and admin endpoints.
pub struct App {
    pub reviewer: Reviewer,
    pub metrics: Arc<Metrics>,
    pub max_body_bytes: usize,
    ready: AtomicBool,
}

impl App {
    pub fn new(reviewer: Reviewer, max_body_bytes: usize) -> Arc<Self> {
        Arc::new(Self {
            metrics: reviewer.metrics().clone(),
            reviewer,
            max_body_bytes,
            ready: AtomicBool::new(false),
        })
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// The webhook listener's router.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: http_body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if req.uri().path() != MUTATE_PATH {
            return plain(StatusCode::NOT_FOUND, "not found\n");
        }
        if req.method() != Method::POST {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "use POST\n");
        }
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body_bytes as u64) {
            return plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
        }
        let deadline = query_timeout(req.uri().query());
        let body = match Limited::new(req.into_body(), self.max_body_bytes)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(e) => {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    return plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
                }
                return plain(StatusCode::BAD_REQUEST, "could not read the request body\n");
            }
        };
        let json = self.answer(&body, deadline).await;
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(json)))
            .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "response\n"))
    }

    /// Decodes, reviews and answers one AdmissionReview body: the JSON the
    /// apiserver receives.
    pub async fn answer(&self, body: &[u8], deadline: Option<Duration>) -> Vec<u8> {
        let (api_version, response) = self.review_decoded(body, deadline).await;
        match admission::encode(api_version, &response) {
            Ok(json) => json,
            Err(_) => {
                // Only a serializer bug gets here; answer without the patch.
                let d = Denial::internal("could not encode the review");
                self.count_denial(&d);
                admission::encode(api_version, &deny(&response.uid, &d)).unwrap_or_default()
            }
        }
    }

    /// [`answer`](Self::answer) as a JSON value, for tests and tools.
    pub async fn review_bytes(&self, body: &[u8], deadline: Option<Duration>) -> serde_json::Value {
        serde_json::from_slice(&self.answer(body, deadline).await)
            .unwrap_or(serde_json::Value::Null)
    }

    async fn review_decoded(
        &self,
        body: &[u8],
        deadline: Option<Duration>,
    ) -> (&'static str, admission::Response) {
        let started = Instant::now();
        let review: admission::Review = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => {
                return self.invalid(format!(
                    "could not decode AdmissionReview: {}",
                    short_json_error(&e)
                ));
            }
        };
        if !review.is_supported() {
            return self.invalid(format!(
                "expected kind AdmissionReview of admission.k8s.io/v1, got kind {:?} of {:?}",
                review.kind, review.api_version
            ));
        }
        let api_version = if review.api_version == admission::API_VERSION_V1BETA1 {
            admission::API_VERSION_V1BETA1
        } else {
            admission::API_VERSION_V1
        };
        let Some(request) = review.request else {
            return self.invalid("AdmissionReview has no request");
        };
        if request.uid.is_empty() {
            return self.invalid("AdmissionReview request has no uid");
        }
        let operation = operation_name(&request.operation);
        let span = tracing::info_span!(
            "review",
            uid = %request.uid,
            namespace = request.namespace.as_deref().unwrap_or_default(),
            name = %request.name,
            operation,
            dry_run = request.dry_run,
            outcome = tracing::field::Empty,
        );
        self.metrics.in_flight.inc();
        // The apiserver's own timeout, less a margin, bounds the configured one.
        let deadline = deadline.map(|d| {
            d.saturating_sub(TIMEOUT_MARGIN)
                .max(Duration::from_millis(100))
        });
        let result = self
            .reviewer
            .review_within(&request, deadline)
            .instrument(span.clone())
            .await;
        self.metrics.in_flight.dec();
        let uid = &*request.uid;
        let (response, outcome) = match result {
            Ok(mut mutation) => {
                let patched = mutation.patch.is_some();
                let mut response = match mutation.patch.take() {
                    Some(patch) => admission::Response::patched(uid, patch),
                    None => admission::Response::allow(uid),
                };
                response.warnings = mutation.warnings;
                span.in_scope(|| {
                    tracing::info!(
                        generated = ?mutation.generated_keys,
                        restored = ?mutation.restored_keys,
                        "allowed"
                    );
                });
                (response, if patched { "patched" } else { "allowed" })
            }
            Err(denial) => {
                span.in_scope(|| tracing::info!(reason = denial.reason.as_str(), message = %denial.message, "denied"));
                self.count_denial(&denial);
                (deny(uid, &denial), "denied")
            }
        };
        span.record("outcome", outcome);
        self.metrics
            .reviews
            .get_or_create(&ReviewLabels { operation, outcome })
            .inc();
        self.metrics
            .duration
            .observe(started.elapsed().as_secs_f64());
        (api_version, response)
    }

    fn count_denial(&self, denial: &Denial) {
        self.metrics
            .denials
            .get_or_create(&DenialLabels {
                reason: denial.reason.as_str(),
            })
            .inc();
    }

    fn invalid(&self, message: impl Into<String>) -> (&'static str, admission::Response) {
        let message = message.into();
        tracing::warn!(%message, "invalid review");
        self.metrics
            .reviews
            .get_or_create(&ReviewLabels {
                operation: "unknown",
                outcome: "invalid",
            })
            .inc();
        self.count_denial(&Denial::new(crate::denial::Reason::Request, ""));
        (
            admission::API_VERSION_V1,
            admission::Response::invalid(message),
        )
    }

    /// The admin listener's router: /healthz, /readyz, /metrics.
    pub fn handle_admin<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        match req.uri().path() {
            "/healthz" | "/livez" => plain(StatusCode::OK, "ok\n"),
            "/readyz" => {
                if self.is_ready() {
                    plain(StatusCode::OK, "ok\n")
                } else {
                    plain(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                }
            }
            "/metrics" => Response::builder()
                .status(StatusCode::OK)
                .header(
                    header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
                .body(Full::new(Bytes::from(self.metrics.encode())))
                .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "metrics\n")),
            _ => plain(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

/// A denial as the apiserver reads it: 403 Forbidden, or InvalidRequest when
/// the review itself cannot be used (an object that is not a Secret).
fn deny(uid: &str, denial: &Denial) -> admission::Response {
    let message = format!("secret-santa: {}", denial.message);
    if denial.reason == crate::denial::Reason::Request {
        let mut response = admission::Response::invalid(message);
        response.uid = uid.to_owned();
        return response;
    }
    admission::Response::deny(uid, message)
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn operation_name(op: &Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// serde_json errors name a position and a category; keep just that.
fn short_json_error(e: &serde_json::Error) -> String {
    format!(
        "{:?} error at line {}, column {}",
        e.classify(),
        e.line(),
        e.column()
    )
}

/// The apiserver adds `?timeout=10s` (a Go duration) to webhook calls.
fn query_timeout(query: Option<&str>) -> Option<Duration> {
    let query = query?;
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "timeout")
        .and_then(|(_, v)| crate::config::parse_duration(v).ok())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn timeout_query_is_read() {
        assert_eq!(
            query_timeout(Some("timeout=10s")),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            query_timeout(Some("a=b&timeout=2m")),
            Some(Duration::from_secs(120))
        );
        assert_eq!(query_timeout(Some("x=1")), None);
        assert_eq!(query_timeout(None), None);
    }
}
