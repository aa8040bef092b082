//! Token authentication and authorization: one tower layer in front of every
//! service (`--auth-token-file`).
//!
//! The token file has one token per line: `TOKEN ROLE [PREFIX]`, where ROLE is
//! `read` or `readwrite` and PREFIX, if given, confines the token to keys
//! that start with it; `#` starts a comment. A token may appear on one line
//! only: a repeated one would leave the file's meaning to line order, and a
//! stray extra line could quietly widen what the token may do. Clients send
//! `authorization: Bearer TOKEN`. A missing or unknown token is
//! `UNAUTHENTICATED`; a read token calling a method that writes is
//! `PERMISSION_DENIED`. The layer decides from the method's path alone; it
//! hands the token's [`Scope`] to the handlers in the request's extensions,
//! and the one validation path (`access::Checks`) refuses keys outside it.
//!
//! Health checks need no token (probes and load balancers rarely carry
//! one). Tokens are compared in constant time and never logged.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tonic::Status;
use tower::{Layer, Service};

use super::LayerFuture;
use super::methods::{self, Access};

/// The metadata etcd's clients carry their token in.
const ETCD_TOKEN: &str = "token";

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Read methods only.
    Read,
    /// Every method.
    ReadWrite,
}

/// The keys a request may touch: those starting with `prefix` (all, if it is
/// empty). Put into a request's extensions by the auth layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    /// The prefix every key must start with.
    pub prefix: Bytes,
}

#[derive(Debug)]
struct Grant {
    token: Vec<u8>,
    role: Role,
    scope: Scope,
}

/// The tokens of a token file.
#[derive(Debug)]
pub struct Tokens {
    grants: Vec<Grant>,
}

impl Tokens {
    /// Parses a token file; errors name the line (and never the token).
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut grants = Vec::new();
        // The line each token was first seen on, to name both lines of a repeat.
        let mut first_lines: HashMap<&str, usize> = HashMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (token, role, prefix) = match fields.as_slice() {
                [token, role] => (token, role, ""),
                [token, role, prefix] => (token, role, *prefix),
                _ => {
                    return Err(format!(
                        "line {}: expected TOKEN ROLE [PREFIX], with ROLE read or readwrite",
                        number + 1
                    ));
                }
            };
            if let Some(first) = first_lines.insert(token, number + 1) {
                return Err(format!(
                    "line {}: the token is already on line {first} (a token may appear once)",
                    number + 1
                ));
            }
            let role = match *role {
                "read" => Role::Read,
                "readwrite" => Role::ReadWrite,
                other => {
                    return Err(format!(
                        "line {}: unknown role {other:?} (use read or readwrite)",
                        number + 1
                    ));
                }
            };
            grants.push(Grant {
                token: token.as_bytes().to_vec(),
                role,
                scope: Scope {
                    prefix: Bytes::copy_from_slice(prefix.as_bytes()),
                },
            });
        }
        if grants.is_empty() {
            return Err("the token file holds no token".into());
        }
        Ok(Tokens { grants })
    }

    /// Loads a token file.
    pub fn load(path: &std::path::Path) -> Result<Tokens, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
        Tokens::parse(&text).map_err(|e| format!("token file {}: {e}", path.display()))
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.grants.len()
    }

    /// Whether there are none (never, for a parsed file).
    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    /// Whether `token` is one of the file's (etcd's Authenticate hands it
    /// back as the session token).
    pub(crate) fn knows(&self, token: &[u8]) -> bool {
        self.find(token).is_some()
    }

    /// The grant of `token`. Every grant is compared, each in time that
    /// does not depend on where the bytes differ.
    fn find(&self, token: &[u8]) -> Option<&Grant> {
        let mut found = None;
        for grant in &self.grants {
            if constant_time_eq(&grant.token, token) {
                found = Some(grant);
            }
        }
        found
    }
}

/// Equality whose time depends on the lengths only, not on the contents.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut difference = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        difference |= usize::from(x ^ y);
    }
    difference == 0
}

/// The scope of a request to `path` carrying `authorization` (or etcd's
/// `token` metadata), or the status that refuses it. What a method may do
/// comes from the registry (`methods`): a method it does not know is
/// refused, whatever the token. The HTTP API asks it too, with the path of
/// the gRPC method a route stands for.
pub(crate) fn authorize(
    tokens: &Tokens,
    path: &str,
    authorization: Option<&[u8]>,
) -> Result<Option<Scope>, Status> {
    let access = methods::access(path)
        .ok_or_else(|| Status::unimplemented(format!("this server has no method {path}")))?;
    if access == Access::Open {
        return Ok(None);
    }
    let (role, scope) = identify(tokens, authorization)?;
    if role == Role::Read && access == Access::Write {
        return Err(Status::permission_denied(format!(
            "the token may only read, and {path} writes"
        )));
    }
    Ok(Some(scope))
}

