//! Security checks through HTTP. Every operation of the app's own OpenAPI document is
//! walked, so a new route is covered (or the walk fails until it is classified): partner
//! routes reject missing, wrong and other kinds' credentials; admin routes reject every
//! partner and user token. A full flow with every kind of secret runs against the real
//! binary with `RUST_LOG=debug`, and neither its log nor any answer after creation may
//! contain one of them.

mod common;

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use common::{ADMIN_TOKEN, TestApp, TestDb, create_integration, create_tenant, user_token};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use syncline::{
    app_token::sign,
    simulators::{allio::AllioSimulator, cc::CcSimulator},
};

const SYNC_ID: &str = "2f7a4c1e-0b3d-4e5f-9a8b-7c6d5e4f3a2b";

/// How an operation of the document authenticates its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guard {
    Public,
    Admin,
    /// `Authorization: Bearer` with a partner token of the kinds the scheme accepts.
    Bearer(&'static [&'static str]),
    /// `/allio/webhook/{token}`: the ALLIO integration's token is the URL.
    AllioUrl,
    /// Ergonode's `X-APP-TOKEN` JWT.
    ErgonodeJwt,
}

fn guard(path: &str, operation: &Value) -> Guard {
    let schemes: Vec<&str> = operation["security"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .flat_map(|requirement| requirement.keys().map(String::as_str))
        .collect();
    match (schemes.as_slice(), path) {
        (["AdminAuth"], _) => Guard::Admin,
        (["ImshopAuth"], _) => Guard::Bearer(&["imshop"]),
        (["CcUserAuth"], _) => Guard::Bearer(&["cc user"]),
        (["FeedAuth"], _) => Guard::Bearer(&["feed"]),
        (["PartnerAuth"], _) => {
            Guard::Bearer(&["imshop", "cc", "cc user", "allio", "ergonode", "feed"])
        }
        ([], "/healthz" | "/readyz") => Guard::Public,
        ([], "/allio/webhook/{token}") => Guard::AllioUrl,
        ([], "/ergonode/{integration_id}/consume/{event}") => Guard::ErgonodeJwt,
        _ => panic!("{path} ({schemes:?}) is not classified: say how it authenticates here"),
    }
}

/// Every operation of the served document as (method, path template, guard).
fn operations() -> Vec<(Method, String, Guard)> {
    let doc: Value = serde_json::from_str(&syncline::api::openapi_json()).unwrap();
    let mut all = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            all.push((method, path.clone(), guard(path, operation)));
        }
    }
    assert!(all.len() > 30, "the document lists every operation");
    all
}

