//! The checks every key of a request passes: the size limits, and the scope
//! of the caller's token. Handlers build one [`Checks`] per request and pass
//! it wherever keys are read from the request, so no key escapes either.

use bytes::Bytes;
use tonic::{Request, Status};

use super::Limits;
use super::auth::Scope;
use crate::storage::ops::{KeyRange, LeaseId, RangeEnd, prefix_end};
use crate::storage::{Store, StoreError};

/// The scope the authentication layer found for the request's token; `None`
/// when the server checks no tokens. A copy, so the request can be consumed.
pub(crate) fn scope_of<T>(request: &Request<T>) -> Option<Scope> {
    request.extensions().get::<Scope>().cloned()
}

/// The limits, and the token's scope if the server checks tokens.
#[derive(Clone, Copy)]
pub(crate) struct Checks<'a> {
    pub(crate) limits: &'a Limits,
    scope: Option<&'a Scope>,
}

impl<'a> Checks<'a> {
    pub(crate) fn new(limits: &'a Limits, scope: Option<&'a Scope>) -> Checks<'a> {
        Checks { limits, scope }
    }

    /// A key to read or write: non-empty, within the limit, in scope.
    pub(crate) fn key(&self, key: &[u8]) -> Result<(), Status> {
        self.limits.check_key(key)?;
        match self.scope {
            Some(scope) if !key.starts_with(&scope.prefix) => Err(out_of_scope(scope)),
            _ => Ok(()),
        }
    }

    /// Every key (a snapshot, a lease revocation): only for a token that
    /// may use every key. The refusal says what the scoped token may not do
    /// (`action`: "revoke leases") rather than which keys it may use.
    pub(crate) fn everything_for(&self, action: &str) -> Result<(), Status> {
        match self.scope {
            Some(scope) if !scope.prefix.is_empty() => Err(Status::permission_denied(format!(
                "a token confined to keys that start with {:?} may not {action}: \
                 that needs a token for every key",
                String::from_utf8_lossy(&scope.prefix)
            ))),
            _ => Ok(()),
        }
    }

    /// Whether the caller may `action` ("keep alive", "revoke", "list the
    /// keys of") lease `id`: a token confined to a prefix only if every key
    /// attached to the lease starts with it (etcd's rule for a user's
    /// permissions), so it cannot keep alive or delete keys outside its
    /// prefix through a lease. A token for every key needs no look at the
    /// store. The outer error is the store's, for the caller to map; the
    /// inner one the refusal.
    ///
    /// The check reads the lease's keys before the operation runs: a key
    /// attached to the lease between the two is not seen.
    pub(crate) async fn lease<S: Store>(
        &self,
        store: &S,
        id: LeaseId,
        action: &str,
    ) -> Result<Result<(), Status>, StoreError> {
        let Some(scope) = self.scope.filter(|scope| !scope.prefix.is_empty()) else {
            return Ok(Ok(()));
        };
        // Keys this server does not serve (the etcd backend's outside
        // --etcd-prefix, other users' of the cluster) are outside any
        // prefix of ours.
        match store.lease_holds_foreign_keys(id).await {
            Ok(false) => {}
            Ok(true) => {
                return Ok(Err(Status::permission_denied(format!(
                    "lease {id} holds keys outside the keys this server serves (on etcd, \
                     outside --etcd-prefix), so outside the prefix {:?} this token is \
                     confined to: it may not {action} the lease",
                    String::from_utf8_lossy(&scope.prefix)
                ))));
            }
            // The operation itself says so.
            Err(StoreError::LeaseNotFound(_)) => return Ok(Ok(())),
            Err(error) => return Err(error),
        }
        // The keys before the prefix, and after it: one key of either is
        // enough to refuse.
        let mut outside = vec![KeyRange::between(Bytes::new(), scope.prefix.clone())];
        if let Some(end) = prefix_end(&scope.prefix) {
            outside.push(KeyRange {
                start: end,
                end: RangeEnd::Unbounded,
            });
        }
        for range in outside {
            let key = match store.lease_keys(id, range, 1).await {
                Ok((keys, _)) => keys.into_iter().next(),
                // The operation itself says so.
                Err(StoreError::LeaseNotFound(_)) => return Ok(Ok(())),
                Err(error) => return Err(error),
            };
            if let Some(key) = key {
                return Ok(Err(Status::permission_denied(format!(
                    "lease {id} holds the key {:?}, outside the prefix {:?} this token is \
                     confined to: it may not {action} the lease",
                    String::from_utf8_lossy(&key),
                    String::from_utf8_lossy(&scope.prefix)
                ))));
            }
        }
        Ok(Ok(()))
    }

    /// A value: within the limit.
    pub(crate) fn value(&self, value: &[u8]) -> Result<(), Status> {
        self.limits.check_value(value)
    }

    /// The bound of a range: within the key limit (may be empty).
    pub(crate) fn bound(&self, key: &[u8]) -> Result<(), Status> {
        self.limits.check_key_length(key)
    }

    /// A range of keys: wholly in scope.
    pub(crate) fn range(&self, range: &KeyRange) -> Result<(), Status> {
        let Some(scope) = self.scope else {
            return Ok(());
        };
        if scope.prefix.is_empty() {
            return Ok(());
        }
        // Every key of [start, end) starts with the prefix exactly when the
        // range lies within [prefix, prefix_end(prefix)).
        let inside = match &range.end {
            RangeEnd::Single => range.start.starts_with(&scope.prefix),
            _ if range.start.as_ref() < scope.prefix.as_ref() => false,
            RangeEnd::Before(end) => prefix_end(&scope.prefix).is_none_or(|limit| *end <= limit),
            RangeEnd::Unbounded => prefix_end(&scope.prefix).is_none(),
        };
        if inside {
            Ok(())
        } else {
            Err(out_of_scope(scope))
        }
    }
}

fn out_of_scope(scope: &Scope) -> Status {
    Status::permission_denied(format!(
        "the token may only use keys that start with {:?}",
        String::from_utf8_lossy(&scope.prefix)
    ))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn a_scoped_token_reaches_only_its_prefix() {
        let limits = Limits::default();
        let scope = Scope {
            prefix: Bytes::from_static(b"app/"),
        };
        let checks = Checks::new(&limits, Some(&scope));
        assert!(checks.key(b"app/x").is_ok());
        assert!(checks.key(b"apq").is_err());
        assert!(checks.key(b"app").is_err());
        assert!(
            checks
                .range(&KeyRange::prefix(Bytes::from_static(b"app/")))
                .is_ok()
        );
        assert!(
            checks
                .range(&KeyRange::prefix(Bytes::from_static(b"app/users/")))
                .is_ok()
        );
        assert!(
            checks
                .range(&KeyRange::prefix(Bytes::from_static(b"ap")))
                .is_err()
        );
        assert!(checks.range(&KeyRange::prefix(Bytes::new())).is_err());
        assert!(
            checks
                .range(&KeyRange::between(
                    Bytes::from_static(b"app/a"),
                    Bytes::from_static(b"app/z")
                ))
                .is_ok()
        );
        assert!(
            checks
                .range(&KeyRange::between(
                    Bytes::from_static(b"app/a"),
                    Bytes::from_static(b"b")
                ))
                .is_err()
        );
        let unscoped = Checks::new(&limits, None);
        assert!(unscoped.key(b"anything").is_ok());
        assert!(unscoped.range(&KeyRange::prefix(Bytes::new())).is_ok());
    }
}
