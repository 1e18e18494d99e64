//! jobq-common: the domain types, configuration, ports and their adapters shared by
//! every jobq part, and telemetry set-up.

#[doc(hidden)]
pub mod conformance;
pub mod domain;
pub mod embedded;
pub mod error;
pub mod idempotency;
#[doc(hidden)]
pub mod idempotency_conformance;
pub mod kafka;
pub mod lifecycle;
pub mod metrics;
pub mod mongo;
pub mod oidc;
pub mod plan;
pub mod ports;
pub mod repo_url;
pub mod s3;
pub mod scheduling;
pub mod settings;
pub mod shutdown;
pub mod store;
pub mod telemetry;

pub use error::{ErrorKind, PortError, PortResult};
