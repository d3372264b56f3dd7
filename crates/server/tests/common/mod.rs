//! Test harness: a real server on 127.0.0.1:0 over SQLite (temp file) or PostgreSQL (a fresh
//! schema in `WRENN_TEST_POSTGRES_URL`), driven with reqwest.

#![allow(dead_code)]

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::path::PathBuf;
use wrenn_server::auth::Principal;
use wrenn_server::{AppState, build_app, db::Db};

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs one async test body against both databases: `both_backends!(name);` expects
/// `async fn name(s: TestServer)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                if let Some(s) = $crate::common::TestServer::start($crate::common::Backend::Sqlite).await {
                    super::$name(&s).await;
                    s.stop().await;
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(s) = $crate::common::TestServer::start($crate::common::Backend::Postgres).await {
                    super::$name(&s).await;
                    s.stop().await;
                }
            }
        }
    )*};
}

pub struct TestServer {
    pub base: String,
    pub http: reqwest::Client,
    pub state: AppState,
    dir: PathBuf,
    pg: Option<(String, String)>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

fn postgres_base_url() -> Option<String> {
    match std::env::var("WRENN_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!(
                "WRENN_TEST_POSTGRES_URL is not set; CI must run the PostgreSQL tests (scripts/test.sh sets it)"
            )
        }
        _ => {
            eprintln!("note: WRENN_TEST_POSTGRES_URL not set; skipping the PostgreSQL variant");
            None
        }
    }
}

impl TestServer {
    pub async fn start(backend: Backend) -> Option<TestServer> {
        let dir = std::env::temp_dir().join(unique("wrenn-server-test-"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (url, pg) = match backend {
            Backend::Sqlite => (
                wrenn_server::config::sqlite_url(&dir.join("wrenn.db")),
                None,
            ),
            Backend::Postgres => {
                let base = postgres_base_url()?;
                // A schema per test: tests run in parallel on one database.
                let schema = unique("wrenn_t_");
                let admin = Db::connect(&base)
                    .await
                    .expect("connect to WRENN_TEST_POSTGRES_URL");
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                    .execute(admin.pool())
                    .await
                    .expect("create schema");
                admin.close().await;
                let sep = if base.contains('?') { '&' } else { '?' };
                let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
                (url, Some((base, schema)))
            }
        };
        let db = Db::open(&url).await.expect("open and migrate database");
        let state = AppState::new(db, b"test secret, at least 32 bytes long".to_vec());
        state.builds().set_dir(dir.join("builds"));
        let app = build_app(state.clone()).merge(test_routes(state.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .expect("serve");
        });
        Some(TestServer {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            state,
            dir,
            pg,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.state.db().close().await;
        if let Some((base, schema)) = self.pg.take()
            && let Ok(admin) = Db::connect(&base).await
        {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(admin.pool())
                .await;
            admin.close().await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request; returns status, headers and the body parsed as JSON (Null if empty).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        cred: Cred<'_>,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut req = self.http.request(method, self.url(path));
        req = match cred {
            Cred::None => req,
            Cred::Bearer(t) => req.bearer_auth(t),
            Cred::ApiKey(k) => req.header("X-API-Key", k),
        };
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body");
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, headers, value)
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        cred: Cred<'_>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (s, _, v) = self.send(method, path, cred, body).await;
        (s, v)
    }

    pub async fn get(&self, path: &str, cred: Cred<'_>) -> (StatusCode, Value) {
        self.call(Method::GET, path, cred, None).await
    }

    pub async fn post(&self, path: &str, cred: Cred<'_>, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, cred, Some(body)).await
    }

    /// Signs up (activated at once) and logs in.
    pub async fn user(&self, email: &str, name: &str) -> Auth {
        let (s, v) = self
            .post(
                "/v1/auth/signup",
                Cred::None,
                json!({"email": email, "password": "password123", "name": name}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "signup {email}: {v}");
        self.login(email, "password123").await
    }

    pub async fn login(&self, email: &str, password: &str) -> Auth {
        let (s, v) = self
            .post(
                "/v1/auth/login",
                Cred::None,
                json!({"email": email, "password": password}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "login {email}: {v}");
        Auth::from(&v)
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Cred<'a> {
    None,
    Bearer(&'a str),
    ApiKey(&'a str),
}

#[derive(Debug, Clone)]
pub struct Auth {
    pub token: String,
    pub user_id: String,
    pub team_id: String,
    pub email: String,
}

impl Auth {
    pub fn from(v: &Value) -> Auth {
        let s = |k: &str| {
            v[k].as_str()
                .unwrap_or_else(|| panic!("{k} in {v}"))
                .to_owned()
        };
        Auth {
            token: s("token"),
            user_id: s("user_id"),
            team_id: s("team_id"),
            email: s("email"),
        }
    }

    pub fn bearer(&self) -> Cred<'_> {
        Cred::Bearer(&self.token)
    }
}

/// Asserts the error envelope and its code.
pub fn assert_error(status: StatusCode, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status.as_u16(), want_status, "body: {body}");
    assert_eq!(body["error"]["code"], want_code, "body: {body}");
    assert!(body["error"]["message"].is_string(), "body: {body}");
}

/// A route that takes any credential, the way capsule routes will: `/test/whoami`.
fn test_routes(state: AppState) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/test/whoami",
            get(|p: Principal| async move {
                let actor = match &p.actor {
                    wrenn_server::auth::Actor::User(u) => {
                        json!({"type": "user", "id": u.id, "role": u.role, "is_admin": u.is_admin})
                    }
                    wrenn_server::auth::Actor::ApiKey(k) => {
                        json!({"type": "api_key", "id": k.id, "name": k.name})
                    }
                };
                axum::Json(json!({"team_id": p.team_id, "actor": actor}))
            }),
        )
        .with_state(state)
}
