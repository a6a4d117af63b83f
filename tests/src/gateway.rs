//! A push gateway for tests: a real HTTP server (axum) on loopback that keeps every
//! notification the node POSTs and answers each as the test queued (OK by default).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Json;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the gateway answers one request.
#[derive(Clone, Debug)]
pub enum Answer {
    /// 200, nothing rejected.
    Accept,
    /// 200, the request's pushkey rejected.
    Reject,
    /// This status, no body.
    Status(u16),
    /// No answer for a minute.
    Hang,
}

#[derive(Default)]
struct Inner {
    seen: Vec<Value>,
    answers: VecDeque<Answer>,
}

/// The running gateway; it stops when dropped.
pub struct Gateway {
    /// Where the node should POST.
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(inner: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

async fn notify(
    State(inner): State<Arc<Mutex<Inner>>>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let answer = {
        let mut inner = lock(&inner);
        inner.seen.push(body.clone());
        inner.answers.pop_front().unwrap_or(Answer::Accept)
    };
    match answer {
        Answer::Accept => (StatusCode::OK, Json(json!({ "rejected": [] }))),
        Answer::Reject => {
            let key = body["notification"]["devices"][0]["pushkey"].clone();
            (StatusCode::OK, Json(json!({ "rejected": [key] })))
        }
        Answer::Status(code) => (
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            Json(json!({})),
        ),
        Answer::Hang => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            (StatusCode::OK, Json(json!({ "rejected": [] })))
        }
    }
}

impl Gateway {
    /// Starts a gateway on a free loopback port.
    pub async fn start() -> anyhow::Result<Self> {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = axum::Router::new()
            .route("/_matrix/push/v1/notify", post(notify))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/_matrix/push/v1/notify", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, inner, task })
    }

    /// Answers the next requests so, in order (then [`Answer::Accept`]).
    pub fn answer(&self, answers: impl IntoIterator<Item = Answer>) {
        lock(&self.inner).answers.extend(answers);
    }

    /// Every notification received so far, in order.
    pub fn seen(&self) -> Vec<Value> {
        lock(&self.inner).seen.clone()
    }

    /// Waits (at most `within`) until `n` notifications came; returns them all.
    pub async fn wait_for(&self, n: usize, within: Duration) -> anyhow::Result<Vec<Value>> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let seen = self.seen();
            if seen.len() >= n {
                return Ok(seen);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{} of {n} notifications in {within:?}: {seen:?}",
                seen.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
