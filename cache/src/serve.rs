//! One request through the cache: look up, coalesce, fetch or revalidate, store.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body::Body;
use tollway_core::{BoxError, Classify};
use tower::{Service, ServiceExt};

use crate::body::CacheBody;
use crate::buffer::{Buffered, buffer};
use crate::coalesce::{self, Lead, Published, Role};
use crate::disk::{self, CrossProcess, Found, Read};
use crate::entry::StoredResponse;
use crate::error::RevalidationMismatch;
use crate::freshness::RequestView;
use crate::key::CacheKey;
use crate::layer::Shared;
use crate::policy::{Decision, may_serve_stale};
use crate::respond::{from_entry, pass_through, storable_headers};
use crate::revalidate;
use crate::status::{CACHE_STATUS_HEADER, CacheStatus};
use crate::store::{Lookup, RemoveIf};

/// What [`start`] settled on the calling task.
pub(crate) enum Start<B> {
    /// A hit: the response.
    Hit(Response<CacheBody<B>>),
    /// The cache has no part in this request: straight to the inner service.
    PassThrough,
    /// The rest needs waiting: for a large file, the upstream, other callers.
    Cached(Plan),
}

/// How far [`start`] got with a cacheable request.
pub(crate) struct Plan {
    key: CacheKey,
    fresh_ok: bool,
    route_ttl: Duration,
    read: Read,
}

/// The part of a request that never waits, run in `call`: the key, the memory tier, and a
/// small file's read. Hits end here, with no future to box.
pub(crate) fn start<B>(shared: &Shared, parts: &Parts) -> Start<B> {
    let policy = &shared.policy;
    if !policy.is_cacheable_request(parts) {
        return Start::PassThrough;
    }
    let key = policy.key.key(
        shared.store.secret(),
        &parts.method,
        &parts.uri,
        &parts.headers,
    );
    let fresh_ok = !policy.request_forces_revalidation(&parts.headers);
    if fresh_ok && let Some(entry) = shared.store.read_memory(&key) {
        let now = policy.now();
        if entry.is_fresh(now) {
            CacheStatus::Hit.record();
            return Start::Hit(from_entry(&entry, CacheStatus::Hit, now));
        }
    }
    let route_ttl = policy.route_ttl(parts);
    if route_ttl.is_zero() && policy.not_found_ttl.is_none() {
        // Nothing on this route is ever stored: do not make callers queue for it.
        return Start::PassThrough;
    }
    // A fresh entry on disk needs no flight: most hits end here.
    let read = disk::read_here(shared, &key);
    if let Read::Done(Lookup::Found(entry)) = &read {
        let now = policy.now();
        if fresh_ok && entry.is_fresh(now) {
            CacheStatus::Hit.record();
            return Start::Hit(from_entry(entry, CacheStatus::Hit, now));
        }
    }
    Start::Cached(Plan {
        key,
        fresh_ok,
        route_ttl,
        read,
    })
}

/// The rest of a request [`start`] could not settle.
pub(crate) async fn serve<S, ReqBody, ResBody>(
    shared: Arc<Shared>,
    mut inner: S,
    parts: Parts,
    body: ReqBody,
    plan: Option<Plan>,
) -> Result<Response<CacheBody<ResBody>>, BoxError>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    let policy = &shared.policy;
    let Some(Plan {
        key,
        fresh_ok,
        route_ttl,
        read,
    }) = plan
    else {
        let response = call_inner(&mut inner, Request::from_parts(parts, body)).await?;
        return Ok(pass_through(response));
    };
    let found = disk::finish(&shared, key, read, fresh_ok).await;
    if let Found::Fresh(entry) = found {
        CacheStatus::Hit.record();
        return Ok(from_entry(&entry, CacheStatus::Hit, policy.now()));
    }
    if !fresh_ok {
        // The caller insists on the origin's word: it shares no one's answer.
        let stale = match found {
            Found::Stale(entry) => Some(entry),
            _ => None,
        };
        let fetch = Fetch {
            shared: &shared,
            key,
            route_ttl,
        };
        return fetch
            .run(&mut inner, parts, body, stale, Lead::alone())
            .await;
    }

    let lead = loop {
        match shared.flights.join(key) {
            Role::Leader(flight) => break Some(flight),
            Role::Waiter(slot) => match coalesce::wait(slot).await {
                Some(Published {
                    entry: Some(entry),
                    how,
                }) => {
                    let status = match how {
                        CacheStatus::Miss | CacheStatus::Revalidated => CacheStatus::Coalesced,
                        how => how,
                    };
                    status.record();
                    return Ok(from_entry(&entry, status, policy.now()));
                }
                Some(Published { entry: None, .. }) => break None,
                None => tracing::debug!("coalesced request's leader failed; taking over"),
            },
        }
    };
    let Some(flight) = lead else {
        // The leader's response could not be shared: send our own, at once.
        let response = call_inner(&mut inner, Request::from_parts(parts, body)).await?;
        return Ok(pass_through(response));
    };

    // Read again as the leader: one that finished just before we joined has written it.
    let mut stale = match disk::lookup(&shared, key, true).await {
        Found::Fresh(entry) => {
            flight.publish(&entry, CacheStatus::Hit);
            CacheStatus::Hit.record();
            return Ok(from_entry(&entry, CacheStatus::Hit, policy.now()));
        }
        Found::Stale(entry) => Some(entry),
        Found::Nothing => None,
    };
    let _lock = if policy.cross_process {
        match disk::cross_process(&shared, key, stale).await {
            CrossProcess::Locked {
                lock,
                stale: newest,
            } => {
                stale = newest;
                lock
            }
            CrossProcess::Fetched(entry) => {
                flight.publish(&entry, CacheStatus::Miss);
                CacheStatus::Coalesced.record();
                return Ok(from_entry(&entry, CacheStatus::Coalesced, policy.now()));
            }
        }
    } else {
        None
    };
    let fetch = Fetch {
        shared: &shared,
        key,
        route_ttl,
    };
    fetch
        .run(&mut inner, parts, body, stale, Lead::flight(flight))
        .await
}

