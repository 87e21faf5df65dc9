//! Source adapters: where a source's data lives and who may change it.
//!
//! A RhoConnect server asks the application's adapter for a source's data (`query`) and hands it
//! the clients' changes (`create`, `update`, `delete`) and searches. Our server keeps the
//! master document (what the backend holds, as last seen) itself; the adapter supplies the
//! initial data, validates and persists changes, and may refuse them with a message, which reaches
//! the client as a `create-error` / `update-error` / `delete-error`.

use crate::obj::Obj;

/// An adapter's refusal or failure; the message reaches clients verbatim.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AdapterError(pub String);

/// One source's backend.
///
/// `user` is the login of the user on whose behalf the call runs. For app-partition sources it is
/// still given (the real server calls `login` per user), but the data is shared.
pub trait SourceAdapter: Send + Sync + 'static {
    /// The whole data set of the source for `user` (user partition) or for everyone (app
    /// partition). Called when the server first needs the source and again when the source's
    /// refresh interval has passed.
    ///
    /// # Errors
    /// A failure becomes a `source-error` / `query-error` on the pages of every client.
    fn query(&self, user: &str) -> Result<Vec<(String, Obj)>, AdapterError>;

    /// Creates an object; returns its new id, or `None` when the backend drops it (the client is
    /// then told to delete its temporary object).
    ///
    /// # Errors
    /// A refusal, reported to the client as a `create-error`.
    fn create(&self, user: &str, obj: &Obj) -> Result<Option<String>, AdapterError>;

    /// Applies `changes` to object `id`, whose current state is `current`.
    ///
    /// # Errors
    /// A refusal, reported as an `update-error` with `update-rollback`.
    fn update(&self, user: &str, id: &str, current: &Obj, changes: &Obj) -> Result<(), AdapterError>;

    /// Deletes object `id`.
    ///
    /// # Errors
    /// A refusal, reported as a `delete-error`.
    fn delete(&self, user: &str, id: &str, current: &Obj) -> Result<(), AdapterError>;

    /// Persists a change made outside the protocol (the [`crate::Backend`] API): `Some` stores
    /// the object as given, `None` deletes it. In-memory adapters keep nothing and accept.
    ///
    /// # Errors
    /// The change could not be stored.
    fn put(&self, _user: &str, _id: &str, _obj: Option<&Obj>) -> Result<(), AdapterError> {
        Ok(())
    }

    /// Searches `candidates` (the current master document) for `params` (`search[attr]=value`).
    /// The default is a case-insensitive substring match on every given attribute.
    ///
    /// # Errors
    /// A failure, reported as a `search-error`.
    fn search(
        &self,
        _user: &str,
        params: &[(String, String)],
        candidates: &mut dyn Iterator<Item = (&str, &Obj)>,
    ) -> Result<Vec<String>, AdapterError> {
        let needles: Vec<(&str, String)> = params.iter().map(|(k, v)| (k.as_str(), v.to_lowercase())).collect();
        Ok(candidates
            .filter(|(_, obj)| {
                needles
                    .iter()
                    .all(|(k, needle)| obj.get(k).is_some_and(|v| v.to_lowercase().contains(needle.as_str())))
            })
            .map(|(id, _)| id.to_owned())
            .collect())
    }
}

/// Checks a login.
pub trait Authenticator: Send + Sync + 'static {
    /// True when `login` may sign in with `password`.
    fn authenticate(&self, login: &str, password: &str) -> bool;
}

/// Accepts any non-empty login whose password equals a fixed string (the transcripts' test app
/// accepts `password`).
#[derive(Debug, Clone)]
pub struct FixedPassword(pub String);

impl Authenticator for FixedPassword {
    fn authenticate(&self, login: &str, password: &str) -> bool {
        !login.is_empty() && password == self.0
    }
}

/// The adapter the real server creates for a source name it does not know (a "dynamic adapter"
/// without a backend URI): every query fails with the message RhoConnect 7.8 sends.
#[derive(Debug, Default)]
pub struct UnconfiguredAdapter;

/// The message of [`UnconfiguredAdapter`]'s query error, as recorded from RhoConnect 7.8.
pub const UNCONFIGURED_MESSAGE: &str = "Please set uri in your settings or through console";

impl SourceAdapter for UnconfiguredAdapter {
    fn query(&self, _user: &str) -> Result<Vec<(String, Obj)>, AdapterError> {
        Err(AdapterError(UNCONFIGURED_MESSAGE.into()))
    }
    fn create(&self, _user: &str, _obj: &Obj) -> Result<Option<String>, AdapterError> {
        Err(AdapterError(UNCONFIGURED_MESSAGE.into()))
    }
    fn update(&self, _user: &str, _id: &str, _current: &Obj, _changes: &Obj) -> Result<(), AdapterError> {
        Err(AdapterError(UNCONFIGURED_MESSAGE.into()))
    }
    fn delete(&self, _user: &str, _id: &str, _current: &Obj) -> Result<(), AdapterError> {
        Err(AdapterError(UNCONFIGURED_MESSAGE.into()))
    }
}
