//! [`Cache`], the service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Body;
use tollway_core::{BoxError, Classify};
use tower::{Service, ServiceExt};

use crate::body::CacheBody;
use crate::buffer::{Buffered, buffer};
use crate::coalesce::{self, Published, Role};
use crate::entry::StoredResponse;
use crate::future::ResponseFuture;
use crate::key::CacheKey;
use crate::layer::Shared;
use crate::lock::{KeyLock, LOCK_POLL, LOCK_WAIT_MAX, TryLock};
use crate::policy::may_serve_stale;
use crate::status::{CACHE_STATUS_HEADER, CacheStatus, record_evictions};
use crate::store;

/// A disk cache in front of an HTTP service; built by [`CacheLayer`](crate::CacheLayer).
///
/// It is always ready: a request answered from the cache never waits for, or takes capacity
/// from, the inner service (a limiter's permit, say). On a miss the request drives a clone of
/// the inner service to readiness itself, so the inner service must be `Clone` (a tower
/// `Buffer`, or any client handle). It needs a tokio runtime with the blocking pool enabled:
/// file reads and writes run on it.
pub struct Cache<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Cache<S> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone> Clone for Cache<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Cache<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("inner", &self.inner)
            .field("dir", &self.shared.store.root())
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Cache<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<CacheBody<ResBody>>;
    type Error = BoxError;
    type Future = ResponseFuture<ResBody>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let inner = self.inner.clone();
        let shared = Arc::clone(&self.shared);
        ResponseFuture::new(Box::pin(serve(shared, inner, request)))
    }
}