/// A leader's (or a lone caller's) trip upstream for one key.
struct Fetch<'a> {
    shared: &'a Arc<Shared>,
    key: CacheKey,
    route_ttl: Duration,
}

impl Fetch<'_> {
    async fn run<S, ReqBody, ResBody>(
        &self,
        inner: &mut S,
        mut parts: Parts,
        body: ReqBody,
        stale: Option<Arc<StoredResponse>>,
        lead: Lead,
    ) -> Result<Response<CacheBody<ResBody>>, BoxError>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>>,
        S::Error: Into<BoxError>,
        ResBody: Body<Data = Bytes>,
        ResBody::Error: Into<BoxError>,
    {
        let policy = &self.shared.policy;
        let revalidating = stale
            .as_ref()
            .filter(|_| policy.revalidates(&parts.method))
            .filter(|entry| revalidate::make_conditional(&mut parts.headers, entry))
            .cloned();
        let request = policy.freshness.is_http().then(|| RequestView {
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
        });
        let response = match call_inner(inner, Request::from_parts(parts, body)).await {
            Ok(response) => response,
            Err(error) => {
                let outcome = policy.classifier.classify_error(&*error);
                if let Some(stale) =
                    usable_stale(&stale, policy.now(), || may_serve_stale(&outcome))
                {
                    tracing::warn!(error = %error, "upstream failed; serving a stale entry");
                    return Ok(serve_stale(lead, &stale, self.shared));
                }
                lead.hand_over();
                return Err(error);
            }
        };
        if let Some(entry) = revalidating.filter(|_| response.status() == StatusCode::NOT_MODIFIED)
        {
            return self
                .not_modified(entry, response, request.as_ref(), lead)
                .await;
        }

        let status = response.status();
        let outcome = policy.classifier.classify(&response);
        if let Some(stale) = usable_stale(&stale, policy.now(), || may_serve_stale(&outcome)) {
            tracing::warn!(
                status = status.as_u16(),
                "upstream failed; serving a stale entry"
            );
            return Ok(serve_stale(lead, &stale, self.shared));
        }
        let now = policy.now();
        let lifetimes = match policy.decide(
            self.route_ttl,
            &outcome,
            status,
            response.headers(),
            request.as_ref(),
            now,
        ) {
            Decision::Store(lifetimes) => lifetimes,
            Decision::Unshareable => {
                lead.release_unshareable();
                return Ok(pass_through(response));
            }
            Decision::Failure => {
                lead.hand_over();
                return Ok(pass_through(response));
            }
        };

        let (mut head, body) = response.into_parts();
        let body = match buffer(body, policy.max_entry_bytes)
            .await
            .map_err(Into::into)?
        {
            Buffered::Whole(bytes) => bytes,
            Buffered::Untouched(body) => {
                lead.release_unshareable();
                return Ok(pass_through(Response::from_parts(head, body)));
            }
            Buffered::Partial(read, rest) => {
                lead.release_unshareable();
                tracing::debug!("response larger than the entry cap streams through uncached");
                CacheStatus::Miss.record();
                head.headers
                    .insert(CACHE_STATUS_HEADER, CacheStatus::Miss.header_value());
                return Ok(Response::from_parts(head, CacheBody::partial(read, rest)));
            }
        };
        CacheStatus::Miss.record();
        if !policy.accepts(&head, &body) {
            tracing::debug!(
                status = status.as_u16(),
                "the application rejected a response; not stored"
            );
            lead.hand_over();
            head.headers
                .insert(CACHE_STATUS_HEADER, CacheStatus::Miss.header_value());
            return Ok(Response::from_parts(head, CacheBody::full(body)));
        }
        let [expires_at, stale_until, keep_until] = lifetimes.deadlines(now);
        let entry = Arc::new(StoredResponse {
            status,
            headers: storable_headers(&head.headers),
            body,
            stored_at: now,
            expires_at,
            stale_until,
            keep_until,
        });
        disk::store(self.shared, self.key, Arc::clone(&entry)).await;
        lead.publish(&entry, CacheStatus::Miss);
        head.headers
            .insert(CACHE_STATUS_HEADER, CacheStatus::Miss.header_value());
        Ok(Response::from_parts(
            head,
            CacheBody::full(entry.body.clone()),
        ))
    }

    /// The origin answered our revalidation with `304 Not Modified`: serve the stored body,
    /// with the headers the `304` updated, and store it again for a new lifetime.
    async fn not_modified<ResBody>(
        &self,
        entry: Arc<StoredResponse>,
        response: Response<ResBody>,
        request: Option<&RequestView>,
        lead: Lead,
    ) -> Result<Response<CacheBody<ResBody>>, BoxError> {
        let policy = &self.shared.policy;
        let Ok(headers) = revalidate::refresh(&entry, response.headers()) else {
            tracing::warn!("a 304 named another version than the cached one; entry dropped");
            disk::remove(self.shared, self.key, RemoveIf::Always).await;
            lead.hand_over();
            return Err(Box::new(RevalidationMismatch::new()));
        };
        drop(response);
        let headers = storable_headers(&headers);
        let now = policy.now();
        let outcome = policy.classifier.classify_response(entry.status, &headers);
        let decision = policy.decide(
            self.route_ttl,
            &outcome,
            entry.status,
            &headers,
            request,
            now,
        );
        let (mut head, ()) = Response::new(()).into_parts();
        head.status = entry.status;
        head.headers = headers;
        let lifetimes = match decision {
            Decision::Store(lifetimes) if policy.accepts(&head, &entry.body) => Some(lifetimes),
            _ => None,
        };
        let Some(lifetimes) = lifetimes else {
            // Current, by the origin's word, but no longer to be stored.
            disk::remove(self.shared, self.key, RemoveIf::Always).await;
            lead.hand_over();
            CacheStatus::Revalidated.record();
            let mut response = Response::from_parts(head, CacheBody::full(entry.body.clone()));
            response
                .headers_mut()
                .insert(CACHE_STATUS_HEADER, CacheStatus::Revalidated.header_value());
            return Ok(response);
        };
        let [expires_at, stale_until, keep_until] = lifetimes.deadlines(now);
        let refreshed = Arc::new(StoredResponse {
            status: entry.status,
            headers: head.headers,
            body: entry.body.clone(),
            stored_at: now,
            expires_at,
            stale_until,
            keep_until,
        });
        disk::store(self.shared, self.key, Arc::clone(&refreshed)).await;
        lead.publish(&refreshed, CacheStatus::Revalidated);
        CacheStatus::Revalidated.record();
        Ok(from_entry(&refreshed, CacheStatus::Revalidated, now))
    }
}

/// The stale entry, if it is within its stale-if-error window at `now` and `failed` says the
/// upstream failed.
fn usable_stale(
    stale: &Option<Arc<StoredResponse>>,
    now: std::time::SystemTime,
    failed: impl FnOnce() -> bool,
) -> Option<Arc<StoredResponse>> {
    stale
        .as_ref()
        .filter(|entry| entry.is_usable_stale(now))
        .filter(|_| failed())
        .cloned()
}

fn serve_stale<B>(
    lead: Lead,
    entry: &Arc<StoredResponse>,
    shared: &Shared,
) -> Response<CacheBody<B>> {
    lead.publish(entry, CacheStatus::Stale);
    CacheStatus::Stale.record();
    from_entry(entry, CacheStatus::Stale, shared.policy.now())
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
