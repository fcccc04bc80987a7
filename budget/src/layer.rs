//! The layer that puts a [`Ledger`] in front of a service.

use std::fmt;
use std::sync::Arc;

use http::HeaderName;
use tollway_core::{Classifier, Classify};
use tower::Layer;

use crate::ledger::Ledger;
use crate::policy::{ChargePolicy, Cost};
use crate::service::Budget;
use crate::store::{DynStore, MemoryStore, Store};

/// Applies [`Budget`] to services: each request reserves its [`Cost`] from the ledger before it
/// waits for anything else (a rate permit, a connection) and is charged by the [`ChargePolicy`]
/// when its response arrives.
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
pub struct BudgetLayer<St: Store = MemoryStore> {
    pub(crate) config: Arc<Config<St>>,
}

pub(crate) struct Config<St: Store> {
    pub(crate) ledger: Ledger<St>,
    pub(crate) cost: Cost,
    pub(crate) charge: ChargePolicy,
    pub(crate) classifier: Arc<dyn Classify>,
    pub(crate) balance_header: Option<HeaderName>,
}

impl<St: Store> Clone for Config<St> {
    fn clone(&self) -> Self {
        Self {
            ledger: self.ledger.clone(),
            cost: self.cost.clone(),
            charge: self.charge.clone(),
            classifier: Arc::clone(&self.classifier),
            balance_header: self.balance_header.clone(),
        }
    }
}

impl<St: Store> Clone for BudgetLayer<St> {
    fn clone(&self) -> Self {
        Self {
            config: Arc::clone(&self.config),
        }
    }
}

impl<St: Store> fmt::Debug for BudgetLayer<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BudgetLayer")
            .field("ledger", &self.config.ledger)
            .field("cost", &self.config.cost)
            .field("charge", &self.config.charge)
            .field("balance_header", &self.config.balance_header)
            .finish_non_exhaustive()
    }
}

impl<St: Store> BudgetLayer<St> {
    /// A layer spending from `ledger`: 1 credit per request, charged for successful responses
    /// only, classified by the default [`Classifier`].
    pub fn new(ledger: Ledger<St>) -> Self {
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

    fn edit(mut self, f: impl FnOnce(&mut Config<St>)) -> Self {
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
    /// whenever a response carries it. A malformed value is ignored, and so is a balance read
    /// by a request sent before a 402 latched the ledger.
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
    pub fn ledger(&self) -> &Ledger<St> {
        &self.config.ledger
    }

    /// This layer over [`Ledger::to_dyn`]: one type whatever the store.
    pub fn to_dyn(&self) -> BudgetLayer<DynStore> {
        BudgetLayer {
            config: Arc::new(Config {
                ledger: self.config.ledger.to_dyn(),
                cost: self.config.cost.clone(),
                charge: self.config.charge.clone(),
                classifier: Arc::clone(&self.config.classifier),
                balance_header: self.config.balance_header.clone(),
            }),
        }
    }
}

impl<S, St: Store> Layer<S> for BudgetLayer<St> {
    type Service = Budget<S, St>;

    fn layer(&self, inner: S) -> Self::Service {
        Budget::from_config(inner, Arc::clone(&self.config))
    }
}
