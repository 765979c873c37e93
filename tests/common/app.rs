//! Drive the whole axum app in-process (`oneshot`, no socket) with typed helpers.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use phonebank::config::Settings;
use phonebank::domain::ApiToken;
use phonebank::http::{AppState, app};
use phonebank::store::Store;
use serde_json::Value;
use tower::ServiceExt;

pub struct TestApp {
    pub router: Router,
    pub store: Store,
    pub token: String,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl TestApp {
    pub async fn new(store: Store) -> Self {
        Self::with_settings(store, Settings::default()).await
    }

    pub async fn with_settings(store: Store, settings: Settings) -> Self {
        Self::with_state(AppState::new(store, settings)).await
    }

    /// An app over a state the test has shaped (a manual clock, a REST client ...).
    pub async fn with_state(state: AppState) -> Self {
        let store = state.store.clone();
        let token = ApiToken::generate();
        store.create_token("test organiser", &token).await.unwrap();
        Self {
            router: app(state),
            store,
            token: token.expose().to_owned(),
        }
    }

    pub async fn send(&self, req: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(req).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    fn request(&self, method: &str, path: &str) -> axum::http::request::Builder {
        Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.request("GET", path).body(Body::empty()).unwrap())
            .await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(self.request("DELETE", path).body(Body::empty()).unwrap())
            .await
    }

    pub async fn json(&self, method: &str, path: &str, body: Value) -> Reply {
        self.raw(method, path, "application/json", body.to_string())
            .await
    }

    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: impl Into<Body>,
    ) -> Reply {
        let req = self
            .request(method, path)
            .header(header::CONTENT_TYPE, content_type)
            .body(body.into())
            .unwrap();
        self.send(req).await
    }

    pub async fn unauthenticated(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(a) = authorization {
            req = req.header(header::AUTHORIZATION, a);
        }
        self.send(
            req.header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await
    }
}

/// A small valid campaign body.
pub fn campaign_body(name: &str) -> Value {
    serde_json::json!({
        "name": name,
        "caller_number": "020 7946 0000",
        "script": {"questions": [
            {"code": "support", "text": "Can we count on your vote?", "options": [
                {"digit": "1", "code": "yes", "label": "Yes", "sms_keywords": ["y", "yes"], "next": "help"},
                {"digit": "2", "code": "no", "label": "No", "sms_keywords": ["n", "no"]},
                {"digit": "3", "code": "unsure", "label": "Not sure"}
            ]},
            {"code": "help", "text": "Would you help on polling day?", "options": [
                {"digit": "1", "code": "yes", "label": "Yes"},
                {"digit": "2", "code": "no", "label": "No"}
            ]}
        ]}
    })
}
