//! [`ResponseFuture`]: one request's attempts, as a state machine.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use http::request::Parts;
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tollway_core::error::is_local_rejection;
use tollway_core::{BoxError, Outcome};
use tower::Service;

use crate::backoff::BackoffState;
use crate::body::{Buffer, Replay, ReplayBody};
use crate::budget::Withdrawal;
use crate::error::RequestFailed;
use crate::extensions::{Attempts, RetriesStopped, StopReason};
use crate::observe;
use crate::policy::RetryPolicy;
use tollway_core::RetryAfterTooLong;

pin_project! {
    /// The future [`Retry`](crate::Retry) returns.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<ReplayBody<B>>>,
    {
        #[pin]
        state: State<S::Future, B>,
        policy: Arc<RetryPolicy>,
        attempts: u32,
        resend: Resend<S>,
    }

    impl<S, B> PinnedDrop for ResponseFuture<S, B>
    where
        S: Service<Request<ReplayBody<B>>>,
    {
        fn drop(this: Pin<&mut Self>) {
            // Dropped between deciding a retry and sending it (an outer timeout, say): the
            // retry was never made, so the budget gets it back.
            let this = this.project();
            if let Resend::Possible(resender) = this.resend
                && let Some(withdrawal) = resender.withdrawal.take()
                && let Some(budget) = &this.policy.budget
            {
                budget.refund(withdrawal);
            }
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        /// Reading the body into memory before the first send.
        Buffering { body: Option<Pin<Box<B>>>, buffer: Box<Buffer> },
        Calling { #[pin] future: F },
        Waiting { #[pin] sleep: Sleep },
        Readying,
    }
}

/// What a resend needs, or why there will be none. Kept inline (not boxed): an allocation per
/// request is a measurable share of the success path.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Resend<S> {
    Never(StopReason),
    Possible(Resender<S>),
}

pub(crate) struct Resender<S> {
    /// The service polled ready for the first send; resends poll it again.
    service: S,
    /// The request head, kept for every attempt.
    parts: Parts,
    replay: Replay,
    backoff: BackoffState,
    started: Option<Instant>,
    /// The budget's retry for the resend being waited for, until it is sent.
    withdrawal: Option<Withdrawal>,
}

impl<S> Resend<S> {
    pub(crate) fn possible(service: S, parts: Parts, started: Option<Instant>) -> Self {
        Self::Possible(Resender {
            service,
            parts,
            replay: Replay::default(),
            backoff: BackoffState::default(),
            started,
            withdrawal: None,
        })
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Buffering { .. } => "buffering",
            State::Calling { .. } => "calling",
            State::Waiting { .. } => "waiting",
            State::Readying => "readying",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

enum Step<R> {
    Done(Result<R, BoxError>),
    RetryAfter(Duration),
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>>,
{
    /// The first send is already made.
    pub(crate) fn called(future: S::Future, policy: Arc<RetryPolicy>, resend: Resend<S>) -> Self {
        policy.metrics.attempt();
        Self {
            state: State::Calling { future },
            policy,
            attempts: 1,
            resend,
        }
    }

    /// A request with an empty body: its first send goes now, from the resender.
    pub(crate) fn called_first(policy: Arc<RetryPolicy>, mut resend: Resend<S>) -> Self {
        let Resend::Possible(resender) = &mut resend else {
            unreachable!("only a resendable request has a resender")
        };
        let request = Request::from_parts(resender.parts.clone(), resender.replay.body());
        let future = resender.service.call(request);
        Self::called(future, policy, resend)
    }

    /// The body is read into memory first, then sent by the resender's service.
    pub(crate) fn buffering(
        body: B,
        limit: u64,
        policy: Arc<RetryPolicy>,
        resend: Resend<S>,
    ) -> Self {
        Self {
            state: State::Buffering {
                body: Some(Box::pin(body)),
                buffer: Box::new(Buffer::new(limit)),
            },
            policy,
            attempts: 0,
            resend,
        }
    }
}

impl<S, B, ResB> Future for ResponseFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<ResB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Buffering { body, buffer } => {
                    let Resend::Possible(resender) = this.resend else {
                        unreachable!("only a resendable request is buffered")
                    };
                    let reading = body.as_mut().expect("the body until it is read");
                    let filled = ready!(buffer.poll_fill(reading.as_mut(), cx));
                    let body = body.take().expect("the body until it is read");
                    *this.attempts = 1;
                    this.policy.metrics.attempt();
                    let future = match filled {
                        Ok(replay) => {
                            resender.replay = replay;
                            let request =
                                Request::from_parts(resender.parts.clone(), resender.replay.body());
                            resender.service.call(request)
                        }
                        // The body sent more than it declared: it goes once, as it came.
                        Err(Ok(())) => {
                            let Resend::Possible(resender) = std::mem::replace(
                                this.resend,
                                Resend::Never(StopReason::BodyOversize),
                            ) else {
                                unreachable!("checked above")
                            };
                            let Resender {
                                mut service, parts, ..
                            } = resender;
                            service.call(Request::from_parts(parts, buffer.resume(body)))
                        }
                        // The caller's own body failed: nothing was sent.
                        Err(Err(error)) => {
                            *this.attempts = 0;
                            return Poll::Ready(Err(error.into()));
                        }
                    };
                    this.state.set(State::Calling { future });
                }
                StateProj::Calling { future } => {
                    let result = ready!(future.poll(cx)).map_err(Into::into);
                    match decide(this.policy, *this.attempts, this.resend, result) {
                        Step::Done(result) => return Poll::Ready(result),
                        Step::RetryAfter(delay) if delay.is_zero() => {
                            this.state.set(State::Readying);
                        }
                        Step::RetryAfter(delay) => this.state.set(State::Waiting {
                            sleep: tokio::time::sleep(delay),
                        }),
                    }
                }
                StateProj::Waiting { sleep } => {
                    ready!(sleep.poll(cx));
                    this.state.set(State::Readying);
                }
                StateProj::Readying => {
                    let Resend::Possible(resender) = this.resend else {
                        unreachable!("only a resendable request waits for a resend")
                    };
                    if let Err(error) = ready!(resender.service.poll_ready(cx)) {
                        return Poll::Ready(Err(failed(error.into(), *this.attempts, None)));
                    }
                    let request =
                        Request::from_parts(resender.parts.clone(), resender.replay.body());
                    *this.attempts += 1;
                    this.policy.metrics.attempt();
                    this.policy.metrics.retry();
                    tracing::debug!(
                        "http.request.resend_count" = *this.attempts - 1,
                        "resending request"
                    );
                    let future = resender.service.call(request);
                    resender.withdrawal = None;
                    this.state.set(State::Calling { future });
                }
            }
        }
    }
}

/// What to do after an attempt ended with `result`.
fn decide<S, ResB>(
    policy: &RetryPolicy,
    attempts: u32,
    resend: &mut Resend<S>,
    result: Result<Response<ResB>, BoxError>,
) -> Step<Response<ResB>> {
    let outcome = match &result {
        // The common case, decided without classifying: a plain success under the default
        // classifier.
        Ok(response) if policy.plain_statuses && response.status().as_u16() < 400 => {
            return Step::Done(finish(result, attempts, None));
        }
        Ok(response) => policy
            .classifier
            .classify_response(response.status(), response.headers()),
        Err(error) => policy.classifier.classify_error(&**error),
    };
    if !outcome.is_retryable() {
        return Step::Done(finish(result, attempts, None));
    }
    let stop = |reason: StopReason, result| {
        observe::stop(&policy.metrics, reason, attempts, outcome.kind().as_str());
        Step::Done(finish(result, attempts, Some(reason)))
    };
    let resender = match resend {
        Resend::Never(reason) => return stop(*reason, result),
        Resend::Possible(resender) => resender,
    };
    if attempts >= policy.max_attempts {
        return stop(StopReason::MaxAttempts, result);
    }
    let hint = upstream_wait(policy, &outcome);
    if let Some(wait) = hint
        && wait > policy.max_retry_after
    {
        observe::give_up(
            &policy.metrics,
            "retry_after_too_long",
            attempts,
            outcome.kind().as_str(),
        );
        return Step::Done(Err(Box::new(RetryAfterTooLong::new(
            wait,
            policy.max_retry_after,
            attempts,
        ))));
    }
    let backoff = policy
        .backoff
        .next_delay(&mut resender.backoff, &policy.rng);
    let delay = hint.map_or(backoff, |wait| backoff.max(wait));
    if let (Some(deadline), Some(started)) = (policy.deadline, resender.started) {
        let elapsed = policy.clock.now().saturating_duration_since(started);
        if elapsed.saturating_add(delay) > deadline {
            return stop(StopReason::Deadline, result);
        }
    }
    if let Some(budget) = &policy.budget {
        match budget.take() {
            Some(withdrawal) => resender.withdrawal = Some(withdrawal),
            None => return stop(StopReason::BudgetExhausted, result),
        }
    }
    tracing::debug!(
        attempts,
        outcome = outcome.kind().as_str(),
        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        "retrying"
    );
    Step::RetryAfter(delay)
}

/// The upstream's requested wait, rounded up to whole milliseconds so the resend never goes
/// out before the time it named.
fn upstream_wait(policy: &RetryPolicy, outcome: &Outcome) -> Option<Duration> {
    let wait = outcome.retry_after()?.delay_from(policy.clock.system_now());
    let millis = wait.as_millis() + u128::from(wait.as_nanos() % 1_000_000 != 0);
    Some(Duration::from_millis(
        u64::try_from(millis).unwrap_or(u64::MAX),
    ))
}

/// The final result: a response that was resent, or whose retryable outcome was not retried,
/// carries [`Attempts`] (and why); an error is wrapped in [`RequestFailed`] unless it is another
/// layer's refusal. A first-try answer carries nothing: inserting the first extension into a
/// response allocates, a measurable share of the success path.
fn finish<ResB>(
    result: Result<Response<ResB>, BoxError>,
    attempts: u32,
    stopped: Option<StopReason>,
) -> Result<Response<ResB>, BoxError> {
    match result {
        Ok(mut response) => {
            if attempts > 1 || stopped.is_some() {
                let extensions = response.extensions_mut();
                extensions.insert(Attempts(attempts));
                if let Some(reason) = stopped {
                    extensions.insert(RetriesStopped(reason));
                }
            }
            Ok(response)
        }
        Err(error) => Err(failed(error, attempts, stopped)),
    }
}

fn failed(error: BoxError, attempts: u32, stopped: Option<StopReason>) -> BoxError {
    if is_local_rejection(&*error) || error.is::<RequestFailed>() {
        error
    } else {
        Box::new(RequestFailed::new(attempts, stopped, error))
    }
}
