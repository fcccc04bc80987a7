//! [`Breaker`]: the middleware service.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tollway_core::{BoxError, CircuitOpen, Clock, SharedClock};
use tower::Service;

use crate::circuit::{Circuit, Ticket};
use crate::config::BreakerConfig;
use crate::future::{Recorder, Report, ResponseFuture};
use crate::handle::BreakerHandle;

/// A circuit breaker around `S`. See the [crate docs](crate) for the model.
///
/// The admission decision is made in `poll_ready`: while the breaker is open, `poll_ready` is
/// immediately ready **without driving the inner service's `poll_ready`**, and the next `call`
/// returns a ready [`CircuitOpen`] error without calling the inner service. A half-open probe
/// permit taken in `poll_ready` is held by the service until `call` (and by the response future
/// after), and given back if either is dropped first. `call` without a prior `poll_ready` does
/// not panic: it decides there and then. A call admitted by `poll_ready` goes through even if
/// the breaker opened before `call`; its result belongs to the earlier generation and is ignored.
///
/// Clones share one breaker.
#[derive(Debug)]
pub struct Breaker<S> {
    inner: S,
    circuit: Arc<Circuit>,
    decision: Decision,
    /// The probe permit taken by `poll_ready`, returned if this service is dropped before `call`.
    probe: Option<Recorder>,
}

#[derive(Debug, Clone, Copy)]
enum Decision {
    Unpolled,
    Admitted(Ticket),
    Rejected(CircuitOpen),
}

impl<S> Breaker<S> {
    /// Wraps `inner` in a new breaker on tokio's clock.
    pub fn new(inner: S, config: BreakerConfig) -> Self {
        Self::with_clock(inner, config, SharedClock::default())
    }

    /// Wraps `inner` in a new breaker reading time from `clock`.
    pub fn with_clock(inner: S, config: BreakerConfig, clock: impl Clock) -> Self {
        Self::from_circuit(inner, Circuit::new(config, SharedClock::new(clock)))
    }

    pub(crate) const fn from_circuit(inner: S, circuit: Arc<Circuit>) -> Self {
        Self {
            inner,
            circuit,
            decision: Decision::Unpolled,
            probe: None,
        }
    }

    /// A handle on this breaker's state (shared with every clone).
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle::new(Arc::clone(&self.circuit))
    }

    /// The inner service.
    pub const fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service; a probe permit this service held is given back.
    pub fn into_inner(self) -> S {
        self.inner
    }

    #[inline]
    fn decide(&mut self) -> Decision {
        match self.circuit.admit() {
            Ok(ticket @ Ticket::Probe { .. }) => {
                self.probe = Some(Recorder::new(Arc::clone(&self.circuit), ticket));
                Decision::Admitted(ticket)
            }
            Ok(ticket) => Decision::Admitted(ticket),
            Err(open) => Decision::Rejected(open),
        }
    }
}

impl<S: Clone> Clone for Breaker<S> {
    fn clone(&self) -> Self {
        Self::from_circuit(self.inner.clone(), Arc::clone(&self.circuit))
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Breaker<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<ResBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // A probe permit already held is kept across Pending polls; anything else is decided
        // afresh, so a breaker that opened meanwhile is seen.
        if self.probe.is_none() {
            self.decision = self.decide();
            if let Decision::Rejected(_) = self.decision {
                return Poll::Ready(Ok(()));
            }
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let decision = match std::mem::replace(&mut self.decision, Decision::Unpolled) {
            Decision::Unpolled => self.decide(),
            decided => decided,
        };
        match decision {
            Decision::Rejected(open) => ResponseFuture::rejected(open),
            Decision::Admitted(Ticket::Untracked) => {
                ResponseFuture::called(self.inner.call(request), None)
            }
            Decision::Admitted(ticket @ Ticket::Closed { generation }) => {
                // The healthy path takes no reference count (see `crate::hot`); a breaker with
                // something in its window records every result through itself, as before.
                let report = match self.circuit.light() {
                    Some(light) if light.words().success_is_a_no_op(generation) => {
                        Report::Light { light, generation }
                    }
                    _ => Report::Full(Recorder::new(Arc::clone(&self.circuit), ticket).started()),
                };
                ResponseFuture::called(self.inner.call(request), Some(report))
            }
            Decision::Admitted(ticket @ Ticket::Probe { .. }) => {
                let recorder = self
                    .probe
                    .take()
                    .unwrap_or_else(|| Recorder::new(Arc::clone(&self.circuit), ticket));
                ResponseFuture::called(
                    self.inner.call(request),
                    Some(Report::Full(recorder.started())),
                )
            }
            Decision::Unpolled => unreachable!("decide() never returns Unpolled"),
        }
    }
}
