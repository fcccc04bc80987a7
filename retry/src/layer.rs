use std::sync::Arc;

use tower::Layer;

use crate::policy::RetryPolicy;
use crate::service::Retry;

/// Wraps services in [`Retry`]. Every service it builds shares the policy's retry budget.
#[derive(Debug, Clone)]
pub struct RetryLayer {
    policy: Arc<RetryPolicy>,
}

impl RetryLayer {
    /// A layer applying `policy`.
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            policy: Arc::new(policy),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }
}

impl Default for RetryLayer {
    /// The default [`RetryPolicy`].
    fn default() -> Self {
        Self::new(RetryPolicy::default())
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry::from_shared(inner, Arc::clone(&self.policy))
    }
}
