//! Embedded adapters for `jobq standalone` and fast tests: a SQLite store (also the
//! dispatch queue), a local-directory artifact store, an in-process event bus, and a
//! built-in token issuer.

pub mod artifacts;
pub mod bus;
pub mod identity;
pub mod sqlite;

pub use artifacts::LocalArtifactStore;
pub use bus::{BusMessage, InProcessBus};
pub use identity::LocalIdentity;
pub use sqlite::SqliteStore;
