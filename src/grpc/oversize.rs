//! One answer for every oversized request.
//!
//! A request whose message is above the decoding limit (the longest key plus
//! the longest value, see [`Limits::max_message_bytes`]) is refused by tonic's
//! codec before any handler runs, with `OUT_OF_RANGE` and a message about
//! "decoded message length". This layer rewrites exactly that answer into the
//! documented `INVALID_ARGUMENT` that names the flags, so a value one byte over
//! `--max-value-bytes` and a value a gigabyte over it get the same status. The
//! codec rejects by the frame's length prefix, so the oversized body is never
//! buffered.

use http::Response;
use tonic::{Code, Status};
use tower::util::MapResponseLayer;

use super::Limits;

/// The text tonic's codec puts in its `OUT_OF_RANGE` for an oversized message.
const TONIC_TOO_LARGE: &str = "decoded message length too large";

/// A server layer that rewrites tonic's oversized-message status.
pub(crate) fn layer<B>(
    limits: Limits,
) -> MapResponseLayer<impl Fn(Response<B>) -> Response<B> + Clone> {
    MapResponseLayer::new(move |mut response: Response<B>| {
        let too_large = Status::from_header_map(response.headers()).is_some_and(|status| {
            status.code() == Code::OutOfRange && status.message().contains(TONIC_TOO_LARGE)
        });
        if too_large {
            let status = Status::invalid_argument(format!(
                "request is above the limit of {} bytes (keys of at most {} bytes \
                 (--max-key-bytes), values of at most {} bytes (--max-value-bytes))",
                limits.max_message_bytes(),
                limits.max_key_bytes,
                limits.max_value_bytes
            ));
            // Writing a status we built ourselves cannot fail (its message is
            // plain text); if it ever did, the original answer still stands.
            let _ = status.add_header(response.headers_mut());
        }
        response
    })
}
