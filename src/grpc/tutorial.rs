//! The tutorial's service, `simplekeyvalue.KeyValue` (`Set` and `Get`).
//!
//! Its contract is frozen (`proto/api.proto`): keys and values are protobuf
//! `string`s, a missing key is `NOT_FOUND` with the text `key not found`.

use std::sync::Arc;

use bytes::Bytes;
use tonic::{Request, Response, Status};
use tracing::info;

use super::Limits;
use super::access::{Checks, scope_of};
use super::status::{from_store_error, key_not_found};
use crate::proto::simplekeyvalue::key_value_server::{KeyValue, KeyValueServer};
use crate::proto::simplekeyvalue::{GetReply, GetRequest, SetReply, SetRequest};
use crate::storage::Store;

/// Handlers of `simplekeyvalue.KeyValue` over a [`Store`].
pub struct TutorialService<S> {
    store: Arc<S>,
    limits: Limits,
    log_requests: bool,
}

impl<S: Store> TutorialService<S> {
    /// A service over `store`. With `log_requests`, every request is logged with
    /// the tutorial's line (`serving get request for key "weather"`).
    pub fn new(store: Arc<S>, limits: Limits, log_requests: bool) -> Self {
        TutorialService {
            store,
            limits,
            log_requests,
        }
    }

    /// The tonic service, ready to add to a server.
    pub fn into_server(self) -> KeyValueServer<Self> {
        let max_message = self.limits.max_message_bytes();
        KeyValueServer::new(self).max_decoding_message_size(max_message)
    }
}

#[tonic::async_trait]
impl<S: Store> KeyValue for TutorialService<S> {
    async fn set(&self, request: Request<SetRequest>) -> Result<Response<SetReply>, Status> {
        let scope = scope_of(&request);
        let checks = Checks::new(&self.limits, scope.as_ref());
        let SetRequest { key, value } = request.into_inner();
        if self.log_requests {
            info!("serving set request for key {key:?} and value {value:?}");
        }
        checks.key(key.as_bytes())?;
        checks.value(value.as_bytes())?;
        self.store
            .put(Bytes::from(key), Bytes::from(value))
            .await
            .map_err(from_store_error)?;
        Ok(Response::new(SetReply {}))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetReply>, Status> {
        let scope = scope_of(&request);
        let checks = Checks::new(&self.limits, scope.as_ref());
        let GetRequest { key } = request.into_inner();
        if self.log_requests {
            info!("serving get request for key {key:?}");
        }
        checks.key(key.as_bytes())?;
        let record = self
            .store
            .get(key.as_bytes(), 0)
            .await
            .map_err(from_store_error)?
            .ok_or_else(key_not_found)?;
        // Values written through this API are always UTF-8; a binary value can
        // only come from a bytes-based API, and a protobuf string cannot carry it.
        let value = String::from_utf8(Vec::from(record.value)).map_err(|_| {
            Status::failed_precondition(
                "the value is binary (not UTF-8) and cannot be returned as a string",
            )
        })?;
        Ok(Response::new(GetReply { value }))
    }
}
