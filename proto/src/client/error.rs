//! The error codes of the client protocol.

/// Why a request failed, as sent in `error.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The frame is not a well-formed request.
    BadRequest,
    /// `op` names no operation.
    UnknownOp,
    /// Not authenticated, or the token is invalid.
    Unauthorized,
    /// The token does not allow this.
    Forbidden,
    /// The connection has not joined the room.
    NotMember,
    /// The room id breaks the id rules.
    InvalidRoom,
    /// The message exceeds the size limit.
    TooLarge,
    /// Over the connection's frame rate.
    RateLimited,
    /// Over the connection's room limit.
    TooManyRooms,
    /// The room holds its namespace's `max_members` users.
    RoomFull,
    /// The room's owner is unreachable; retry.
    Unavailable,
    /// The server API has no such method (HTTP 404).
    NotFound,
    /// A bug or an unexpected failure on the server.
    Internal,
}

impl ErrorCode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::UnknownOp => "unknown_op",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotMember => "not_member",
            Self::InvalidRoom => "invalid_room",
            Self::TooLarge => "too_large",
            Self::RateLimited => "rate_limited",
            Self::TooManyRooms => "too_many_rooms",
            Self::RoomFull => "room_full",
            Self::Unavailable => "unavailable",
            Self::NotFound => "not_found",
            Self::Internal => "internal",
        }
    }

    /// The code for a wire name (used by clients and the bus).
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::BadRequest,
            Self::UnknownOp,
            Self::Unauthorized,
            Self::Forbidden,
            Self::NotMember,
            Self::InvalidRoom,
            Self::TooLarge,
            Self::RateLimited,
            Self::TooManyRooms,
            Self::RoomFull,
            Self::Unavailable,
            Self::NotFound,
            Self::Internal,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
