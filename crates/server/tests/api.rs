//! The account/team side of the REST API, over real HTTP, against SQLite and PostgreSQL.

mod common;

use base64::Engine;
use common::{Auth, Cred, TestServer, assert_error};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

both_backends!(
    health_and_openapi,
    signup_login_me,
    api_keys_lifecycle_and_use,
    credential_errors,
    teams_members_and_roles,
    switch_team,
    other_teams_resources_are_not_found,
    audit_log_pagination,
    request_body_errors,
    browser_session_and_csrf,
    password_change_and_account_deletion,
    bootstrap_admin_key,
    user_search,
);

fn jwt_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("b64");
    serde_json::from_slice(&bytes).expect("claims json")
}

async fn health_and_openapi(s: &TestServer) {
    let (st, v) = s.get("/health", Cred::None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["status"], "ok");
    assert!(v["version"].is_string());

    let (st, doc) = s.get("/openapi.json", Cred::None).await;
    assert_eq!(st, StatusCode::OK);
    for path in [
        "/v1/auth/login",
        "/v1/api-keys",
        "/v1/teams/{id}/members",
        "/v1/audit-logs",
        "/health",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());

    let resp = s.http.get(s.url("/docs/")).send().await.expect("docs");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.text()
            .await
            .expect("html")
            .to_lowercase()
            .contains("swagger")
    );

    // Unknown routes and methods answer with the envelope too.
    let (st, v) = s.get("/v1/nope", Cred::None).await;
    assert_error(st, &v, 404, "not_found");
    let (st, v) = s.call(Method::PUT, "/health", Cred::None, None).await;
    assert_error(st, &v, 405, "invalid_request");
}

