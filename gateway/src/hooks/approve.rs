//! The `join` and `publish` hooks, for namespaces that list them: the
//! backend approves (`{"ok": true}`, and a publish may replace `data`) or
//! refuses with its code and message, which the client gets as they are
//! when the code is one of the protocol's, else as `forbidden` naming it. A
//! hook that fails or times out refuses with `unavailable`.

use bytes::Bytes;
use proto::client::ErrorCode;
use router::namespace::Hook;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::HookError;
use crate::session::ops::Failure;
use crate::session::Session;

#[derive(Serialize)]
struct Ask<'a> {
    user: &'a str,
    conn: &'a str,
    room: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Verdict {
    ok: bool,
    #[serde(default)]
    data: Option<Box<RawValue>>,
}

/// Asks the backend whether `s` may join `room`, if the room's namespace
/// lists the `join` hook.
pub async fn join(s: &Session, room: &str) -> Result<(), Failure> {
    ask(s, Hook::Join, room, None).await.map(|_| ())
}

/// Asks the backend whether `s` may publish `data` to `room`, if the room's
/// namespace lists the `publish` hook; the data to publish (maybe replaced).
pub async fn publish(s: &Session, room: &str, data: Bytes) -> Result<Bytes, Failure> {
    let raw: Option<&RawValue> = std::str::from_utf8(&data).ok().and_then(|t| serde_json::from_str(t).ok());
    match ask(s, Hook::Publish, room, raw).await? {
        Some(replaced) => {
            let bytes = Bytes::from(replaced.get().to_owned());
            crate::session::ops::check_data(&bytes)?;
            Ok(bytes)
        }
        None => Ok(data),
    }
}

async fn ask(s: &Session, hook: Hook, room: &str, data: Option<&RawValue>) -> Result<Option<Box<RawValue>>, Failure> {
    let Some(hooks) = &s.hub.hooks else { return Ok(None) };
    if !s.hub.namespaces.of(room).hooks.contains(&hook) {
        return Ok(None);
    }
    let name = match hook {
        Hook::Join => "join",
        Hook::Publish => "publish",
    };
    let ask = Ask { user: &s.user, conn: &s.conn, room, data };
    match hooks.call::<Verdict>(name, &ask).await {
        Ok(v) if v.ok => Ok(v.data),
        Ok(_) => Err((ErrorCode::Forbidden, format!("the backend refused this {name}"))),
        Err(HookError::Denied { code, message }) => Err(refusal(&code, message)),
        Err(HookError::Unavailable(_)) => {
            Err((ErrorCode::Unavailable, format!("the {name} hook did not answer; retry")))
        }
    }
}

/// The backend's code as the client sees it.
fn refusal(code: &str, message: String) -> Failure {
    match ErrorCode::parse(code) {
        Some(known) => (known, message),
        None => (ErrorCode::Forbidden, format!("{code}: {message}")),
    }
}
