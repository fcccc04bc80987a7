//! The HTTP endpoints: `GET /sys/balance`, `GET /v2/user/followers` and `GET /__stats`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::config::RateHeaders;
use super::data::{self, Follower};
use super::hostile::Hostile;
use super::limits::{Admission, Policy, Rejection};
use super::state::{Refused, Shared};
use super::window::ceil_secs;

/// The header that carries the access key.
const ACCESS_KEY: &str = "x-access-key";

const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The simulator's routes over `shared`.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/sys/balance", get(balance))
        .route("/v2/user/followers", get(followers))
        .route("/__stats", get(stats))
        .fallback(not_found)
        .with_state(shared)
}

/// The API's error body: `{"detail": "..."}`.
fn detail(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "detail": message }))).into_response()
}

/// A whole number of seconds as a header value.
fn secs_header(secs: u64) -> HeaderValue {
    HeaderValue::from(secs)
}

/// Why [`gate`] turned a request away.
enum Blocked {
    Outage(Duration),
    MissingKey,
    WrongKey,
}

impl IntoResponse for Blocked {
    fn into_response(self) -> Response {
        match self {
            Self::Outage(left) => {
                let mut response = detail(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Service temporarily unavailable",
                );
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, secs_header(ceil_secs(left).max(1)));
                response
            }
            Self::MissingKey => detail(StatusCode::UNAUTHORIZED, "Missing x-access-key header"),
            Self::WrongKey => detail(StatusCode::UNAUTHORIZED, "Invalid x-access-key"),
        }
    }
}

/// Checks what every API endpoint checks first: an outage, then the access key. Returns the key.
fn gate(shared: &Shared, headers: &HeaderMap) -> Result<String, Blocked> {
    if let Some(left) = shared.outage_remaining() {
        return Err(Blocked::Outage(left));
    }
    match headers.get(ACCESS_KEY).map(HeaderValue::to_str) {
        None => Err(Blocked::MissingKey),
        Some(Ok(key)) if shared.config.accepts_key(key) => Ok(key.to_owned()),
        Some(_) => Err(Blocked::WrongKey),
    }
}

#[derive(Serialize)]
struct Balance {
    rate: u32,
    amount: u64,
}

/// `GET /sys/balance`: the rate limit and the credits left. Free, and not rate limited.
async fn balance(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    shared.count_request();
    let response = match gate(&shared, &headers) {
        Ok(_) => Json(Balance {
            rate: shared.rate(),
            amount: shared.credits_left(),
        })
        .into_response(),
        Err(blocked) => blocked.into_response(),
    };
    shared.record_status(response.status());
    response
}

#[derive(Deserialize)]
struct FollowersQuery {
    user_id: Option<String>,
    page_id: Option<String>,
}

#[derive(Serialize)]
struct FollowersPage {
    response: Users,
    next_page_id: Option<String>,
}

#[derive(Serialize)]
struct Users {
    users: Vec<Follower>,
}

/// `GET /v2/user/followers?user_id=&page_id=`: one page of a user's followers.
async fn followers(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    query: Result<Query<FollowersQuery>, QueryRejection>,
) -> Response {
    shared.count_request();
    let _flight = shared.enter_flight();
    let response = serve_followers(&shared, &headers, query).await;
    shared.record_status(response.status());
    response
}

/// The followers endpoint's checks, in order: outage (503), key (401), rate limit (429),
/// concurrency limit, latency, injected fault (500), query (400), user (404), page (400),
/// balance (402). Only the 200 at the end costs a credit.
async fn serve_followers(
    shared: &Arc<Shared>,
    headers: &HeaderMap,
    query: Result<Query<FollowersQuery>, QueryRejection>,
) -> Response {
    let key = match gate(shared, headers) {
        Ok(key) => key,
        Err(blocked) => return blocked.into_response(),
    };
    if let Some(mode) = shared.config.hostile.filter(|mode| mode.refuses())
        && let Some(nth) = shared.take_hostile()
    {
        return mode.refusal(nth);
    }
    let fields = shared.config.rate_headers;
    let admitted = match shared.admit(&key) {
        Ok(admitted) => admitted,
        Err(Refused::RateLimited(rejection)) => return rate_limited(fields, rejection),
        Err(Refused::Concurrency(admission)) => {
            let response = detail(
                shared.config.concurrency_status,
                "Too many concurrent requests",
            );
            return with_rate_headers(response, fields, &admission.into());
        }
    };
    if !shared.config.latency.is_zero() {
        tokio::time::sleep(shared.config.latency).await;
    }
    let response = answer(shared, query, admitted.seq);
    with_rate_headers(response, fields, &admitted.admission.into())
}

