//! The API's methods, one file each: the call's checks, its work, and its
//! JSON form (request fields as the design names them; unknown fields are
//! refused so a typo is not silently ignored).

pub mod broadcast;
pub mod disconnect;
pub mod history;
pub mod members;
pub mod presence;
pub mod publish;
pub mod rooms;
pub mod send;
pub mod stats;
pub mod subscription;

use bytes::Bytes;
use proto::client::{ErrorCode, MAX_DATA_BYTES};
use proto::subject;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::ApiError;

/// A request body as `T`, or `bad_request` saying what is wrong with it.
/// An empty body is an empty object.
pub(crate) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) { b"{}".as_slice() } else { body };
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

/// `value` as a JSON response body.
pub(crate) fn render(value: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("API results always serialize")
}

/// Stored JSON text (message data, member info) to embed as is; `null`
/// when empty.
pub(crate) fn raw(json: &[u8]) -> &RawValue {
    std::str::from_utf8(json)
        .ok()
        .and_then(|s| serde_json::from_str::<&RawValue>(s).ok())
        .unwrap_or_else(|| serde_json::from_str("null").expect("null is JSON"))
}

/// A per-item failure inside a result, as `{"code", "message"}`.
pub(crate) fn error_json(e: &proto::pb::Error) -> serde_json::Value {
    serde_json::json!({"code": e.code, "message": e.message})
}

/// A request's `data` (any JSON) as the bytes the bus carries.
pub(crate) fn data_of(data: Box<RawValue>) -> Bytes {
    Bytes::from(Box::<str>::from(data).into_boxed_bytes())
}

/// A room id by the id rules, or `invalid_room`.
pub(crate) fn check_room(room: &str) -> Result<(), ApiError> {
    if subject::valid_id(room) {
        Ok(())
    } else {
        Err(ApiError::new(ErrorCode::InvalidRoom, subject::INVALID_ROOM))
    }
}

/// A user id by the id rules, or `bad_request`.
pub(crate) fn check_user(user: &str) -> Result<(), ApiError> {
    if subject::valid_id(user) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!("invalid user id `{user}`: {}", subject::ID_RULE)))
    }
}

/// Message data: JSON text within the message size limit.
pub(crate) fn check_data(data: &[u8]) -> Result<(), ApiError> {
    if data.len() > MAX_DATA_BYTES {
        return Err(ApiError::new(ErrorCode::TooLarge, "data is over 64 KiB"));
    }
    if serde_json::from_slice::<serde::de::IgnoredAny>(data).is_err() {
        return Err(ApiError::bad_request("data must be JSON text"));
    }
    Ok(())
}

/// The answer of the wrong kind from an owner.
pub(crate) fn unexpected<T>() -> Result<T, ApiError> {
    Err(ApiError::new(ErrorCode::Internal, "unexpected reply from owner"))
}
