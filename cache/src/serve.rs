//! One request through the cache: look up, coalesce, then fetch (see [`Fetch`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response};
use http_body::Body;
use tollway_core::BoxError;
use tower::{Service, ServiceExt};

use crate::body::CacheBody;
use crate::coalesce::{self, Lead, Published, Role};
use crate::disk::{self, CrossProcess, Found, Read};
use crate::fetch::Fetch;
use crate::key::CacheKey;
use crate::layer::Shared;
use crate::respond::{from_entry, pass_through};
use crate::status::CacheStatus;
use crate::store::Lookup;

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

pub(crate) async fn call_inner<S, ReqBody, ResBody>(
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
