//! The API's errors: a design error code and a message, shown as an HTTP
//! status with `{"error":{"code","message"}}`, or as a gRPC status whose
//! message starts with the code.

use hyper::StatusCode;
use proto::client::ErrorCode;

/// A refused or failed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    /// 400 for what the caller got wrong, 401/403/404 as named, 503 for
    /// what a retry may fix, 500 for a bug.
    pub fn http_status(&self) -> StatusCode {
        match self.code {
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The JSON body.
    pub fn to_json(&self) -> Vec<u8> {
        let body = serde_json::json!({"error": {"code": self.code.as_str(), "message": self.message}});
        serde_json::to_vec(&body).expect("a JSON value always serializes")
    }

    /// The gRPC status.
    pub fn to_status(&self) -> tonic::Status {
        let text = format!("{}: {}", self.code, self.message);
        match self.code {
            ErrorCode::Unauthorized => tonic::Status::unauthenticated(text),
            ErrorCode::Forbidden => tonic::Status::permission_denied(text),
            ErrorCode::NotFound => tonic::Status::not_found(text),
            ErrorCode::Unavailable => tonic::Status::unavailable(text),
            ErrorCode::Internal => tonic::Status::internal(text),
            _ => tonic::Status::invalid_argument(text),
        }
    }

    pub fn to_pb(&self) -> proto::pb::Error {
        proto::pb::Error { code: self.code.as_str().into(), message: self.message.clone() }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}
