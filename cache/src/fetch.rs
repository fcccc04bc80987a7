//! A leader's (or a lone caller's) trip upstream for one key: the request (conditional when
//! revalidating), the decision to store, share or hand over, and the store.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body::Body;
use tollway_core::{BoxError, Classify};
use tower::Service;

use crate::body::CacheBody;
use crate::buffer::{Buffered, buffer};
use crate::coalesce::Lead;
use crate::disk;
use crate::entry::StoredResponse;
use crate::error::RevalidationMismatch;
use crate::freshness::RequestView;
use crate::key::CacheKey;
use crate::layer::Shared;
use crate::policy::{Decision, may_serve_stale};
use crate::respond::{from_entry, pass_through, storable_headers};
use crate::revalidate;
use crate::serve::call_inner;
use crate::status::{CACHE_STATUS_HEADER, CacheStatus};
use crate::store::RemoveIf;

/// A leader's (or a lone caller's) trip upstream for one key.
pub(crate) struct Fetch<'a> {
    pub(crate) shared: &'a Arc<Shared>,
    pub(crate) key: CacheKey,
    pub(crate) route_ttl: Duration,
}

impl Fetch<'_> {
    pub(crate) async fn run<S, ReqBody, ResBody>(
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