async fn serve<S, ReqBody, ResBody>(
    shared: Arc<Shared>,
    mut inner: S,
    request: Request<ReqBody>,
) -> Result<Response<CacheBody<ResBody>>, BoxError>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    let policy = &shared.policy;
    let (parts, body) = request.into_parts();
    if !policy.is_cacheable_request(&parts) {
        let response = call_inner(&mut inner, Request::from_parts(parts, body)).await?;
        return Ok(pass_through(response));
    }
    let key = policy.key.key(shared.store.secret(), &parts);
    if let Some(entry) = shared.store.read_memory(&key) {
        let now = policy.now();
        if entry.is_fresh(now) {
            CacheStatus::Hit.record();
            return Ok(from_entry(&entry, CacheStatus::Hit, now));
        }
    }

    let route_ttl = policy.route_ttl(&parts);
    if route_ttl.is_zero() && policy.not_found_ttl.is_none() {
        // Nothing on this route is ever stored: do not make callers queue for it.
        let response = call_inner(&mut inner, Request::from_parts(parts, body)).await?;
        return Ok(pass_through(response));
    }

    let flight = loop {
        match shared.flights.join(key) {
            Role::Leader(flight) => break Some(flight),
            Role::Waiter(slot) => match coalesce::wait(slot).await {
                Some(Published {
                    entry: Some(entry),
                    how,
                }) => {
                    let status = match how {
                        CacheStatus::Miss => CacheStatus::Coalesced,
                        how => how,
                    };
                    status.record();
                    return Ok(from_entry(&entry, status, policy.now()));
                }
                Some(Published { entry: None, .. }) => break None,
                None => tracing::debug!("coalesced request's leader gave up; taking over"),
            },
        }
    };
    let Some(flight) = flight else {
        // The leader's response could not be shared: send our own, at once.
        let response = call_inner(&mut inner, Request::from_parts(parts, body)).await?;
        return Ok(pass_through(response));
    };

    let now = policy.now();
    let stale = match lookup(&shared, key, now).await {
        Found::Fresh(entry) => {
            flight.publish(&entry, CacheStatus::Hit);
            CacheStatus::Hit.record();
            return Ok(from_entry(&entry, CacheStatus::Hit, now));
        }
        Found::Stale(entry) => Some(entry),
        Found::Nothing => None,
    };

    let _lock = if policy.cross_process {
        match cross_process(&shared, key).await {
            CrossProcess::Locked(lock) => lock,
            CrossProcess::Fetched(entry) => {
                flight.publish(&entry, CacheStatus::Miss);
                CacheStatus::Coalesced.record();
                return Ok(from_entry(&entry, CacheStatus::Coalesced, policy.now()));
            }
        }
    } else {
        None
    };

    let response = match call_inner(&mut inner, Request::from_parts(parts, body)).await {
        Ok(response) => response,
        Err(error) => {
            let outcome = policy.classifier.classify_error(&*error);
            return match stale {
                Some(stale) if may_serve_stale(&outcome) => {
                    tracing::warn!(error = %error, "upstream failed; serving a stale entry");
                    Ok(serve_stale(flight, &stale, policy.now()))
                }
                _ => Err(error),
            };
        }
    };
    let status = response.status();
    let outcome = policy.classifier.classify(&response);
    if let Some(stale) = stale.filter(|_| may_serve_stale(&outcome)) {
        tracing::warn!(
            status = status.as_u16(),
            "upstream failed; serving a stale entry"
        );
        return Ok(serve_stale(flight, &stale, policy.now()));
    }
    let Some(ttl) = policy.store_ttl(route_ttl, &outcome, status, response.headers()) else {
        flight.release_unshareable();
        return Ok(pass_through(response));
    };

    let (mut head, body) = response.into_parts();
    let body = match buffer(body, policy.max_entry_bytes)
        .await
        .map_err(Into::into)?
    {
        Buffered::Whole(bytes) => bytes,
        Buffered::Untouched(body) => {
            flight.release_unshareable();
            return Ok(pass_through(Response::from_parts(head, body)));
        }
        Buffered::Partial(read, rest) => {
            flight.release_unshareable();
            tracing::debug!("response larger than the entry cap streams through uncached");
            CacheStatus::Miss.record();
            head.headers
                .insert(CACHE_STATUS_HEADER, CacheStatus::Miss.header_value());
            return Ok(Response::from_parts(head, CacheBody::partial(read, rest)));
        }
    };
    let stored_at = policy.now();
    let expires_at = stored_at + ttl;
    let entry = Arc::new(StoredResponse {
        status,
        headers: storable_headers(&head.headers),
        body,
        stored_at,
        expires_at,
        stale_until: expires_at + policy.max_stale,
    });
    store_entry(&shared, key, Arc::clone(&entry)).await;
    flight.publish(&entry, CacheStatus::Miss);
    CacheStatus::Miss.record();
    head.headers
        .insert(CACHE_STATUS_HEADER, CacheStatus::Miss.header_value());
    Ok(Response::from_parts(
        head,
        CacheBody::full(entry.body.clone()),
    ))
}

async fn call_inner<S, ReqBody, ResBody>(
    inner: &mut S,
    request: Request<ReqBody>,
) -> Result<Response<ResBody>, BoxError>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    inner
        .ready()
        .await
        .map_err(Into::into)?
        .call(request)
        .await
        .map_err(Into::into)
}

/// What a read found, judged against the time.
enum Found {
    Fresh(Arc<StoredResponse>),
    Stale(Arc<StoredResponse>),
    Nothing,
}

async fn lookup(shared: &Arc<Shared>, key: CacheKey, now: SystemTime) -> Found {
    let shared = Arc::clone(shared);
    let read = tokio::task::spawn_blocking(move || match shared.store.read(&key) {
        store::Lookup::Found(entry) if entry.is_fresh(now) => Found::Fresh(entry),
        store::Lookup::Found(entry) if entry.is_usable_stale(now) => Found::Stale(entry),
        store::Lookup::Found(_) => {
            shared.store.remove(&key);
            Found::Nothing
        }
        store::Lookup::Missing | store::Lookup::Corrupt => Found::Nothing,
    });
    read.await.unwrap_or_else(|error| {
        tracing::warn!(error = %error, "cache read task failed; treating as a miss");
        Found::Nothing
    })
}

