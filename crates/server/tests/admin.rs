//! Admin routes (spec §B.13), hosts (§B.10) and the dashboard's static serving, over HTTP on
//! SQLite and PostgreSQL.

mod common;

use common::{Cred, TestServer, assert_error};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn put(s: &TestServer, path: &str, cred: Cred<'_>, body: Value) -> (StatusCode, Value) {
    s.call(Method::PUT, path, cred, Some(body)).await
}

async fn users_by_email(s: &TestServer, cred: Cred<'_>) -> Value {
    let (st, v) = s.get("/v1/admin/users", cred).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v
}

fn find<'a>(list: &'a Value, key: &str, field: &str, want: &str) -> &'a Value {
    list[key]
        .as_array()
        .and_then(|a| a.iter().find(|u| u[field] == want))
        .unwrap_or_else(|| panic!("{want} not in {list}"))
}

async fn admin_users_and_flags(s: &TestServer) {
    let admin = s.user("root@example.com", "Root").await; // first active user → admin
    let bob = s.user("bob@example.com", "Bob").await;

    // Non-admins and API keys are refused; no credential is 401.
    let (st, v) = s.get("/v1/admin/users", bob.bearer()).await;
    assert_error(st, &v, 403, "forbidden");
    let (st, v) = s.get("/v1/admin/users", Cred::None).await;
    assert_error(st, &v, 401, "unauthorized");
    let (_, key) = s
        .post("/v1/api-keys", admin.bearer(), json!({"name": "k"}))
        .await;
    let key = key["key"].as_str().expect("key").to_owned();
    let (st, v) = s.get("/v1/admin/users", Cred::ApiKey(&key)).await;
    assert_error(st, &v, 401, "unauthorized");

    // /v1/me tells the dashboard who is an admin.
    let (_, me) = s.get("/v1/me", admin.bearer()).await;
    assert_eq!(me["is_admin"], true, "{me}");
    assert_eq!(me["team_id"], admin.team_id.as_str(), "{me}");
    assert_eq!(me["role"], "owner", "{me}");
    let (_, me) = s.get("/v1/me", bob.bearer()).await;
    assert_eq!(me["is_admin"], false, "{me}");

    let list = users_by_email(s, admin.bearer()).await;
    assert_eq!(list["total"], 2, "{list}");
    assert_eq!(list["page"], 1);
    assert_eq!(list["per_page"], 100);
    assert_eq!(list["total_pages"], 1);
    let b = find(&list, "users", "email", "bob@example.com");
    assert_eq!(b["is_admin"], false);
    assert_eq!(b["status"], "active");
    assert_eq!(b["teams_joined"], 1);
    assert_eq!(b["teams_owned"], 1);
    let (st, v) = s.get("/v1/admin/users?page=0", admin.bearer()).await;
    assert_error(st, &v, 400, "invalid_request");

    // Self-deactivation and revoking the last admin are refused.
    let path = format!("/v1/admin/users/{}/active", admin.user_id);
    let (st, v) = put(s, &path, admin.bearer(), json!({"active": false})).await;
    assert_error(st, &v, 400, "invalid_request");
    let path = format!("/v1/admin/users/{}/admin", admin.user_id);
    let (st, v) = put(s, &path, admin.bearer(), json!({"admin": false})).await;
    assert_error(st, &v, 400, "invalid_request");
    let (st, v) = put(
        s,
        "/v1/admin/users/usr-nope/admin",
        admin.bearer(),
        json!({"admin": true}),
    )
    .await;
    assert_error(st, &v, 400, "invalid_request");

    // Grant bob admin: he can use admin routes; then revoke.
    let bob_admin = format!("/v1/admin/users/{}/admin", bob.user_id);
    let (st, v) = put(s, &bob_admin, admin.bearer(), json!({"admin": true})).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    let (st, _) = s.get("/v1/admin/users", bob.bearer()).await;
    assert_eq!(st, StatusCode::OK);
    let (st, v) = put(s, &bob_admin, admin.bearer(), json!({"admin": false})).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    let (st, v) = s.get("/v1/admin/users", bob.bearer()).await;
    assert_error(st, &v, 403, "forbidden");

    // Deactivate bob: his token stops working and his keys are gone; reactivate.
    let (_, bob_key) = s
        .post("/v1/api-keys", bob.bearer(), json!({"name": "bk"}))
        .await;
    let bob_key = bob_key["key"].as_str().expect("key").to_owned();
    let bob_active = format!("/v1/admin/users/{}/active", bob.user_id);
    let (st, v) = put(s, &bob_active, admin.bearer(), json!({"active": false})).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    let (st, v) = s.get("/v1/me", bob.bearer()).await;
    assert_error(st, &v, 403, "account_deactivated");
    let (st, v) = s.get("/v1/capsules", Cred::ApiKey(&bob_key)).await;
    assert_error(st, &v, 401, "unauthorized");
    let list = users_by_email(s, admin.bearer()).await;
    assert_eq!(
        find(&list, "users", "email", "bob@example.com")["status"],
        "disabled"
    );
    let (st, v) = put(s, &bob_active, admin.bearer(), json!({"active": true})).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    let (st, _) = s.get("/v1/me", bob.bearer()).await;
    assert_eq!(st, StatusCode::OK);

    // Both actions are in the platform team's audit trail? At least the admin's own team log
    // stays clean of them; the admin scope rows are written under the platform team.
    let (st, v) = put(
        s,
        "/v1/admin/users/usr-0000000000000000000000000/active",
        admin.bearer(),
        json!({"active": true}),
    )
    .await;
    assert!(
        st == StatusCode::NOT_FOUND || st == StatusCode::BAD_REQUEST,
        "{st} {v}"
    );
}

