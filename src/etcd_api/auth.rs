//! `etcdserverpb.Auth`: Authenticate, so that etcd's clients that log in
//! with a user and password (`etcdctl --user NAME --password TOKEN`,
//! clientv3's `Username`/`Password`) work against a server with
//! `--auth-token-file`.
//!
//! kvserver's users are its tokens: the password is a token of the file
//! (the name is not checked), and Authenticate hands it back as etcd's
//! session token, which the client then sends as `token` metadata on every
//! call; the auth layer reads it there as it reads `authorization: Bearer`,
//! with the same role and prefix. Users and roles are the token file's, so
//! etcd's methods that manage them are refused by name.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{Api, errors};
use crate::grpc::Tokens;
use crate::proto::etcd::etcdserverpb as pb;
use crate::proto::etcd::etcdserverpb::auth_server::Auth;
use crate::storage::Store;

/// The handlers of `etcdserverpb.Auth`.
pub(crate) struct AuthApi<S> {
    pub(crate) api: Api<S>,
    pub(crate) tokens: Option<Arc<Tokens>>,
}

fn managed_in_file(method: &str) -> Status {
    errors::unsupported(
        method,
        "kvserver's users and roles are the tokens of --auth-token-file; edit that file",
    )
}

#[tonic::async_trait]
impl<S: Store> Auth for AuthApi<S> {
    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let Some(tokens) = &self.tokens else {
            return Err(errors::auth_not_enabled());
        };
        let password = request.into_inner().password;
        if !tokens.knows(password.as_bytes()) {
            return Err(errors::auth_failed());
        }
        Ok(Response::new(pb::AuthenticateResponse {
            header: self.api.identity.header(self.api.store.stats().revision),
            token: password,
        }))
    }

    async fn auth_enable(
        &self,
        _request: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        Err(managed_in_file("Auth.AuthEnable"))
    }

    async fn auth_disable(
        &self,
        _request: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        Err(managed_in_file("Auth.AuthDisable"))
    }

    async fn user_add(
        &self,
        _request: Request<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        Err(managed_in_file("Auth.UserAdd"))
    }

    async fn user_get(
        &self,
        _request: Request<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        Err(managed_in_file("Auth.UserGet"))
    }

    async fn user_list(
        &self,
        _request: Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        Err(managed_in_file("Auth.UserList"))
    }

    async fn user_delete(
        &self,
        _request: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        Err(managed_in_file("Auth.UserDelete"))
    }

    async fn user_change_password(
        &self,
        _request: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        Err(managed_in_file("Auth.UserChangePassword"))
    }

    async fn user_grant_role(
        &self,
        _request: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        Err(managed_in_file("Auth.UserGrantRole"))
    }

    async fn user_revoke_role(
        &self,
        _request: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        Err(managed_in_file("Auth.UserRevokeRole"))
    }

    async fn role_add(
        &self,
        _request: Request<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        Err(managed_in_file("Auth.RoleAdd"))
    }

    async fn role_get(
        &self,
        _request: Request<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        Err(managed_in_file("Auth.RoleGet"))
    }

    async fn role_list(
        &self,
        _request: Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        Err(managed_in_file("Auth.RoleList"))
    }

    async fn role_delete(
        &self,
        _request: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        Err(managed_in_file("Auth.RoleDelete"))
    }

    async fn role_grant_permission(
        &self,
        _request: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        Err(managed_in_file("Auth.RoleGrantPermission"))
    }

    async fn role_revoke_permission(
        &self,
        _request: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        Err(managed_in_file("Auth.RoleRevokePermission"))
    }
}