enum CrossProcess {
    /// Ours to fetch (`None`: without a lock, after an I/O error or a long wait).
    Locked(Option<KeyLock>),
    /// Another process fetched it while we waited.
    Fetched(Arc<StoredResponse>),
}

async fn cross_process(shared: &Arc<Shared>, key: CacheKey) -> CrossProcess {
    let deadline = tokio::time::Instant::now() + LOCK_WAIT_MAX;
    loop {
        let attempt = {
            let shared = Arc::clone(shared);
            tokio::task::spawn_blocking(move || shared.store.try_lock(&key)).await
        };
        match attempt {
            Ok(Ok(TryLock::Acquired(lock))) => return CrossProcess::Locked(Some(lock)),
            Ok(Ok(TryLock::Held)) => {}
            Ok(Err(error)) => {
                tracing::warn!(error = %error, "cache lock failed; fetching without it");
                return CrossProcess::Locked(None);
            }
            Err(error) => {
                tracing::warn!(error = %error, "cache lock task failed; fetching without it");
                return CrossProcess::Locked(None);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!("another process held a cache lock too long; fetching anyway");
            return CrossProcess::Locked(None);
        }
        tokio::time::sleep(LOCK_POLL).await;
        if let Found::Fresh(entry) = lookup(shared, key, shared.policy.now()).await {
            return CrossProcess::Fetched(entry);
        }
    }
}

async fn store_entry(shared: &Arc<Shared>, key: CacheKey, entry: Arc<StoredResponse>) {
    let shared = Arc::clone(shared);
    match tokio::task::spawn_blocking(move || shared.store.write(&key, &entry)).await {
        Ok(Ok(evicted)) => record_evictions(evicted),
        Ok(Err(error)) => tracing::warn!(error = %error, "could not store a cache entry"),
        Err(error) => tracing::warn!(error = %error, "cache write task failed"),
    }
}

fn serve_stale<B>(
    flight: coalesce::Flight,
    entry: &Arc<StoredResponse>,
    now: SystemTime,
) -> Response<CacheBody<B>> {
    flight.publish(entry, CacheStatus::Stale);
    CacheStatus::Stale.record();
    from_entry(entry, CacheStatus::Stale, now)
}

fn pass_through<B>(response: Response<B>) -> Response<CacheBody<B>> {
    CacheStatus::Miss.record();
    let mut response = response.map(CacheBody::inner);
    response
        .headers_mut()
        .insert(CACHE_STATUS_HEADER, CacheStatus::Miss.header_value());
    response
}

fn from_entry<B>(
    entry: &StoredResponse,
    status: CacheStatus,
    now: SystemTime,
) -> Response<CacheBody<B>> {
    let mut response = Response::new(CacheBody::full(entry.body.clone()));
    *response.status_mut() = entry.status;
    let headers = response.headers_mut();
    headers.clone_from(&entry.headers);
    headers.insert(CACHE_STATUS_HEADER, status.header_value());
    if matches!(status, CacheStatus::Hit | CacheStatus::Stale) {
        headers.insert(
            http::header::AGE,
            HeaderValue::from(entry.age(now).as_secs()),
        );
    }
    response
}

/// The response headers worth keeping: not hop-by-hop ones, not `Set-Cookie` (a session is
/// no cached fact), not what the cache adds itself.
fn storable_headers(headers: &HeaderMap) -> HeaderMap {
    let mut kept = headers.clone();
    for name in [
        http::header::CONNECTION,
        http::header::TRANSFER_ENCODING,
        http::header::SET_COOKIE,
        http::header::AGE,
        http::header::HeaderName::from_static("keep-alive"),
        CACHE_STATUS_HEADER,
    ] {
        kept.remove(name);
    }
    kept
}
