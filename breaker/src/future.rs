//! [`ResponseFuture`]: the inner call, reporting its outcome to the breaker when it completes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;
use tollway_core::{BoxError, CircuitOpen, Classify};

use crate::circuit::{Circuit, PackedTicket, Ticket, Verdict};
use crate::hot::Light;

/// Reports a call's result to the breaker; a half-open probe dropped before it reports gives its
/// permit back. Three words, so the response future stays small.
#[derive(Debug)]
pub(crate) struct Recorder {
    circuit: Arc<Circuit>,
    /// `UNTRACKED` once reported, so that dropping it does nothing more.
    ticket: PackedTicket,
    /// See [`Circuit::start`].
    start: u64,
}

impl Recorder {
    #[inline]
    pub(crate) const fn new(circuit: Arc<Circuit>, ticket: Ticket) -> Self {
        Self {
            circuit,
            ticket: PackedTicket::pack(ticket),
            start: 0,
        }
    }

    /// Starts the call's clock (when slow calls are detected).
    #[inline]
    pub(crate) fn started(mut self) -> Self {
        self.start = self.circuit.start();
        self
    }

    #[inline]
    fn finish<B>(mut self, result: &Result<Response<B>, BoxError>) {
        let ticket = std::mem::replace(&mut self.ticket, PackedTicket::UNTRACKED).unpack();
        report(&self.circuit, ticket, result, self.start);
    }
}

/// Judges `result` and records it for `ticket`.
fn report<B>(
    circuit: &Circuit,
    ticket: Ticket,
    result: &Result<Response<B>, BoxError>,
    start: u64,
) {
    let config = circuit.config();
    let verdict = match result {
        Ok(response) if circuit.plainly_succeeded(response.status()) => Verdict::Success,
        Ok(response) => circuit.judge(
            &config
                .classifier
                .classify_response(response.status(), response.headers()),
        ),
        Err(error) => circuit.judge(&config.classifier.classify_error(&**error)),
    };
    circuit.finish(ticket, verdict, start);
}

/// How a response future reports: through the breaker, or (a closed-state call whose result
/// can be judged without the breaker) through its [`Light`] reference, reaching the breaker
/// only when there is something to record.
#[derive(Debug)]
pub(crate) enum Report {
    Full(Recorder),
    Light { light: Light, generation: u64 },
}

impl Report {
    #[inline]
    fn finish<B>(self, result: &Result<Response<B>, BoxError>) {
        match self {
            Self::Full(recorder) => recorder.finish(result),
            Self::Light { light, generation } => {
                // Only the default classifier travels light: below 400 is a success.
                if let Ok(response) = result
                    && response.status().as_u16() < 400
                    && light.words().success_is_a_no_op(generation)
                {
                    return;
                }
                if let Some(circuit) = light.circuit() {
                    report(&circuit, Ticket::Closed { generation }, result, 0);
                }
            }
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Ticket::Probe { generation } = self.ticket.unpack() {
            self.circuit.cancel_probe(generation);
        }
    }
}

pin_project! {
    /// The future a [`Breaker`](crate::Breaker) or [`KeyedBreaker`](crate::KeyedBreaker)
    /// returns: the inner call, or an immediate [`CircuitOpen`] error.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        state: FutureState<F>,
    }
}

pin_project! {
    #[project = FutureStateProj]
    #[derive(Debug)]
    enum FutureState<F> {
        Called {
            #[pin]
            future: F,
            report: Option<Report>,
        },
        Rejected {
            error: Option<CircuitOpen>,
        },
    }
}

impl<F> ResponseFuture<F> {
    #[inline]
    pub(crate) const fn called(future: F, report: Option<Report>) -> Self {
        Self {
            state: FutureState::Called { future, report },
        }
    }

    pub(crate) const fn rejected(error: CircuitOpen) -> Self {
        Self {
            state: FutureState::Rejected { error: Some(error) },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<B>, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            FutureStateProj::Called { future, report } => {
                let result = ready!(future.poll(cx)).map_err(Into::into);
                if let Some(report) = report.take() {
                    report.finish(&result);
                }
                Poll::Ready(result)
            }
            FutureStateProj::Rejected { error } => {
                let error = error
                    .take()
                    .expect("ResponseFuture polled after completion");
                Poll::Ready(Err(Box::new(error)))
            }
        }
    }
}