/// Answers an admitted followers request.
fn answer(
    shared: &Shared,
    query: Result<Query<FollowersQuery>, QueryRejection>,
    seq: u64,
) -> Response {
    let config = &shared.config;
    if config.fault_every > 0 && seq.is_multiple_of(config.fault_every) {
        return detail(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error");
    }
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => return detail(StatusCode::BAD_REQUEST, &rejection.body_text()),
    };
    let Some(user_id) = query.user_id.filter(|id| !id.is_empty()) else {
        return detail(StatusCode::BAD_REQUEST, "user_id is required");
    };
    if !config.user_exists(&user_id) {
        return detail(StatusCode::NOT_FOUND, "User not found");
    }
    let page_id = query.page_id.unwrap_or_default();
    let Some(page) = data::page_number(&user_id, &page_id) else {
        return detail(StatusCode::BAD_REQUEST, "Invalid page_id");
    };
    if shared.charge(&user_id, page).is_err() {
        return detail(StatusCode::PAYMENT_REQUIRED, "Insufficient balance");
    }
    let (users, mut next_page_id) = data::page(&user_id, page, config.page_size);
    let hostile = config.hostile;
    if hostile == Some(Hostile::CyclicPages) && next_page_id.is_none() {
        // The last page points back: to page 2, or to page 1 under its token.
        if shared.take_hostile().is_some() {
            let back = data::pages_for(&user_id).min(2);
            next_page_id = Some(data::page_token(&user_id, back));
        }
    }
    match hostile.filter(|mode| mode.spoils_pages()) {
        Some(mode) if shared.take_hostile().is_some() => {
            // Serializing these plain structs cannot fail.
            let users_json = serde_json::to_string(&users).unwrap_or_default();
            let next_json = serde_json::to_string(&next_page_id).unwrap_or_default();
            let page = serde_json::to_vec(&FollowersPage {
                response: Users { users },
                next_page_id,
            })
            .unwrap_or_default();
            mode.spoil(page.into(), &users_json, &next_json)
        }
        _ => Json(FollowersPage {
            response: Users { users },
            next_page_id,
        })
        .into_response(),
    }
}

/// What the rate-limit fields of one answer say.
struct RateState {
    policy: Policy,
    remaining: u64,
    reset: Duration,
    reset_unix: Option<u64>,
}

impl From<Admission> for RateState {
    fn from(a: Admission) -> Self {
        Self {
            policy: a.policy,
            remaining: a.remaining,
            reset: a.reset,
            reset_unix: a.reset_unix,
        }
    }
}

impl From<Rejection> for RateState {
    fn from(r: Rejection) -> Self {
        Self {
            policy: r.policy,
            remaining: 0,
            reset: r.reset,
            reset_unix: r.reset_unix,
        }
    }
}

/// Adds the rate-limit fields `fields` asks for: `X-RateLimit-Limit`, `-Remaining` and
/// `-Reset` (seconds from now rounded up, or the unix time of a window aligned to the clock),
/// and the IETF `RateLimit-Policy` and `RateLimit` (seconds from now, rounded up).
fn with_rate_headers(mut response: Response, fields: RateHeaders, state: &RateState) -> Response {
    let headers = response.headers_mut();
    let reset = ceil_secs(state.reset);
    if fields.legacy() {
        headers.insert(X_RATELIMIT_LIMIT, HeaderValue::from(state.policy.limit));
        headers.insert(X_RATELIMIT_REMAINING, HeaderValue::from(state.remaining));
        let value = state.reset_unix.unwrap_or(reset);
        headers.insert(X_RATELIMIT_RESET, secs_header(value));
    }
    if fields.ietf() {
        let policy = format!(
            "\"default\";q={};w={}",
            state.policy.limit, state.policy.window_secs
        );
        let now = format!("\"default\";r={};t={reset}", state.remaining);
        // Digits and a fixed name: always a valid header value.
        if let (Ok(policy), Ok(now)) = (HeaderValue::try_from(policy), HeaderValue::try_from(now)) {
            headers.insert(RATELIMIT_POLICY, policy);
            headers.insert(RATELIMIT, now);
        }
    }
    response
}

/// The 429 for a full rate window, with `Retry-After` (whole seconds, rounded up, at least 1)
/// and the rate-limit fields (a reset of at least 1 s).
fn rate_limited(fields: RateHeaders, rejection: Rejection) -> Response {
    let mut response = detail(StatusCode::TOO_MANY_REQUESTS, "Too many requests");
    response.headers_mut().insert(
        RETRY_AFTER,
        secs_header(ceil_secs(rejection.retry_after).max(1)),
    );
    let mut state = RateState::from(rejection);
    state.reset = state.reset.max(Duration::from_secs(1));
    with_rate_headers(response, fields, &state)
}

/// `GET /__stats`: the simulator's record. Needs no key and is not counted.
async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.stats()).into_response()
}

async fn not_found() -> Response {
    detail(StatusCode::NOT_FOUND, "Not Found")
}
