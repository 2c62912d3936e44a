//! A gateway (or several) as the application-level tests see it: where to
//! connect, how to mint tokens, and the server API.

use loadtest::client::{Client, ConnectOptions};
use loadtest::token::{mint, SigningKey, TokenSpec};
use proto::pb;
use serde_json::Value;

use super::cluster::{channel, Bearer, API_TOKEN};
use super::T;

/// Gateways to connect to and the server API to publish through.
pub struct Target {
    pub urls: Vec<String>,
    pub key: SigningKey,
    pub rooms_api: String,
}

impl Target {
    pub fn token(&self, spec: TokenSpec) -> String {
        mint(&self.key, &spec)
    }

    /// A JSON client with `spec`'s token on gateway `i` (mod the count), greeted.
    pub async fn client(&self, i: usize, spec: TokenSpec) -> Client {
        let url = format!("{}?token={}", self.urls[i % self.urls.len()], self.token(spec));
        let mut c = Client::connect(ConnectOptions::new(url)).await.unwrap();
        assert_eq!(c.next_of_type("hello", T).await.unwrap()["type"], "hello");
        c
    }

    pub async fn user(&self, i: usize, user: &str) -> Client {
        self.client(i, TokenSpec::new(user, 3600)).await
    }

    /// Publishes through the server API (gRPC `Rooms.Publish`).
    pub async fn server_publish(&self, room: &str, data: Value) -> u64 {
        let mut api = router::rpc::rooms_client::RoomsClient::with_interceptor(
            channel(&self.rooms_api).await,
            Bearer(API_TOKEN.into()),
        );
        let call = pb::PublishCall {
            room: room.into(),
            data: data.to_string().into(),
            from: String::new(),
            ..Default::default()
        };
        api.publish(call).await.expect("the server API may publish anywhere").into_inner().seq
    }
}