/// The path with each `{parameter}` replaced by a value of its type.
fn concrete(template: &str, value_of: impl Fn(&str) -> String) -> String {
    template
        .split('/')
        .map(|segment| match segment.strip_prefix('{') {
            Some(name) => value_of(name.trim_end_matches('}')),
            None => segment.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn placeholder(name: &str) -> String {
    match name {
        "webhook_id" => "1".into(),
        "id" => "01KAAAAAAAAAAAAAAAAAAAAAAA".into(),
        "event" => "product_created".into(),
        _ => uuid::Uuid::new_v4().to_string(),
    }
}

/// Sends a request (with `body` unless it is a GET); answers the status and the JSON body
/// (null when not JSON).
async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: &Value,
) -> (StatusCode, Value) {
    let mut request = app.http.request(method.clone(), app.url(path));
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    if method != Method::GET {
        request = request.json(body);
    }
    let resp = request.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn assert_rejected(what: &str, (status, body): (StatusCode, Value), expected: StatusCode) {
    assert_eq!(status, expected, "{what}: {body}");
    assert!(
        body["code"].is_string() && body["message"].is_string(),
        "{what}: the rejection is a {{code, message}} body: {body}"
    );
}

/// A tenant with one integration of every kind and a Conference Compass user token.
struct Credentials {
    /// (kind, token); the user token's kind is `cc user`.
    tokens: Vec<(&'static str, String)>,
    ergonode: String,
}

const ERGONODE_SECRET: &str = "security-test-ergonode-secret";

async fn credentials(app: &TestApp) -> Credentials {
    let tenant = create_tenant(app, "security").await;
    let mut tokens = Vec::new();
    let mut ergonode = String::new();
    for kind in ["imshop", "cc", "allio", "ergonode", "feed"] {
        let (id, token) = create_integration(app, &tenant, kind).await;
        if kind == "cc" {
            tokens.push(("cc user", user_token(app, &id, "user-1").await));
        }
        if kind == "ergonode" {
            let (status, body) = app
                .admin_json(
                    Method::PUT,
                    &format!("/admin/integrations/{id}/ergonode"),
                    json!({ "jwt_secret": ERGONODE_SECRET }),
                )
                .await;
            assert_eq!(status, 204, "{body}");
            ergonode = id;
        }
        tokens.push((kind, token));
    }
    Credentials { tokens, ergonode }
}

fn jwt(secret: &str, exp_in_secs: i64) -> String {
    let exp = chrono::Utc::now().timestamp() + exp_in_secs;
    sign(
        &json!({ "exp": exp, "synchronization_id": SYNC_ID }),
        secret.as_bytes(),
    )
}

/// One refused call: what is presented, where, and the status it must get.
struct Case {
    what: String,
    path: String,
    headers: Vec<(&'static str, String)>,
    expected: StatusCode,
}

fn case(
    what: impl Into<String>,
    path: &str,
    headers: Vec<(&'static str, String)>,
    expected: StatusCode,
) -> Case {
    Case {
        what: what.into(),
        path: path.to_owned(),
        headers,
        expected,
    }
}

#[tokio::test]
async fn every_partner_route_rejects_missing_wrong_and_foreign_credentials() {
    let app = common::spawn_app_with(false).await;
    let creds = credentials(&app).await;
    let wrong = "sl_this-token-was-never-issued-by-syncline-0000000";
    let foreign_jwt = jwt("a-secret-that-is-not-the-apps", 300);
    let expired_jwt = jwt(ERGONODE_SECRET, -3600);
    let mut checked = 0;
    for (method, template, guard) in operations() {
        let unauthorized = StatusCode::UNAUTHORIZED;
        let mut cases = Vec::new();
        let mut body = json!({});
        match guard {
            Guard::Public | Guard::Admin => continue,
            Guard::Bearer(accepted) => {
                let path = concrete(&template, placeholder);
                let bearer = |token: &str| vec![("Authorization", format!("Bearer {token}"))];
                cases.push(case("no token", &path, vec![], unauthorized));
                cases.push(case("an unknown token", &path, bearer(wrong), unauthorized));
                cases.push(case(
                    "the admin token",
                    &path,
                    bearer(ADMIN_TOKEN),
                    unauthorized,
                ));
                for (kind, token) in creds.tokens.iter().filter(|(k, _)| !accepted.contains(k)) {
                    let what = format!("a {kind} token");
                    cases.push(case(what, &path, bearer(token), unauthorized));
                }
            }
            Guard::AllioUrl => {
                // Well-formed, so the token is what is refused.
                body = json!({ "uuid": uuid::Uuid::new_v4(), "command": "RESERVE_ADD", "indexes": [1] });
                let foreign = creds.tokens.iter().filter(|(k, _)| *k != "allio");
                for token in [wrong, ADMIN_TOKEN]
                    .into_iter()
                    .chain(foreign.map(|(_, t)| t.as_str()))
                {
                    let path = concrete(&template, |_| token.to_owned());
                    let what = format!("the token {token}, of no ALLIO integration");
                    cases.push(case(what, &path, vec![], StatusCode::NOT_FOUND));
                }
            }
            Guard::ErgonodeJwt => {
                let at = |integration: &str| {
                    concrete(&template, |name| match name {
                        "integration_id" => integration.to_owned(),
                        other => placeholder(other),
                    })
                };
                let path = at(&creds.ergonode);
                let app_token = |token: &str| vec![("X-APP-TOKEN", token.to_owned())];
                cases.push(case("no X-APP-TOKEN", &path, vec![], unauthorized));
                for (what, token) in [
                    ("an unknown token", wrong),
                    ("the admin token", ADMIN_TOKEN),
                    ("a JWT with another secret", &foreign_jwt),
                    ("an expired JWT", &expired_jwt),
                ] {
                    cases.push(case(what, &path, app_token(token), unauthorized));
                }
                let elsewhere = at(&uuid::Uuid::new_v4().to_string());
                let good = app_token(&jwt(ERGONODE_SECRET, 300));
                cases.push(case(
                    "an unknown integration",
                    &elsewhere,
                    good,
                    StatusCode::NOT_FOUND,
                ));
            }
        }
        for Case {
            what,
            path,
            headers,
            expected,
        } in cases
        {
            let answer = send(&app, method.clone(), &path, &headers, &body).await;
            assert_rejected(
                &format!("{method} {template} with {what}"),
                answer,
                expected,
            );
        }
        checked += 1;
    }
    assert!(checked >= 14, "partner operations checked: {checked}");
    app.stop().await;
}

#[tokio::test]
async fn every_admin_route_rejects_partner_and_user_tokens() {
    let app = common::spawn_app_with(false).await;
    let creds = credentials(&app).await;
    let mut routes: Vec<(Method, String)> = operations()
        .into_iter()
        .filter(|(_, _, guard)| *guard == Guard::Admin)
        .map(|(method, template, _)| (method, concrete(&template, placeholder)))
        .collect();
    assert!(routes.len() >= 20, "admin operations: {}", routes.len());
    // The dashboard is not in the document but is guarded by the same token.
    routes.push((Method::GET, "/admin/".into()));
    routes.push((Method::POST, "/admin/ui/replay".into()));

    let wrong = "sl_this-token-was-never-issued-by-syncline-0000000".to_owned();
    let presented = creds
        .tokens
        .iter()
        .map(|(kind, token)| (*kind, token.clone()))
        .chain([("unknown", wrong)]);
    let mut credentials: Vec<(String, Option<String>)> = vec![("no token".into(), None)];
    for (kind, token) in presented {
        let basic = base64_basic(&token);
        credentials.push((format!("a {kind} token"), Some(format!("Bearer {token}"))));
        credentials.push((format!("a {kind} token as password"), Some(basic)));
    }
    for (method, path) in &routes {
        for (what, authorization) in &credentials {
            let mut request = app.http.request(method.clone(), app.url(path));
            if let Some(value) = authorization {
                request = request.header("Authorization", value);
            }
            request = if path == "/admin/ui/replay" {
                request.form(&[("job_id", "x"), ("reason", "y"), ("form_token", "z")])
            } else if *method != Method::GET {
                request.json(&json!({}))
            } else {
                request
            };
            let resp = request.send().await.unwrap();
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            assert_rejected(
                &format!("{method} {path} with {what}"),
                (status, body),
                StatusCode::UNAUTHORIZED,
            );
        }
    }
    app.stop().await;
}

fn base64_basic(password: &str) -> String {
    use base64::Engine;
    let pair = format!("operator:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// `syncline dev`, the real binary, on a free port with `RUST_LOG=debug`; its output goes
/// to a file. Killed when dropped.
struct Hub {
    child: std::process::Child,
    log: std::path::PathBuf,
    url: String,
    http: reqwest::Client,
    admin: String,
    _dir: tempfile::TempDir,
    _db: TestDb,
}

impl Hub {
    async fn start(admin: &str) -> Self {
        let db = TestDb::new().await;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("hub.log");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let out = std::fs::File::create(&log).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_syncline"))
            .arg("dev")
            .env("DATABASE_URL", &db.url)
            .env("SYNCLINE_LISTEN", format!("127.0.0.1:{port}"))
            .env("SYNCLINE_ADMIN_TOKEN", admin)
            .env("SYNCLINE_DATA_DIR", dir.path().join("data"))
            .env("SYNCLINE_WORKER_POLL_MS", "100")
            .env("SYNCLINE_SHUTDOWN_GRACE_SECS", "5")
            .env("RUST_LOG", "debug")
            .env("NO_COLOR", "1")
            .env_remove("SYNCLINE_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let hub = Self {
            child,
            log,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            admin: admin.to_owned(),
            _dir: dir,
            _db: db,
        };
        let start = Instant::now();
        while hub.http.get(hub.at("/healthz")).send().await.is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the hub never answered"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        hub
    }

    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// A JSON call with a bearer token; answers the status and body text.
    async fn call(&self, method: Method, path: &str, bearer: &str, body: Value) -> (u16, String) {
        let mut request = self.http.request(method.clone(), self.at(path));
        if !bearer.is_empty() {
            request = request.bearer_auth(bearer);
        }
        if method != Method::GET {
            request = request.json(&body);
        }
        let resp = request.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// A call that must succeed; answers its JSON body.
    async fn ok(&self, method: Method, path: &str, bearer: &str, body: Value) -> Value {
        let (status, text) = self.call(method.clone(), path, bearer, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {text}"
        );
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    async fn admin(&self, method: Method, path: &str, body: Value) -> Value {
        self.ok(method, path, &self.admin.clone(), body).await
    }

    /// Stops the hub with SIGTERM (as an operator would) and answers everything it logged.
    fn stop(mut self) -> String {
        use nix::sys::signal::{Signal, kill};
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        kill(pid, Signal::SIGTERM).unwrap();
        let start = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the hub did not stop"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::fs::read_to_string(&self.log).unwrap()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn distinct(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Waits until `done` holds, up to a minute.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn no_secret_reaches_the_logs_or_any_answer_after_creation() {
    use wiremock::{Mock, MockServer, ResponseTemplate, matchers::method};

    let admin = distinct("admin-secret");
    let hub = Hub::start(&admin).await;
    let mut secrets = vec![admin.clone()];

    let tenant = hub
        .admin(Method::POST, "/admin/tenants", json!({ "name": "secrets" }))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut ids = std::collections::HashMap::new();
    let mut tokens = std::collections::HashMap::new();
    for kind in ["imshop", "cc", "allio", "ergonode", "feed"] {
        let created = hub
            .admin(
                Method::POST,
                &format!("/admin/tenants/{tenant}/integrations"),
                json!({ "kind": kind, "name": kind }),
            )
            .await;
        ids.insert(
            kind,
            created["integration"]["id"].as_str().unwrap().to_owned(),
        );
        tokens.insert(kind, created["token"].as_str().unwrap().to_owned());
    }
    secrets.extend(tokens.values().cloned());
    let user_token = hub
        .admin(
            Method::POST,
            &format!("/admin/integrations/{}/user-tokens", ids["cc"]),
            json!({ "user_id": "user-1" }),
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    secrets.push(user_token.clone());

    // A remote favourites source and the token it accepts for user-1.
    let (remote, remote_url) = CcSimulator::start().await.unwrap();
    let remote_token = distinct("remote-user-token");
    remote.seed_user(&remote_token, &[]).unwrap();
    secrets.push(remote_token.clone());
    let source = hub
        .admin(
            Method::POST,
            &format!("/admin/tenants/{tenant}/favourite-sources"),
            json!({ "name": "remote", "base_url": remote_url }),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    hub.admin(
        Method::PUT,
        &format!("/admin/favourite-sources/{source}/users/user-1/token"),
        json!({ "token": remote_token }),
    )
    .await;

    // ALLIO with its API key, Ergonode with its JWT secret.
    let api_key = distinct("allio-api-key");
    secrets.push(api_key.clone());
    let (allio, allio_url) = AllioSimulator::start(&api_key).await.unwrap();
    let allio_uuid = uuid::Uuid::new_v4().to_string();
    hub.admin(
        Method::PUT,
        &format!("/admin/integrations/{}/allio", ids["allio"]),
        json!({ "integration_uuid": allio_uuid, "api_base_url": allio_url, "api_key": api_key }),
    )
    .await;
    let jwt_secret = distinct("ergonode-jwt-secret");
    secrets.push(jwt_secret.clone());
    hub.admin(
        Method::PUT,
        &format!("/admin/integrations/{}/ergonode", ids["ergonode"]),
        json!({ "jwt_secret": jwt_secret }),
    )
    .await;

    // A feed webhook; its signing secret is shown once.
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .mount(&receiver)
        .await;
    let created = hub
        .ok(
            Method::POST,
            "/v1/shop.Webhook/CreateWebhook",
            &tokens["feed"],
            json!({ "url": receiver.uri(), "entities": ["favourite", "reservation", "product"] }),
        )
        .await;
    secrets.push(created["secret"].as_str().unwrap().to_owned());

    // Partner traffic of every protocol, including rejected credentials.
    hub.ok(
        Method::POST,
        "/imshop/favorites",
        &tokens["imshop"],
        json!({ "userIdentifier": "user-1", "lastSyncDate": 0, "itemIds": ["a", "b"] }),
    )
    .await;
    hub.ok(
        Method::POST,
        "/postUserFavorites",
        &user_token,
        json!([{ "item": "c", "action": "ADD", "actionDate": "2024-01-01T00:00:00.000Z" }]),
    )
    .await;
    hub.ok(Method::GET, "/getUserFavorites", &user_token, Value::Null)
        .await;
    hub.ok(
        Method::POST,
        &format!("/allio/webhook/{}", tokens["allio"]),
        "",
        json!({ "uuid": allio_uuid, "command": "RESERVE_ADD", "indexes": [1, 2] }),
    )
    .await;
    let app_token = sign(
        &json!({ "exp": chrono::Utc::now().timestamp() + 300, "synchronization_id": SYNC_ID }),
        jwt_secret.as_bytes(),
    );
    secrets.push(app_token.clone());
    let consumed = hub
        .http
        .put(hub.at(&format!("/ergonode/{}/consume/product_created", ids["ergonode"])))
        .header("X-APP-TOKEN", &app_token)
        .json(&json!({ "resource_id": { "id": "sku-1", "type": "sku" }, "synchronization": { "events": [] } }))
        .send()
        .await
        .unwrap();
    assert_eq!(consumed.status(), 200);
    hub.ok(
        Method::POST,
        "/v1/shop.Product/ListProducts",
        &tokens["feed"],
        json!({}),
    )
    .await;
    let rejected = distinct("sl_rejected-token");
    secrets.push(rejected.clone());
    for (path, method) in [("/v1/whoami", Method::GET), ("/admin/tenants", Method::GET)] {
        let (status, _) = hub.call(method, path, &rejected, Value::Null).await;
        assert_eq!(status, 401);
    }
    let (status, _) = hub
        .call(
            Method::POST,
            &format!("/allio/webhook/{rejected}"),
            "",
            json!({}),
        )
        .await;
    assert!(status == 400 || status == 404, "{status}");

    // The jobs presented the secrets to the partners...
    eventually("ALLIO was asked with the key", || {
        allio.arrivals().iter().any(|a| a.status == 200)
    })
    .await;
    eventually("the remote source was reconciled", || remote.served() > 0).await;
    let delivered = || async {
        !receiver
            .received_requests()
            .await
            .unwrap_or_default()
            .is_empty()
    };
    let start = Instant::now();
    while !delivered().await {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no webhook delivery"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // ...but no answer after creation shows one.
    let mut answers = Vec::new();
    for (method, template, guard) in operations() {
        if method != Method::GET || guard != Guard::Admin || template.contains("{id}") {
            continue;
        }
        let path = concrete(&template, |_| tenant.clone());
        answers.push(hub.admin(Method::GET, &path, Value::Null).await);
    }
    let jobs = hub
        .admin(Method::GET, "/admin/jobs?limit=500", Value::Null)
        .await;
    for job in jobs["jobs"].as_array().expect("a job list") {
        let id = job["id"].as_str().unwrap();
        answers.push(
            hub.admin(Method::GET, &format!("/admin/jobs/{id}"), Value::Null)
                .await,
        );
    }
    answers.push(jobs);
    for token in tokens.values().chain([&user_token]) {
        answers.push(hub.ok(Method::GET, "/v1/whoami", token, Value::Null).await);
    }
    answers.push(
        hub.ok(
            Method::POST,
            "/v1/shop.Webhook/GetWebhooks",
            &tokens["feed"],
            json!({}),
        )
        .await,
    );
    let mut pages: Vec<String> = answers.iter().map(Value::to_string).collect();
    for page in ["/metrics", "/admin/"] {
        pages.push(hub.call(Method::GET, page, &admin, Value::Null).await.1);
    }
    for secret in &secrets {
        for page in &pages {
            assert!(
                !page.contains(secret.as_str()),
                "an answer shows a secret: {page}"
            );
        }
    }

    let log = hub.stop();
    assert!(
        log.contains("DEBUG") && log.contains("allio"),
        "the hub's debug log was captured:\n{log}"
    );
    for secret in &secrets {
        let leaks: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(secret.as_str()))
            .collect();
        assert!(
            leaks.is_empty(),
            "a secret is in the log:\n{}",
            leaks.join("\n")
        );
    }
}
