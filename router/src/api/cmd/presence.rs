//! `presence {users[]}` → `{users: [{user, online, last_seen_ms, status?}]}`:
//! whether each user (at most 100) is online anywhere in the cluster, as
//! the presence service knows (`--presence-url` on routers).

use proto::pb;
use serde::{Deserialize, Serialize};

use super::{check_user, parse, render};
use crate::api::{Api, ApiError, Command};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Json {
    users: Vec<String>,
}

#[derive(Serialize)]
struct User<'a> {
    user: &'a str,
    online: bool,
    last_seen_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a str>,
}

impl Command for pb::QueryRequest {
    const NAME: &'static str = "presence";
    type Output = pb::QueryReply;

    async fn run(self, api: &Api) -> Result<pb::QueryReply, ApiError> {
        let max = presence::MAX_USERS_PER_REQUEST;
        if self.users.is_empty() || self.users.len() > max {
            return Err(ApiError::bad_request(format!("users must list 1 to {max} users")));
        }
        self.users.iter().try_for_each(|u| check_user(u))?;
        let Some(presence) = &api.presence else {
            return Err(ApiError::unavailable("this router has no presence service (--presence-url)"));
        };
        match presence.query(self.users).await {
            Ok(users) => Ok(pb::QueryReply { users }),
            Err(status) => Err(ApiError::unavailable(format!("presence: {}", status.message()))),
        }
    }

    fn from_json(body: &[u8]) -> Result<Self, ApiError> {
        let j: Json = parse(body)?;
        Ok(Self { users: j.users })
    }

    fn to_json(r: &pb::QueryReply) -> Vec<u8> {
        let users: Vec<User> = r
            .users
            .iter()
            .map(|u| User {
                user: &u.user,
                online: u.online,
                last_seen_ms: u.last_seen_ms,
                status: u.online.then(|| proto::client::status_or_online(&u.status)),
            })
            .collect();
        render(&serde_json::json!({ "users": users }))
    }
}
