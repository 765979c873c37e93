//! The HTTP server: the organiser API under `/api/v1`, operations endpoints, and (with
//! the voice and SMS work) the provider's webhooks.
//!
//! [`app`] builds the whole router from state and is pure, so most tests drive it with
//! `tower::ServiceExt::oneshot` and no socket. [`serve`] runs it on a listener the caller
//! has already bound, until the shutdown future resolves.

pub mod api;
pub mod auth;
pub mod error;
mod ops;
pub mod webhooks;

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;

use crate::config::Settings;
use crate::store::Store;

pub use error::{ApiError, ApiResult};

/// Shared by every handler. Cheap to clone: everything inside is reference-counted.
#[derive(Clone)]
pub struct AppState {
    /// The database, SQLite or PostgreSQL.
    pub store: Store,
    /// Settings fixed at start-up.
    pub settings: Arc<Settings>,
    /// Renders `/metrics`. The recorder behind it is process-global (the `metrics`
    /// crate's design), so every app in one process shares it.
    pub metrics: PrometheusHandle,
    /// "Now" for calling hours and retry gaps (manual in tests and the simulator).
    pub clock: crate::domain::Clock,
    /// The provider's REST API, when credentials are configured.
    pub rest: Option<crate::telephony::RestClient>,
    /// In-process rate limits (`crate::limits`); the REST client shares `limits.calls`.
    pub limits: crate::limits::Limits,
}

impl AppState {
    pub fn new(store: Store, settings: Settings) -> Self {
        let limits =
            crate::limits::Limits::new(&settings.limits, crate::limits::LimitClock::system());
        let rest = match (&settings.account_sid, &settings.auth_token) {
            (Some(sid), Some(token)) => Some(
                crate::telephony::RestClient::new(&settings.api_base, sid, token.clone())
                    .with_pacer(limits.calls.clone()),
            ),
            _ => None,
        };
        Self {
            store,
            settings: Arc::new(settings),
            metrics: metrics_handle(),
            clock: crate::domain::Clock::System,
            rest,
            limits,
        }
    }

    /// Replace the limiters (tests use a manual [`crate::limits::LimitClock`]); the REST
    /// client follows.
    pub fn with_limits(mut self, limits: crate::limits::Limits) -> Self {
        self.rest = self.rest.map(|r| r.with_pacer(limits.calls.clone()));
        self.limits = limits;
        self
    }

    pub fn with_clock(mut self, clock: crate::domain::Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn with_rest(mut self, rest: crate::telephony::RestClient) -> Self {
        self.rest = Some(rest.with_pacer(self.limits.calls.clone()));
        self
    }
}

/// Install the Prometheus recorder once per process and return its handle.
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; then our handle still
            // renders (empty) text rather than breaking the endpoint.
            let _ = metrics::set_global_recorder(recorder);
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .ok();
            handle
        })
        .clone()
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The complete application.
pub fn app(state: AppState) -> Router {
    let settings = state.settings.clone();
    let (api_router, openapi) = api::router(&settings).split_for_parts();
    let openapi = Arc::new(openapi);

    let api_router = api_router
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || {
                let doc = openapi.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .layer(DefaultBodyLimit::max(settings.max_body_bytes));

    Router::new()
        .merge(ops::router())
        .merge(api_router)
        .merge(webhooks::router(state.clone()))
        .fallback(fallback)
        .with_state(state)
        .layer(
            // Outermost first: ids, then redaction, then the span that logs the request.
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(SetSensitiveRequestHeadersLayer::new([
                    header::AUTHORIZATION,
                    header::COOKIE,
                    HeaderName::from_static("x-twilio-signature"),
                ]))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(make_span)
                        .on_request(())
                        .on_failure(()),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(CatchPanicLayer::custom(panic_response))
                .layer(middleware::from_fn(track_metrics)),
        )
}

/// Spans keyed on the route template (`/api/v1/campaigns/{id}`), never the raw path, so
/// log fields stay low-cardinality and no phone number in a URL reaches a log.
fn make_span(req: &Request) -> tracing::Span {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
        .unwrap_or("unmatched");
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!("request", method = %req.method(), route, request_id)
}

async fn track_metrics(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("phonebank_http_requests_total", &labels).increment(1);
    metrics::histogram!("phonebank_http_request_duration_seconds", &labels)
        .record(start.elapsed().as_secs_f64());
    let status = response.status();
    if status.is_server_error() {
        tracing::warn!(status = status.as_u16(), "server error");
    } else {
        tracing::debug!(status = status.as_u16(), "done");
    }
    response
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    axum::response::IntoResponse::into_response(ApiError::Internal(anyhow::anyhow!("panic")))
}

async fn fallback() -> ApiError {
    ApiError::NotFound("route")
}

/// The OpenAPI document, as served at `/api/v1/openapi.json` (for `phonebank openapi`).
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    api::router(&Settings::default()).split_for_parts().1
}

/// Per-route timeout for ordinary requests; uploads are given longer in `api::router`.
pub(crate) fn timeout(d: Duration) -> TimeoutLayer {
    TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, d)
}

pub(crate) type ApiRouter = OpenApiRouter<AppState>;

/// Serve until `shutdown` resolves, then let in-flight requests finish.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
