//! Why the transaction user's request to the layer was refused.

use std::fmt;

use crate::effects::TxId;
use crate::key::KeyError;

/// A refused call to [`crate::TransactionTable`].
///
/// Every variant is a normal outcome on a network-facing server (floods,
/// duplicates, late responses from the TU), never a reason to panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxError {
    /// The table holds [`crate::Config::max_transactions`] transactions
    /// already. The proxy answers the request with `503 Service
    /// Unavailable` (statelessly) or fails the branch.
    Full,
    /// A transaction with the same key exists (a retransmission that
    /// should have been absorbed, or a branch id used twice).
    Exists(TxId),
    /// ACK never creates a transaction: the ACK of a non-2xx response is
    /// part of the INVITE transaction and the ACK of a 2xx is forwarded
    /// without one (RFC 3261 17.1.1.3, 17.2.1).
    Ack,
    /// A request was expected.
    NotRequest,
    /// The message cannot be matched to transactions (no usable top Via,
    /// branch or CSeq).
    Key(KeyError),
    /// No such transaction: it never existed or has terminated. A 2xx for
    /// an INVITE whose server transaction already sent a 2xx ends up here;
    /// the proxy forwards it statelessly (RFC 3261 16.7 step 10, 17.2.1).
    NoSuchTransaction,
    /// The status code is outside 100..=699.
    InvalidStatus(u16),
    /// The transaction already sent its final response; further responses
    /// are discarded (RFC 3261 17.2.1, 17.2.2).
    FinalSent,
}

impl TxError {
    /// A short fixed phrase for logs.
    pub fn reason(&self) -> &'static str {
        match self {
            TxError::Full => "transaction table full",
            TxError::Exists(_) => "transaction exists",
            TxError::Ack => "ACK has no transaction",
            TxError::NotRequest => "not a request",
            TxError::Key(k) => k.reason(),
            TxError::NoSuchTransaction => "no such transaction",
            TxError::InvalidStatus(_) => "invalid status code",
            TxError::FinalSent => "final response already sent",
        }
    }
}

impl fmt::Display for TxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for TxError {}

impl From<KeyError> for TxError {
    fn from(e: KeyError) -> TxError {
        TxError::Key(e)
    }
}
