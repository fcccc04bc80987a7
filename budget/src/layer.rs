//! The layer that puts a [`Ledger`] in front of a service.

use std::fmt;
use std::sync::Arc;

use http::HeaderName;
use tollway_core::{Classifier, Classify};
use tower::Layer;

use crate::ledger::Ledger;
use crate::policy::{ChargePolicy, Cost};
use crate::service::Budget;

/// Applies [`Budget`] to services: each request reserves its [`Cost`] from the ledger before it is
/// sent and is charged by the [`ChargePolicy`] when its response arrives.
///
/// Cloning the layer (or the services it makes) shares one ledger.
///
/// ```
/// use tollway_budget::{BudgetLayer, ChargePolicy, Cost, Ledger, Window};
///
/// let ledger = Ledger::new(5_000, Window::day());
/// let layer = BudgetLayer::new(ledger.clone())
///     .cost(Cost::per_request(|_, uri, _| if uri.path() == "/search" { 5 } else { 1 }))
///     .charge(ChargePolicy::SuccessOnly)
///     .balance_header("x-balance");
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct BudgetLayer {
    pub(crate) config: Arc<Config>,
}

#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) ledger: Ledger,
    pub(crate) cost: Cost,
    pub(crate) charge: ChargePolicy,
    pub(crate) classifier: Arc<dyn Classify>,
    pub(crate) balance_header: Option<HeaderName>,
}

impl fmt::Debug for BudgetLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BudgetLayer")
            .field("ledger", &self.config.ledger)
            .field("cost", &self.config.cost)
            .field("charge", &self.config.charge)
            .field("balance_header", &self.config.balance_header)
            .finish_non_exhaustive()
    }
}

impl BudgetLayer {
    /// A layer spending from `ledger`: 1 credit per request, charged for successful responses
    /// only, classified by the default [`Classifier`].
    pub fn new(ledger: Ledger) -> Self {
        Self {
            config: Arc::new(Config {
                ledger,
                cost: Cost::default(),
                charge: ChargePolicy::default(),
                classifier: Arc::new(Classifier::default()),
                balance_header: None,
            }),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(Arc::make_mut(&mut self.config));
        self
    }

    /// What each request reserves.
    #[must_use]
    pub fn cost(self, cost: Cost) -> Self {
        self.edit(|c| c.cost = cost)
    }

    /// What each response is charged.
    #[must_use]
    pub fn charge(self, policy: ChargePolicy) -> Self {
        self.edit(|c| c.charge = policy)
    }

    /// How responses and errors are classified (success, 402, ...). A response classified
    /// [`CreditsExhausted`](tollway_core::OutcomeKind::CreditsExhausted) latches the ledger.
    #[must_use]
    pub fn classifier(self, classifier: impl Classify) -> Self {
        self.edit(|c| c.classifier = Arc::new(classifier))
    }

    /// Syncs the ledger's balance from this response header (credits left on the account)
    /// whenever a response carries it. A malformed value is ignored.
    ///
    /// # Panics
    ///
    /// If `name` is not a valid header name.
    #[must_use]
    pub fn balance_header(self, name: &str) -> Self {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("a valid header name");
        self.edit(|c| c.balance_header = Some(name))
    }

    /// The ledger this layer spends from.
    pub fn ledger(&self) -> &Ledger {
        &self.config.ledger
    }
}

impl<S> Layer<S> for BudgetLayer {
    type Service = Budget<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Budget::from_config(inner, Arc::clone(&self.config))
    }
}