/// The role and scope of the token in `authorization`, or the status that
/// refuses it.
pub(crate) fn identify(
    tokens: &Tokens,
    authorization: Option<&[u8]>,
) -> Result<(Role, Scope), Status> {
    let Some(header) = authorization else {
        return Err(Status::unauthenticated(
            "this server needs a token: send metadata authorization: Bearer <token>",
        ));
    };
    let token = header.strip_prefix(b"Bearer ").ok_or_else(|| {
        Status::unauthenticated("the authorization metadata must be: Bearer <token>")
    })?;
    let grant = tokens
        .find(token)
        .ok_or_else(|| Status::unauthenticated("the token is not valid"))?;
    Ok((grant.role, grant.scope.clone()))
}

/// The layer (present only when there is a token file).
#[derive(Clone)]
pub(crate) struct AuthLayer {
    tokens: Arc<Tokens>,
}

impl AuthLayer {
    pub(crate) fn new(tokens: Arc<Tokens>) -> AuthLayer {
        AuthLayer { tokens }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            tokens: self.tokens.clone(),
        }
    }
}

/// The service the layer wraps around the server's routes.
#[derive(Clone)]
pub(crate) struct Auth<S> {
    inner: S,
    tokens: Arc<Tokens>,
}

impl<S, B, RB> Service<http::Request<B>> for Auth<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    RB: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = LayerFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let headers = request.headers();
        // etcd's clients send the token Authenticate gave them as `token`.
        let etcd_token = headers
            .get(ETCD_TOKEN)
            .map(|value| [&b"Bearer "[..], value.as_bytes()].concat());
        let authorization = headers
            .get(http::header::AUTHORIZATION)
            .map(|value| value.as_bytes().to_vec())
            .or(etcd_token);
        match authorize(&self.tokens, request.uri().path(), authorization.as_deref()) {
            Ok(Some(scope)) => {
                request.extensions_mut().insert(scope);
            }
            Ok(None) => {}
            Err(status) => return Box::pin(std::future::ready(Ok(status.into_http()))),
        }
        Box::pin(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    const FILE: &str = "# team tokens\nr0 read\nrw1 readwrite\napp2 readwrite app/\n";

    #[test]
    fn a_token_file_parses_and_mistakes_name_the_line() {
        assert_eq!(Tokens::parse(FILE).unwrap().len(), 3);
        assert!(Tokens::parse("t admin").unwrap_err().starts_with("line 1:"));
        assert!(
            Tokens::parse("ok read\nlonely")
                .unwrap_err()
                .starts_with("line 2:")
        );
        assert!(Tokens::parse("# nothing\n").is_err());
    }

    #[test]
    fn a_repeated_token_names_both_lines_and_not_the_token() {
        // The walkthrough's case: a second line would have granted writes.
        let error =
            Tokens::parse("abc-secret read\n# a comment\nabc-secret readwrite\n").unwrap_err();
        assert!(
            error.starts_with("line 3:") && error.contains("line 1"),
            "{error}"
        );
        assert!(
            !error.contains("abc-secret"),
            "tokens are never printed: {error}"
        );
        // Same role, other prefix: still a repeat; the first repeat is named.
        let error = Tokens::parse("x1 read\ny2 read\nx1 read app/\nx1 read\n").unwrap_err();
        assert!(
            error.starts_with("line 3:") && error.contains("line 1"),
            "{error}"
        );
        // Tokens differing only in length or case are different tokens.
        assert_eq!(
            Tokens::parse("ab read\nabc read\nABC read\n")
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn methods_are_allowed_by_role() {
        let tokens = Tokens::parse(FILE).unwrap();
        let get = "/keyvalue.v1.KV/Get";
        let put = "/keyvalue.v1.KV/Put";
        assert!(authorize(&tokens, get, Some(b"Bearer r0")).is_ok());
        let denied = authorize(&tokens, put, Some(b"Bearer r0")).unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);
        assert!(authorize(&tokens, put, Some(b"Bearer rw1")).is_ok());
        let scope = authorize(&tokens, put, Some(b"Bearer app2"))
            .unwrap()
            .unwrap();
        assert_eq!(scope.prefix, Bytes::from_static(b"app/"));
        for header in [
            None,
            Some(&b"Bearer nope"[..]),
            Some(b"r0"),
            Some(b"Bearer r"),
        ] {
            let status = authorize(&tokens, get, header).unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "{header:?}");
            assert!(!status.message().contains("r0"), "tokens are never echoed");
        }
        assert_eq!(
            authorize(&tokens, "/grpc.health.v1.Health/Check", None).unwrap(),
            None
        );
        // etcd's methods by the same rules, and unknown methods not at all.
        let etcd_put = "/etcdserverpb.KV/Put";
        let denied = authorize(&tokens, etcd_put, Some(b"Bearer r0")).unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);
        assert!(authorize(&tokens, "/etcdserverpb.KV/Range", Some(b"Bearer r0")).is_ok());
        let unknown = authorize(&tokens, "/etcdserverpb.KV/Nope", Some(b"Bearer rw1")).unwrap_err();
        assert_eq!(unknown.code(), Code::Unimplemented);
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }
}