async fn signup_login_me(s: &TestServer) {
    let first = s.user("Alice@Example.com ", "Alice").await;
    assert_eq!(first.email, "alice@example.com");
    assert!(first.user_id.starts_with("usr-") && first.user_id.len() == 29);
    assert!(first.team_id.starts_with("team-"));
    let claims = jwt_claims(&first.token);
    assert_eq!(claims["sub"], first.user_id);
    assert_eq!(claims["role"], "owner");
    assert_eq!(
        claims["is_admin"], true,
        "the first active user is platform admin"
    );
    assert_eq!(
        claims["exp"].as_i64().unwrap_or(0) - claims["iat"].as_i64().unwrap_or(0),
        6 * 3600
    );

    let second = s.user("bob@example.com", "Bob").await;
    assert!(
        jwt_claims(&second.token).get("is_admin").is_none(),
        "is_admin omitted when false"
    );

    // The default team was created once; logging in again lands in it.
    let again = s.login("alice@example.com", "password123").await;
    assert_eq!(again.team_id, first.team_id);

    let (st, me) = s.get("/v1/me", first.bearer()).await;
    assert_eq!(st, StatusCode::OK, "{me}");
    // Spec fields, plus who the token acts as (the dashboard needs team and role); the first
    // user to sign up on a fresh server is its platform admin.
    assert_eq!(
        me,
        json!({
            "name": "Alice", "email": "alice@example.com", "has_password": true, "providers": [],
            "user_id": first.user_id, "team_id": first.team_id, "role": "owner", "is_admin": true
        })
    );
    // Same API under /api (the SDK's default base URL ends in /api).
    let (st, me2) = s.get("/api/v1/me", first.bearer()).await;
    assert_eq!((st, me2), (StatusCode::OK, me));

    let (st, v) = s
        .call(
            Method::PATCH,
            "/v1/me",
            first.bearer(),
            Some(json!({"name": "Alice B"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["name"], "Alice B");
    assert_eq!(
        jwt_claims(v["token"].as_str().unwrap_or_default())["name"],
        "Alice B"
    );

    // Signup rules.
    let signup = |email: &str, password: &str, name: &str| json!({"email": email, "password": password, "name": name});
    let (st, v) = s
        .post(
            "/v1/auth/signup",
            Cred::None,
            signup("alice@example.com", "password123", "A"),
        )
        .await;
    assert_error(st, &v, 409, "email_taken");
    let (st, v) = s
        .post(
            "/v1/auth/signup",
            Cred::None,
            signup("nope", "password123", "A"),
        )
        .await;
    assert_error(st, &v, 400, "invalid_request");
    let (st, v) = s
        .post(
            "/v1/auth/signup",
            Cred::None,
            signup("c@example.com", "short", "A"),
        )
        .await;
    assert_error(st, &v, 400, "invalid_request");
    let (st, v) = s
        .post(
            "/v1/auth/signup",
            Cred::None,
            signup("c@example.com", "password123", " "),
        )
        .await;
    assert_error(st, &v, 400, "invalid_request");

    // Login failures don't say which part was wrong.
    let (st, v) = s
        .post(
            "/v1/auth/login",
            Cred::None,
            json!({"email": "alice@example.com", "password": "wrong-password"}),
        )
        .await;
    assert_error(st, &v, 401, "unauthorized");
    let (st, v2) = s
        .post(
            "/v1/auth/login",
            Cred::None,
            json!({"email": "ghost@example.com", "password": "wrong-password"}),
        )
        .await;
    assert_error(st, &v2, 401, "unauthorized");
    assert_eq!(v["error"]["message"], v2["error"]["message"]);

    // Activation tokens: none issued (no email service) → invalid_token.
    let (st, v) = s
        .post(
            "/v1/auth/activate",
            Cred::None,
            json!({"token": "00112233445566778899aabbccddeeff"}),
        )
        .await;
    assert_error(st, &v, 400, "invalid_token");
    // OAuth is not configured.
    let (st, v) = s.get("/auth/oauth/github", Cred::None).await;
    assert_error(st, &v, 404, "provider_not_found");
    let (st, v) = s.get("/v1/auth/oauth/github", Cred::None).await;
    assert_error(st, &v, 404, "provider_not_found");
}

async fn api_keys_lifecycle_and_use(s: &TestServer) {
    let alice = s.user("alice@example.com", "Alice").await;
    let (st, created) = s
        .post("/v1/api-keys", alice.bearer(), json!({"name": "ci"}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{created}");
    let key = created["key"].as_str().expect("key").to_owned();
    assert!(
        key.starts_with("wrn_")
            && key.len() == 36
            && key[4..].bytes().all(|b| b.is_ascii_hexdigit())
    );
    assert_eq!(created["key_prefix"], key[..10]);
    assert_eq!(created["team_id"], alice.team_id);
    assert_eq!(created["created_by"], alice.user_id);
    assert!(
        created["id"]
            .as_str()
            .unwrap_or_default()
            .starts_with("key-")
    );
    assert!(
        created["created_at"]
            .as_str()
            .unwrap_or_default()
            .ends_with('Z')
    );

    // No body at all: default name.
    let resp = s
        .http
        .post(s.url("/v1/api-keys"))
        .bearer_auth(&alice.token)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let unnamed: Value = resp.json().await.expect("json");
    assert_eq!(unnamed["name"], "Unnamed API Key");

    let (st, list) = s.get("/v1/api-keys", alice.bearer()).await;
    assert_eq!(st, StatusCode::OK);
    let list = list.as_array().expect("array").clone();
    assert_eq!(list.len(), 2);
    assert!(
        list.iter().all(|k| k.get("key").is_none()),
        "plaintext never listed"
    );
    let ci = list.iter().find(|k| k["name"] == "ci").expect("ci key");
    assert_eq!(ci["creator_email"], "alice@example.com");
    assert!(ci.get("last_used").is_none());

    // Use it: the key authenticates as the team, and last_used is recorded.
    let (st, who) = s.get("/test/whoami", Cred::ApiKey(&key)).await;
    assert_eq!(st, StatusCode::OK, "{who}");
    assert_eq!(who["team_id"], alice.team_id);
    assert_eq!(who["actor"]["type"], "api_key");
    assert_eq!(who["actor"]["name"], "ci");
    let (_, list) = s.get("/v1/api-keys", alice.bearer()).await;
    let ci = list
        .as_array()
        .and_then(|l| l.iter().find(|k| k["name"] == "ci").cloned())
        .expect("ci");
    assert!(ci["last_used"].is_string(), "{ci}");

    // API keys don't open the user-only routes.
    let (st, v) = s.get("/v1/api-keys", Cred::ApiKey(&key)).await;
    assert_error(st, &v, 401, "unauthorized");

    // Revoke: the key stops working; a second delete is a 404.
    let id = created["id"].as_str().expect("id");
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/api-keys/{id}"),
            alice.bearer(),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, v) = s.get("/test/whoami", Cred::ApiKey(&key)).await;
    assert_error(st, &v, 401, "unauthorized");
    let (st, v) = s
        .call(
            Method::DELETE,
            &format!("/v1/api-keys/{id}"),
            alice.bearer(),
            None,
        )
        .await;
    assert_error(st, &v, 404, "not_found");
    let (st, v) = s
        .call(Method::DELETE, "/v1/api-keys/key-bad", alice.bearer(), None)
        .await;
    assert_error(st, &v, 400, "invalid_request");
}

async fn credential_errors(s: &TestServer) {
    let alice = s.user("alice@example.com", "Alice").await;
    let (_, created) = s.post("/v1/api-keys", alice.bearer(), json!({})).await;
    let key = created["key"].as_str().expect("key").to_owned();

    let (st, v) = s.get("/test/whoami", Cred::None).await;
    assert_error(st, &v, 401, "unauthorized");
    let (st, v) = s.get("/v1/me", Cred::None).await;
    assert_error(st, &v, 401, "unauthorized");
    for bad in [
        "wrn_00000000000000000000000000000000",
        "wrn_short",
        "",
        "Bearer x",
    ] {
        let (st, v) = s.get("/test/whoami", Cred::ApiKey(bad)).await;
        assert_error(st, &v, 401, "unauthorized");
        assert_eq!(v["error"]["message"], "invalid API key");
    }
    let (st, v) = s.get("/v1/me", Cred::Bearer("not.a.jwt")).await;
    assert_error(st, &v, 401, "unauthorized");
    let mut forged = alice.token.clone();
    forged.push('x');
    let (st, v) = s.get("/v1/me", Cred::Bearer(&forged)).await;
    assert_error(st, &v, 401, "unauthorized");

    // Both headers: the API key wins, even when it is the invalid one.
    let resp = s
        .http
        .get(s.url("/test/whoami"))
        .bearer_auth(&alice.token)
        .header("X-API-Key", "wrn_ffffffffffffffffffffffffffffffff")
        .send()
        .await
        .expect("req");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = s
        .http
        .get(s.url("/test/whoami"))
        .bearer_auth("garbage")
        .header("X-API-Key", &key)
        .send()
        .await
        .expect("req");
    assert_eq!(resp.status(), StatusCode::OK);
    let who: Value = resp.json().await.expect("json");
    assert_eq!(who["actor"]["type"], "api_key");
}

async fn teams_members_and_roles(s: &TestServer) {
    let owner = s.user("owner@example.com", "Owner").await;
    let bob = s.user("bob@example.com", "Bob").await;
    let carol = s.user("carol@example.com", "Carol").await;
    let team = owner.team_id.clone();
    let base = format!("/v1/teams/{team}");

    let (st, v) = s.get(&base, owner.bearer()).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["team"]["id"], team);
    assert_eq!(v["team"]["name"], "Owner's Team");
    assert!(
        v["team"]["slug"]
            .as_str()
            .is_some_and(|s| s.len() == 13 && s.as_bytes()[6] == b'-')
    );
    assert_eq!(v["members"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["members"][0]["role"], "owner");

    // Add Bob and Carol; duplicates and unknown emails are refused.
    let members = format!("{base}/members");
    let (st, v) = s
        .post(
            &members,
            owner.bearer(),
            json!({"email": "bob@example.com"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["user_id"], bob.user_id);
    assert_eq!(v["role"], "member");
    let (st, v) = s
        .post(
            &members,
            owner.bearer(),
            json!({"email": "Bob@Example.com"}),
        )
        .await;
    assert_error(st, &v, 400, "invalid_request");
    let (st, v) = s
        .post(
            &members,
            owner.bearer(),
            json!({"email": "nobody@example.com"}),
        )
        .await;
    assert_error(st, &v, 404, "not_found");
    let (st, _) = s
        .post(
            &members,
            owner.bearer(),
            json!({"email": "carol@example.com"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);

    // Bob, a plain member, switches into the team: may read, may not manage.
    let (st, v) = s
        .post(
            "/v1/auth/switch-team",
            bob.bearer(),
            json!({"team_id": team}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let bob_in = Auth::from(&v);
    assert_eq!(jwt_claims(&bob_in.token)["role"], "member");
    let (st, v) = s.get(&members, bob_in.bearer()).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v.as_array().map(Vec::len), Some(3));
    let (st, v) = s
        .post(
            &members,
            bob_in.bearer(),
            json!({"email": "carol@example.com"}),
        )
        .await;
    assert_error(st, &v, 403, "forbidden");
    let (st, v) = s
        .call(
            Method::PATCH,
            &base,
            bob_in.bearer(),
            Some(json!({"name": "Mine"})),
        )
        .await;
    assert_error(st, &v, 403, "forbidden");

    // Promote Bob to admin: the same token now manages (roles are read from the database).
    let bob_member = format!("{members}/{}", bob.user_id);
    let (st, v) = s
        .call(
            Method::PATCH,
            &bob_member,
            owner.bearer(),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    let (st, v) = s
        .call(
            Method::PATCH,
            &base,
            bob_in.bearer(),
            Some(json!({"name": "Renamed Team"})),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    let (st, v) = s
        .call(
            Method::PATCH,
            &base,
            bob_in.bearer(),
            Some(json!({"name": "bad/name"})),
        )
        .await;
    assert_error(st, &v, 400, "invalid_request");
    let (st, v) = s
        .call(
            Method::PATCH,
            &bob_member,
            owner.bearer(),
            Some(json!({"role": "owner"})),
        )
        .await;
    assert_error(st, &v, 400, "invalid_request");
    let (st, v) = s
        .call(
            Method::PATCH,
            &bob_member,
            owner.bearer(),
            Some(json!({"role": "king"})),
        )
        .await;
    assert_error(st, &v, 400, "invalid_request");

    // Owner rules: role immutable, cannot be removed, cannot leave; only the owner deletes.
    let owner_member = format!("{members}/{}", owner.user_id);
    let (st, v) = s
        .call(
            Method::PATCH,
            &owner_member,
            bob_in.bearer(),
            Some(json!({"role": "member"})),
        )
        .await;
    assert_error(st, &v, 403, "forbidden");
    let (st, v) = s
        .call(Method::DELETE, &owner_member, bob_in.bearer(), None)
        .await;
    assert_error(st, &v, 403, "forbidden");
    let (st, v) = s
        .post(&format!("{base}/leave"), owner.bearer(), json!({}))
        .await;
    assert_error(st, &v, 403, "forbidden");
    let (st, v) = s.call(Method::DELETE, &base, bob_in.bearer(), None).await;
    assert_error(st, &v, 403, "forbidden");

    // Admin Bob removes Carol; Bob leaves; his team-scoped token stops working.
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("{members}/{}", carol.user_id),
            bob_in.bearer(),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, v) = s
        .call(
            Method::DELETE,
            &format!("{members}/{}", carol.user_id),
            bob_in.bearer(),
            None,
        )
        .await;
    assert_error(st, &v, 404, "not_found");
    let (st, _) = s
        .post(&format!("{base}/leave"), bob_in.bearer(), json!({}))
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, v) = s.get(&members, bob_in.bearer()).await;
    assert_error(st, &v, 403, "no_team");

    let (st, v) = s.get(&base, owner.bearer()).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["team"]["name"], "Renamed Team");
    assert_eq!(v["members"].as_array().map(Vec::len), Some(1));

    // Create a second team, then delete it (owner only, after switching into it).
    let (st, created) = s
        .post(
            "/v1/teams",
            owner.bearer(),
            json!({"name": "  Side Project  "}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{created}");
    assert_eq!(created["name"], "Side Project");
    assert_eq!(created["role"], "owner");
    let side = created["id"].as_str().expect("id").to_owned();
    let (st, list) = s.get("/v1/teams", owner.bearer()).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(list.as_array().map(Vec::len), Some(2));
    let (st, v) = s
        .call(
            Method::DELETE,
            &format!("/v1/teams/{side}"),
            owner.bearer(),
            None,
        )
        .await;
    assert_error(st, &v, 403, "forbidden"); // not the token's team yet
    let (_, v) = s
        .post(
            "/v1/auth/switch-team",
            owner.bearer(),
            json!({"team_id": side}),
        )
        .await;
    let owner_side = Auth::from(&v);
    let (_, key) = s
        .post("/v1/api-keys", owner_side.bearer(), json!({"name": "side"}))
        .await;
    let side_key = key["key"].as_str().expect("key").to_owned();
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/teams/{side}"),
            owner_side.bearer(),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = s.get("/test/whoami", Cred::ApiKey(&side_key)).await;
    assert_eq!(
        st,
        StatusCode::UNAUTHORIZED,
        "a deleted team's keys are gone"
    );
    let (_, list) = s.get("/v1/teams", owner.bearer()).await;
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    let (st, v) = s
        .post("/v1/teams", owner.bearer(), json!({"name": ""}))
        .await;
    assert_error(st, &v, 400, "invalid_request");
}

async fn switch_team(s: &TestServer) {
    let alice = s.user("alice@example.com", "Alice").await;
    let bob = s.user("bob@example.com", "Bob").await;
    let (_, t) = s
        .post("/v1/teams", alice.bearer(), json!({"name": "Second"}))
        .await;
    let second = t["id"].as_str().expect("id").to_owned();

    let (st, v) = s.get(&format!("/v1/teams/{second}"), alice.bearer()).await;
    assert_error(st, &v, 403, "forbidden");

    let (st, v) = s
        .post(
            "/v1/auth/switch-team",
            alice.bearer(),
            json!({"team_id": second}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let switched = Auth::from(&v);
    assert_eq!(switched.team_id, second);
    assert_eq!(jwt_claims(&switched.token)["team_id"], second);
    let (st, _) = s
        .get(&format!("/v1/teams/{second}"), switched.bearer())
        .await;
    assert_eq!(st, StatusCode::OK);
    // Keys created now belong to the second team.
    let (_, k) = s.post("/v1/api-keys", switched.bearer(), json!({})).await;
    assert_eq!(k["team_id"], second);

    let (st, v) = s
        .post(
            "/v1/auth/switch-team",
            bob.bearer(),
            json!({"team_id": second}),
        )
        .await;
    assert_error(st, &v, 403, "forbidden");
    let (st, v) = s
        .post(
            "/v1/auth/switch-team",
            alice.bearer(),
            json!({"team_id": "team-0000000000000000000000009"}),
        )
        .await;
    assert_error(st, &v, 404, "not_found");
    let (st, v) = s
        .post(
            "/v1/auth/switch-team",
            alice.bearer(),
            json!({"team_id": "usr-0000000000000000000000009"}),
        )
        .await;
    assert_error(st, &v, 400, "invalid_request");
    let (st, v) = s
        .post(
            "/v1/auth/switch-team",
            Cred::None,
            json!({"team_id": second}),
        )
        .await;
    assert_error(st, &v, 401, "unauthorized");
}

async fn other_teams_resources_are_not_found(s: &TestServer) {
    let alice = s.user("alice@example.com", "Alice").await;
    let mallory = s.user("mallory@example.com", "Mallory").await;
    let (_, k) = s
        .post("/v1/api-keys", alice.bearer(), json!({"name": "alice's"}))
        .await;
    let id = k["id"].as_str().expect("id").to_owned();
    let key = k["key"].as_str().expect("key").to_owned();

    let (st, v) = s
        .call(
            Method::DELETE,
            &format!("/v1/api-keys/{id}"),
            mallory.bearer(),
            None,
        )
        .await;
    assert_error(st, &v, 404, "not_found");
    let (_, list) = s.get("/v1/api-keys", mallory.bearer()).await;
    assert_eq!(list, json!([]));
    let (st, _) = s.get("/test/whoami", Cred::ApiKey(&key)).await;
    assert_eq!(st, StatusCode::OK, "alice's key survives");
    let (st, v) = s
        .get(
            &format!("/v1/teams/{}/members", alice.team_id),
            mallory.bearer(),
        )
        .await;
    assert_error(st, &v, 403, "forbidden");
    let (st, v) = s
        .post(
            "/v1/auth/switch-team",
            mallory.bearer(),
            json!({"team_id": alice.team_id}),
        )
        .await;
    assert_error(st, &v, 403, "forbidden");
    let (_, logs) = s.get("/v1/audit-logs", mallory.bearer()).await;
    assert!(
        logs["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|e| e["resource_id"] != id.as_str()),
        "another team's audit rows are invisible"
    );
}

async fn audit_log_pagination(s: &TestServer) {
    let owner = s.user("owner@example.com", "Owner").await;
    let _member = s.user("member@example.com", "Member").await;
    let mut key_ids = Vec::new();
    for i in 0..7 {
        let (_, k) = s
            .post(
                "/v1/api-keys",
                owner.bearer(),
                json!({"name": format!("k{i}")}),
            )
            .await;
        key_ids.push(k["id"].as_str().expect("id").to_owned());
    }
    let (_, _) = s
        .post(
            &format!("/v1/teams/{}/members", owner.team_id),
            owner.bearer(),
            json!({"email": "member@example.com"}),
        )
        .await;

    // Walk all pages of api_key/create, 3 at a time.
    let mut seen = Vec::new();
    let mut cursor: Option<(String, String)> = None;
    for _ in 0..10 {
        let mut path = "/v1/audit-logs?limit=3&resource_type=api_key&action=create".to_owned();
        if let Some((before, before_id)) = &cursor {
            path.push_str(&format!(
                "&before={}&before_id={before_id}",
                before.replace(':', "%3A")
            ));
        }
        let (st, page) = s.get(&path, owner.bearer()).await;
        assert_eq!(st, StatusCode::OK, "{page}");
        let items = page["items"].as_array().expect("items").clone();
        if items.is_empty() {
            assert!(page.get("next_before").is_none());
            break;
        }
        assert!(items.len() <= 3);
        for e in &items {
            assert_eq!(e["resource_type"], "api_key");
            assert_eq!(e["actor_type"], "user");
            assert_eq!(e["actor_id"], owner.user_id);
            assert_eq!(e["scope"], "team");
            assert_eq!(e["status"], "success");
            assert!(e["id"].as_str().is_some_and(|id| id.starts_with("log-")));
            seen.push(e["resource_id"].as_str().expect("rid").to_owned());
        }
        cursor = Some((
            page["next_before"]
                .as_str()
                .expect("next_before")
                .to_owned(),
            page["next_before_id"]
                .as_str()
                .expect("next_before_id")
                .to_owned(),
        ));
    }
    let mut newest_first = key_ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first, "every key once, newest first");

    // Filters: comma-separated and repeated values are OR-ed.
    let (_, page) = s
        .get(
            "/v1/audit-logs?resource_type=member,team&action=add&action=activate",
            owner.bearer(),
        )
        .await;
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(items[0]["action"], "add");
    assert_eq!(items[0]["scope"], "admin");

    // A plain member doesn't see admin-scope rows.
    let (_, v) = s
        .post(
            "/v1/auth/switch-team",
            Cred::Bearer(&s.login("member@example.com", "password123").await.token),
            json!({"team_id": owner.team_id}),
        )
        .await;
    let member_in = Auth::from(&v);
    let (_, page) = s.get("/v1/audit-logs?limit=200", member_in.bearer()).await;
    let items = page["items"].as_array().expect("items");
    assert!(!items.is_empty());
    assert!(items.iter().all(|e| e["scope"] == "team"), "{page}");

    for bad in [
        "limit=0",
        "limit=201",
        "limit=x",
        "before=yesterday",
        "before_id=log-1",
        "before_id=log-0000000000000000000000001",
    ] {
        let (st, v) = s
            .get(&format!("/v1/audit-logs?{bad}"), owner.bearer())
            .await;
        assert_error(st, &v, 400, "invalid_request");
    }
}

async fn request_body_errors(s: &TestServer) {
    let alice = s.user("alice@example.com", "Alice").await;
    let raw = |body: &'static str, ct: Option<&'static str>| {
        let mut req = s
            .http
            .post(s.url("/v1/teams"))
            .bearer_auth(&alice.token)
            .body(body);
        if let Some(ct) = ct {
            req = req.header("Content-Type", ct);
        }
        req
    };
    for (body, ct) in [
        ("{not json", Some("application/json")),
        ("[1,2]", Some("application/json")),
        ("{\"name\": 5}", None),
    ] {
        let resp = raw(body, ct).send().await.expect("send");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let v: Value = resp.json().await.expect("json envelope");
        assert_eq!(v["error"]["code"], "invalid_request", "{v}");
    }
    let resp = raw("name=x", Some("application/x-www-form-urlencoded"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let v: Value = resp.json().await.expect("json envelope");
    assert_eq!(v["error"]["code"], "invalid_request");

    // Unknown fields are ignored.
    let (st, v) = s
        .post(
            "/v1/teams",
            alice.bearer(),
            json!({"name": "Extra", "colour": "blue"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");

    // Over the body limit (1 MiB).
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let resp = s
        .http
        .post(s.url("/v1/teams"))
        .bearer_auth(&alice.token)
        .header("Content-Type", "application/json")
        .body(big)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let v: Value = resp.json().await.expect("json envelope");
    assert_eq!(v["error"]["code"], "too_large");
}

async fn browser_session_and_csrf(s: &TestServer) {
    let _ = s.user("alice@example.com", "Alice").await;
    let resp = s
        .http
        .post(s.url("/v1/auth/login"))
        .json(&json!({"email": "alice@example.com", "password": "password123"}))
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status(), StatusCode::OK);
    let cookies: Vec<String> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    let value = |name: &str| {
        cookies
            .iter()
            .find_map(|c| {
                c.strip_prefix(&format!("{name}="))
                    .map(|r| r.split(';').next().unwrap_or_default().to_owned())
            })
            .unwrap_or_else(|| panic!("cookie {name} in {cookies:?}"))
    };
    let (sid, csrf) = (value("wrenn_sid"), value("wrenn_csrf"));
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("wrenn_sid=") && c.contains("HttpOnly"))
    );
    let cookie_header = format!("wrenn_sid={sid}; wrenn_csrf={csrf}");

    let resp = s
        .http
        .get(s.url("/v1/me"))
        .header("Cookie", &cookie_header)
        .send()
        .await
        .expect("me");
    assert_eq!(resp.status(), StatusCode::OK);

    // Unsafe method without / with a wrong / with the right CSRF token.
    let post = |token: Option<&str>| {
        let mut req = s
            .http
            .post(s.url("/v1/api-keys"))
            .header("Cookie", &cookie_header)
            .json(&json!({}));
        if let Some(t) = token {
            req = req.header("X-CSRF-Token", t);
        }
        req.send()
    };
    let resp = post(None).await.expect("post");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["error"]["code"], "auth_csrf_failed");
    let resp = post(Some("0000")).await.expect("post");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = post(Some(&csrf)).await.expect("post");
    assert_eq!(resp.status(), StatusCode::CREATED);

    // Logout ends the session.
    let resp = s
        .http
        .post(s.url("/v1/auth/logout"))
        .header("Cookie", &cookie_header)
        .send()
        .await
        .expect("logout");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = s
        .http
        .get(s.url("/v1/me"))
        .header("Cookie", &cookie_header)
        .send()
        .await
        .expect("me");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

async fn password_change_and_account_deletion(s: &TestServer) {
    let alice = s.user("alice@example.com", "Alice").await;
    let (st, v) = s
        .post(
            "/v1/me/password",
            alice.bearer(),
            json!({"current_password": "nope-nope", "new_password": "new-password-1"}),
        )
        .await;
    assert_error(st, &v, 401, "wrong_password");
    let (st, v) = s
        .post("/v1/me/password", alice.bearer(), json!({"current_password": "password123", "new_password": "new-password-1", "confirm_password": "other"}))
        .await;
    assert_error(st, &v, 400, "invalid_request");
    let (st, _) = s
        .post(
            "/v1/me/password",
            alice.bearer(),
            json!({"current_password": "password123", "new_password": "new-password-1"}),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let alice = s.login("alice@example.com", "new-password-1").await;

    // Reset requests never reveal whether the email exists.
    for email in ["alice@example.com", "ghost@example.com"] {
        let (st, _) = s
            .post("/v1/me/password/reset", Cred::None, json!({"email": email}))
            .await;
        assert_eq!(st, StatusCode::NO_CONTENT);
    }
    let (st, v) = s
        .post(
            "/v1/me/password/reset/confirm",
            Cred::None,
            json!({"token": "deadbeef", "new_password": "whatever-123"}),
        )
        .await;
    assert_error(st, &v, 400, "invalid_token");

    // Owning a team with other members blocks deletion.
    let _bob = s.user("bob@example.com", "Bob").await;
    let members = format!("/v1/teams/{}/members", alice.team_id);
    let (st, _) = s
        .post(
            &members,
            alice.bearer(),
            json!({"email": "bob@example.com"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, v) = s
        .call(
            Method::DELETE,
            "/v1/me",
            alice.bearer(),
            Some(json!({"confirmation": "wrong@example.com"})),
        )
        .await;
    assert_error(st, &v, 400, "invalid_request");
    let (st, v) = s
        .call(
            Method::DELETE,
            "/v1/me",
            alice.bearer(),
            Some(json!({"confirmation": "ALICE@example.com"})),
        )
        .await;
    assert_error(st, &v, 409, "owns_team_with_members");
    let (_, team) = s
        .get(&format!("/v1/teams/{}", alice.team_id), alice.bearer())
        .await;
    let bob_id = team["members"]
        .as_array()
        .and_then(|m| m.iter().find(|x| x["email"] == "bob@example.com"))
        .expect("bob")["user_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("{members}/{bob_id}"),
            alice.bearer(),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, v) = s
        .call(
            Method::DELETE,
            "/v1/me",
            alice.bearer(),
            Some(json!({"confirmation": "ALICE@example.com"})),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    let (st, v) = s.get("/v1/me", alice.bearer()).await;
    assert_error(st, &v, 401, "unauthorized");
    let (st, _) = s
        .post(
            "/v1/auth/login",
            Cred::None,
            json!({"email": "alice@example.com", "password": "new-password-1"}),
        )
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    // The email is free again.
    let again = s.user("alice@example.com", "Alice Again").await;
    assert_ne!(again.user_id, alice.user_id);
}

async fn bootstrap_admin_key(s: &TestServer) {
    let first = wrenn_server::bootstrap_admin(
        s.state.db(),
        "admin@example.com",
        "Admin",
        Some("admin-password"),
    )
    .await
    .expect("bootstrap");
    assert!(first.created_user);
    let (st, who) = s.get("/test/whoami", Cred::ApiKey(&first.api_key)).await;
    assert_eq!(st, StatusCode::OK, "{who}");
    assert_eq!(who["team_id"], first.team_id.to_string());
    let admin = s.login("admin@example.com", "admin-password").await;
    assert_eq!(jwt_claims(&admin.token)["is_admin"], true);
    assert_eq!(admin.team_id, first.team_id.to_string());

    let second = wrenn_server::bootstrap_admin(s.state.db(), "admin@example.com", "Admin", None)
        .await
        .expect("again");
    assert!(!second.created_user);
    assert_eq!(second.team_id, first.team_id);
    assert_ne!(second.api_key, first.api_key);
    let (st, _) = s.get("/test/whoami", Cred::ApiKey(&first.api_key)).await;
    assert_eq!(st, StatusCode::OK, "earlier keys keep working");

    // A later signup is not admin.
    let later = s.user("later@example.com", "Later").await;
    assert!(jwt_claims(&later.token).get("is_admin").is_none());
}

async fn user_search(s: &TestServer) {
    let alice = s.user("alice@example.com", "Alice").await;
    let al = s.user("al_x@example.com", "Al").await;
    let _ = s.user("alex@example.com", "Alex").await;
    let (st, v) = s
        .get("/v1/users/search?email=alice%40", alice.bearer())
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v,
        json!([{"user_id": alice.user_id, "email": "alice@example.com"}])
    );
    // `_` is literal, not a wildcard: `al_x@` finds al_x but not alex.
    let (_, v) = s
        .get("/v1/users/search?email=al_x%40", alice.bearer())
        .await;
    assert_eq!(
        v,
        json!([{"user_id": al.user_id, "email": "al_x@example.com"}])
    );
    for bad in ["email=al", "email=alice", ""] {
        let (st, v) = s
            .get(&format!("/v1/users/search?{bad}"), alice.bearer())
            .await;
        assert_error(st, &v, 400, "invalid_request");
    }
}
