//! The domain's errors: the kinds of `DOMAIN.md` §1.6.
//!
//! `not-found` and `concurrency` are the framework's own [`Error::NotFound`] and
//! [`Error::Conflict`] (the repositories raise them); the other kinds are a [`DomainError`],
//! carried through the framework as [`Error::Domain`] so that handlers return one error type.
//! Every domain error fails the message, which the processor redelivers and eventually
//! dead-letters (project decision 4).

use cqrs_core::Error;

/// `Result` with [`DomainError`] as the default error type.
pub type DomainResult<T, E = DomainError> = std::result::Result<T, E>;

/// A rule of the registration domain refused an operation; nothing was emitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DomainError {
    /// `validation`: a command or admin form fails boundary validation.
    #[error("{field}: {message}")]
    Validation {
        /// The field at fault.
        field: String,
        /// What is wrong, in words for the person who typed it.
        message: String,
    },
    /// `invalid-state`: the operation is not allowed in the current state.
    #[error("{0}")]
    InvalidState(String),
    /// `invalid-argument`: an argument names something that does not exist, or is missing.
    #[error("{argument}: {message}")]
    InvalidArgument {
        /// The argument at fault.
        argument: String,
        /// What is wrong with it.
        message: String,
    },
    /// `invalid-data`: pricing met a seat type unknown for the conference.
    #[error("{0}")]
    InvalidData(String),
    /// `not-found`: an entity that is not an event-sourced aggregate does not exist.
    #[error("{entity}: {id}")]
    NotFound {
        /// The entity type.
        entity: String,
        /// The id that was looked up.
        id: String,
    },
    /// `duplicate`: a unique name is already taken.
    #[error("{0}")]
    Duplicate(String),
}

impl DomainError {
    /// A `validation` error on `field`.
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation {
            field: field.into(),
            message: message.into(),
        }
    }

    /// An `invalid-state` error.
    pub fn invalid_state(message: impl Into<String>) -> Self {
        Self::InvalidState(message.into())
    }

    /// An `invalid-argument` error on `argument`.
    pub fn invalid_argument(argument: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            argument: argument.into(),
            message: message.into(),
        }
    }

    /// A `not-found` error.
    pub fn not_found(entity: impl Into<String>, id: &impl ToString) -> Self {
        Self::NotFound {
            entity: entity.into(),
            id: id.to_string(),
        }
    }

    /// The kind's name as `DOMAIN.md` §1.6 spells it (`"invalid-state"`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Validation { .. } => "validation",
            Self::InvalidState(_) => "invalid-state",
            Self::InvalidArgument { .. } => "invalid-argument",
            Self::InvalidData(_) => "invalid-data",
            Self::NotFound { .. } => "not-found",
            Self::Duplicate(_) => "duplicate",
        }
    }
}

impl From<DomainError> for Error {
    fn from(error: DomainError) -> Self {
        match error {
            DomainError::NotFound { entity, id } => Error::NotFound { entity, id },
            other => Error::domain(other),
        }
    }
}

/// The `DOMAIN.md` §1.6 kind of any error a handler returns: the domain's own kinds,
/// `not-found` and `concurrency` from the framework, `None` for infrastructure failures.
pub fn kind_of(error: &Error) -> Option<&'static str> {
    match error {
        Error::NotFound { .. } => Some("not-found"),
        Error::Conflict { .. } => Some("concurrency"),
        other => other.as_domain::<DomainError>().map(DomainError::kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_survive_the_trip_through_the_framework_error() {
        let state: Error = DomainError::invalid_state("Cannot modify a confirmed order.").into();
        assert_eq!(kind_of(&state), Some("invalid-state"));
        assert_eq!(state.to_string(), "Cannot modify a confirmed order.");
        assert!(!state.is_retryable());
        let missing: Error = DomainError::not_found("Payment", &42).into();
        assert!(matches!(missing, Error::NotFound { .. }));
        assert_eq!(missing.to_string(), "Payment: 42");
        assert_eq!(kind_of(&Error::transient("down")), None);
    }
}
