//! The one table from gRPC status codes to HTTP statuses, and the JSON
//! error every failing HTTP request answers with.
//!
//! The JSON API calls the gRPC services in-process, so every refusal (a
//! limit, a token, a store error) arrives as the same `tonic::Status` a gRPC
//! client gets; here it becomes `{"error": MESSAGE, "code": "INVALID_ARGUMENT"}`
//! with the HTTP status a person expects for it. The code is spelled as the
//! gRPC specification, grpc-gateway, `kv`, `kv-py` and `kv-rb` spell it
//! ([`status_name`]), not as tonic's `Debug` prints it.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json_, json};
use tonic::{Code, Status};

use crate::client::status_name;

/// A failed HTTP request: its status and JSON body.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    body: Json_,
}

impl ApiError {
    /// A failure with `status`, the gRPC `code` it stands for, and `message`.
    pub(crate) fn new(status: StatusCode, code: Code, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: json!({"error": message.into(), "code": status_name(code)}),
        }
    }

    /// 400 for a request the HTTP API itself cannot read (a query, a key).
    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, Code::InvalidArgument, message)
    }

    /// Adds `field` to the body (the current state after a conflict, say).
    pub(crate) fn with(mut self, field: &str, value: Json_) -> ApiError {
        self.body[field] = value;
        self
    }
}

/// The HTTP status for a gRPC code.
pub(crate) fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<Status> for ApiError {
    fn from(status: Status) -> ApiError {
        ApiError::new(
            http_status(status.code()),
            status.code(),
            status.message().to_owned(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = super::respond(self.status, &self.body);
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
