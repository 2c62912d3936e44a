//! `refresh {token}`: a new expiry, and the rooms a narrower token no longer
//! allows are left (`removed`).

use proto::client::{ErrorCode, ReplyBody};

use super::{fail, leave, Answer};
use crate::session::auth::AuthError;
use crate::session::grants::Grants;
use crate::session::Session;

pub async fn refresh(s: &mut Session, token: String) -> Answer {
    match s.hub.verifier.check(&token).await {
        Ok(claims) if *claims.sub == *s.user => {
            s.exp = claims.exp;
            s.grants = Grants::of(&claims, &s.hub.defaults, &s.hub.default_grants);
            leave::leave_revoked(s).await;
            Ok(Some(ReplyBody::Refresh { exp: claims.exp }))
        }
        Ok(_) => fail(ErrorCode::Forbidden, "token is for another user"),
        Err(AuthError::Expired) => fail(ErrorCode::Unauthorized, "token expired"),
        Err(AuthError::Invalid(_) | AuthError::UnknownKey) => fail(ErrorCode::Unauthorized, "invalid token"),
        Err(e @ (AuthError::InfoTooLarge { .. } | AuthError::Claim(_))) => fail(ErrorCode::Unauthorized, e.to_string()),
    }
}