async fn admin_teams(s: &TestServer) {
    let admin = s.user("root@example.com", "Root").await;
    let bob = s.user("bob@example.com", "Bob").await;
    let (st, v) = s.get("/v1/admin/teams", bob.bearer()).await;
    assert_error(st, &v, 403, "forbidden");

    let (st, list) = s.get("/v1/admin/teams", admin.bearer()).await;
    assert_eq!(st, StatusCode::OK, "{list}");
    assert_eq!(list["total"], 2, "the platform team is not listed: {list}");
    let t = find(&list, "teams", "id", &bob.team_id);
    assert_eq!(t["member_count"], 1);
    assert_eq!(t["owner_email"], "bob@example.com");
    assert_eq!(t["active_sandbox_count"], 0);
    assert!(t.get("deleted_at").is_none(), "{t}");

    let (st, v) = s
        .call(
            Method::DELETE,
            "/v1/admin/teams/team-0000000000000000000000000",
            admin.bearer(),
            None,
        )
        .await;
    assert!(
        st == StatusCode::FORBIDDEN || st == StatusCode::NOT_FOUND || st == StatusCode::BAD_REQUEST,
        "{st} {v}"
    );
    let path = format!("/v1/admin/teams/{}", bob.team_id);
    let (st, v) = s.call(Method::DELETE, &path, bob.bearer(), None).await;
    assert_error(st, &v, 403, "forbidden");
    let (st, v) = s.call(Method::DELETE, &path, admin.bearer(), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    let (st, v) = s.call(Method::DELETE, &path, admin.bearer(), None).await;
    assert_error(st, &v, 404, "not_found");
    let (_, list) = s.get("/v1/admin/teams", admin.bearer()).await;
    assert!(
        find(&list, "teams", "id", &bob.team_id)["deleted_at"].is_string(),
        "{list}"
    );
}

async fn admin_templates(s: &TestServer) {
    let admin = s.user("root@example.com", "Root").await;
    let bob = s.user("bob@example.com", "Bob").await;
    let (st, v) = s.get("/v1/admin/templates", bob.bearer()).await;
    assert_error(st, &v, 403, "forbidden");
    let (st, list) = s.get("/v1/admin/templates", admin.bearer()).await;
    assert_eq!(st, StatusCode::OK, "{list}");
    let minimal = list
        .as_array()
        .and_then(|a| a.iter().find(|t| t["name"] == "minimal"))
        .unwrap_or_else(|| panic!("minimal in {list}"));
    assert_eq!(minimal["platform"], true);
    assert_eq!(minimal["protected"], true);
    assert_eq!(minimal["type"], "base");

    let (st, v) = s
        .call(
            Method::DELETE,
            "/v1/admin/templates/minimal",
            admin.bearer(),
            None,
        )
        .await;
    assert_error(st, &v, 403, "forbidden");
    let (st, v) = s
        .call(
            Method::DELETE,
            "/v1/admin/templates/nope",
            admin.bearer(),
            None,
        )
        .await;
    assert_error(st, &v, 404, "not_found");
    let (st, v) = s
        .call(
            Method::DELETE,
            "/v1/admin/templates/bad%20name",
            admin.bearer(),
            None,
        )
        .await;
    assert_error(st, &v, 400, "invalid_request");
    let (st, v) = s
        .call(
            Method::DELETE,
            "/v1/admin/templates/minimal",
            bob.bearer(),
            None,
        )
        .await;
    assert_error(st, &v, 403, "forbidden");
}

async fn hosts_list(s: &TestServer) {
    let admin = s.user("root@example.com", "Root").await;
    let bob = s.user("bob@example.com", "Bob").await;
    let (st, v) = s.get("/v1/hosts", Cred::None).await;
    assert_error(st, &v, 401, "unauthorized");
    let (st, all) = s.get("/v1/hosts", admin.bearer()).await;
    assert_eq!(st, StatusCode::OK, "{all}");
    let all = all.as_array().expect("array").clone();
    // A regular (platform) host is visible to admins only.
    let (st, mine) = s.get("/v1/hosts", bob.bearer()).await;
    assert_eq!(st, StatusCode::OK, "{mine}");
    assert_eq!(mine, json!([]));
    for h in &all {
        assert!(
            h["id"].as_str().is_some_and(|id| id.starts_with("host-")),
            "{h}"
        );
        assert!(h["status"].is_string(), "{h}");
        let path = format!("/v1/hosts/{}", h["id"].as_str().unwrap_or_default());
        let (st, one) = s.get(&path, admin.bearer()).await;
        assert_eq!(st, StatusCode::OK, "{one}");
        assert_eq!(one["id"], h["id"]);
        let (st, v) = s.get(&path, bob.bearer()).await;
        assert_error(st, &v, 404, "not_found");
    }
    let (st, v) = s.get("/v1/hosts/host-nope", admin.bearer()).await;
    assert_error(st, &v, 400, "invalid_request");
}

async fn dashboard_serving(s: &TestServer) {
    let http = &s.http;
    let get = |path: &str| http.get(s.url(path)).header("Accept-Encoding", "br, gzip");

    // The shell (or the "not built" page) at / and at any app path, never cached.
    for path in ["/", "/capsules", "/capsules/cl-abc?tab=files", "/login"] {
        let r = get(path).send().await.expect("request");
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let ct = r.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap_or_default()
            .to_owned();
        assert!(ct.starts_with("text/html"), "{path}: {ct}");
        assert_eq!(
            r.headers()[reqwest::header::CACHE_CONTROL],
            "no-cache",
            "{path}"
        );
    }
    // API paths keep their JSON 404 and their behaviour.
    for path in [
        "/v1/nope",
        "/v1",
        "/api/v1/nope",
        "/health/x",
        "/openapi.json/x",
    ] {
        let (st, v) = s.get(path, Cred::None).await;
        assert_error(st, &v, 404, "not_found");
    }
    let (st, v) = s.get("/health", Cred::None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "ok");
    let (st, v) = s.get("/openapi.json", Cred::None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        v["paths"]["/v1/admin/users"].is_object(),
        "admin routes documented"
    );
    assert!(v["paths"]["/v1/hosts"].is_object(), "hosts documented");
    // Other methods on app paths are not the SPA.
    let (st, v) = s.post("/capsules", Cred::None, json!({})).await;
    assert_error(st, &v, 404, "not_found");
    // HEAD works and has no body.
    let r = http.head(s.url("/")).send().await.expect("head");
    assert_eq!(r.status(), StatusCode::OK);

    if !wrenn_server::web::ui_built() {
        let body = get("/")
            .send()
            .await
            .expect("req")
            .text()
            .await
            .expect("text");
        assert!(body.contains("npm run build"), "{body}");
        eprintln!("note: web/build missing; only the not-built page was checked");
        return;
    }
    // Built UI: the shell is precompressed, hashed assets are immutable, ETags revalidate.
    let r = get("/").send().await.expect("req");
    assert_eq!(r.headers()[reqwest::header::CONTENT_ENCODING], "br");
    let etag = r.headers()[reqwest::header::ETAG].clone();
    let r = http
        .get(s.url("/"))
        .header("If-None-Match", etag)
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let html = http
        .get(s.url("/"))
        .send()
        .await
        .expect("req")
        .text()
        .await
        .expect("text");
    assert!(html.contains("/_app/immutable/"), "{html}");
    let start = html.find("/_app/immutable/").unwrap_or_default();
    let end = start + html[start..].find('"').unwrap_or_default();
    let asset = &html[start..end];
    let r = get(asset).send().await.expect("asset");
    assert_eq!(r.status(), StatusCode::OK, "{asset}");
    assert_eq!(
        r.headers()[reqwest::header::CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );
    assert!(
        r.headers().contains_key(reqwest::header::CONTENT_ENCODING),
        "{asset}"
    );
    let r = http
        .get(s.url(asset))
        .header("Accept-Encoding", "identity")
        .send()
        .await
        .expect("asset");
    assert!(!r.headers().contains_key(reqwest::header::CONTENT_ENCODING));
    assert!(
        r.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap_or_default()
            .contains("javascript")
    );
    // A missing hashed asset is a 404, not the HTML shell.
    let r = get("/_app/immutable/chunks/nope.js")
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

both_backends!(
    admin_users_and_flags,
    admin_teams,
    admin_templates,
    hosts_list,
    dashboard_serving
);
