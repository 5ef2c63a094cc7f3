//! IMSHOP and Conference Compass favourites through HTTP, one store behind both.

mod common;

use common::{TestApp, create_integration, create_tenant, spawn_app_with, user_token};
use serde_json::{Value, json};

/// A tenant with an IMSHOP integration and a Conference Compass user token for `user`.
struct Shop {
    app: TestApp,
    imshop: String,
    cc_user: String,
}

async fn shop(user: &str) -> Shop {
    let app = spawn_app_with(false).await;
    let tenant = create_tenant(&app, "shop").await;
    let (_, imshop) = create_integration(&app, &tenant, "imshop").await;
    let (cc, _) = create_integration(&app, &tenant, "cc").await;
    let cc_user = user_token(&app, &cc, user).await;
    Shop {
        app,
        imshop,
        cc_user,
    }
}

impl Shop {
    /// POSTs JSON with a bearer token; the status and the JSON answer (or null).
    async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        let resp = self
            .app
            .http
            .post(self.app.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }

    async fn imshop_raw(&self, body: Value) -> (u16, Value) {
        self.post("/imshop/favorites", &self.imshop, body).await
    }

    async fn imshop(&self, user: &str, last_sync: i64, items: &[&str]) -> Value {
        let (status, body) = self
            .imshop_raw(
                json!({ "userIdentifier": user, "lastSyncDate": last_sync, "itemIds": items }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn cc_get(&self) -> Value {
        let resp = self
            .app
            .http
            .get(self.app.url("/getUserFavorites"))
            .bearer_auth(&self.cc_user)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    async fn cc_post_raw(&self, items: Value) -> (u16, Value) {
        self.post("/postUserFavorites", &self.cc_user, items).await
    }

    async fn stored_sync_ms(&self, user: &str) -> i64 {
        sqlx::query_scalar("SELECT last_sync_ms FROM favourite_users WHERE user_id = $1")
            .bind(user)
            .fetch_one(&self.app.db.pool)
            .await
            .unwrap()
    }

    async fn row_counts(&self) -> (i64, i64) {
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM favourites), (SELECT count(*) FROM change_log)",
        )
        .fetch_one(&self.app.db.pool)
        .await
        .unwrap()
    }
}

fn item(id: &str, action: &str, date: &str) -> Value {
    json!({ "item": id, "action": action, "actionDate": date })
}

fn actions(list: &Value) -> Vec<(String, String)> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["item"].as_str().unwrap().to_owned(),
                i["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn ids(answer: &Value) -> Vec<&str> {
    answer["itemIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

// The seed's example: request 1644419057514 with ["312","443","998"]; answer 1644419090000.
const R: i64 = 1_644_419_057_514;
const S: i64 = 1_644_419_090_000;

#[tokio::test]
async fn imshop_newer_request_replaces_the_list_and_stores_its_date() {
    let s = shop("12345").await;
    s.imshop("12345", R - 10_000, &["1", "2"]).await;
    let answer = s.imshop("12345", R, &["312", "443", "998"]).await;
    assert_eq!(
        answer,
        json!({ "lastSyncDate": R, "itemIds": ["312", "443", "998"] })
    );
    assert_eq!(s.stored_sync_ms("12345").await, R);
    let deleted: Vec<_> = actions(&s.cc_get().await)
        .into_iter()
        .filter(|(_, a)| a == "DELETE")
        .collect();
    assert_eq!(
        deleted,
        [("1".into(), "DELETE".into()), ("2".into(), "DELETE".into())],
        "tombstones left"
    );
    s.app.stop().await;
}

#[tokio::test]
async fn imshop_newer_store_answers_the_stored_list_unchanged() {
    let s = shop("12345").await;
    s.imshop("12345", S, &["312", "443"]).await;
    let before = s.row_counts().await;
    let answer = s.imshop("12345", R, &["312", "443", "998"]).await;
    assert_eq!(
        answer,
        json!({ "lastSyncDate": S, "itemIds": ["312", "443"] })
    );
    assert_eq!(s.row_counts().await, before, "nothing written");
    assert_eq!(s.stored_sync_ms("12345").await, S);
    s.app.stop().await;
}

#[tokio::test]
async fn imshop_equal_dates_echo_the_request() {
    let s = shop("12345").await;
    s.imshop("12345", R, &["312"]).await;
    let answer = s.imshop("12345", R, &["312", "443", "998"]).await;
    assert_eq!(
        answer,
        json!({ "lastSyncDate": R, "itemIds": ["312", "443", "998"] })
    );
    s.app.stop().await;
}

#[tokio::test]
async fn imshop_both_zero_merges_and_stores_now() {
    let s = shop("12345").await;
    let before = chrono::Utc::now().timestamp_millis();
    let first = s.imshop("12345", 0, &["312", "443"]).await;
    assert_eq!(ids(&first), ["312", "443"]);
    let now = first["lastSyncDate"].as_i64().unwrap();
    assert!(now >= before, "S set to now");
    assert_eq!(s.stored_sync_ms("12345").await, now);
    // The app logged out, added 998 offline, and sends 0 again: the store is newer now.
    let second = s.imshop("12345", 0, &["998"]).await;
    assert_eq!(
        second,
        json!({ "lastSyncDate": now, "itemIds": ["312", "443"] })
    );
    s.app.stop().await;
}

#[tokio::test]
async fn imshop_zero_against_an_empty_store_merges_into_one_union() {
    let s = shop("u1").await;
    // A CC change made while S was 0 would bump S; so merge only happens between two
    // never-synced sides, e.g. the first sync of a new user.
    let answer = s.imshop("u1", 0, &["a", "b"]).await;
    assert_eq!(ids(&answer), ["a", "b"]);
    let cc = s.cc_get().await;
    assert_eq!(
        actions(&cc),
        [("a".into(), "ADD".into()), ("b".into(), "ADD".into())]
    );
    s.app.stop().await;
}

#[tokio::test]
async fn cc_items_replace_ours_only_when_strictly_newer() {
    let s = shop("u1").await;
    let (status, _) = s
        .cc_post_raw(json!([
            item("s1", "ADD", "2017-05-02T10:45:12.798Z"),
            item("s2", "DELETE", "2017-05-03T12:15:00.128Z")
        ]))
        .await;
    assert_eq!(status, 200);
    let (_, after) = s
        .cc_post_raw(json!([
            item("s1", "DELETE", "2017-05-02T10:45:12.797Z"), // older: ignored
            item("s2", "ADD", "2017-05-03T12:15:00.128Z"),    // equal date: DELETE stays
        ]))
        .await;
    assert_eq!(
        actions(&after),
        [("s1".into(), "ADD".into()), ("s2".into(), "DELETE".into())]
    );
    let (_, after) = s
        .cc_post_raw(json!([item("s1", "DELETE", "2017-05-02T10:45:12.799Z")]))
        .await;
    assert_eq!(
        actions(&after)[0],
        ("s1".into(), "DELETE".into()),
        "newer wins"
    );
    let got = s.cc_get().await;
    assert_eq!(got[0], item("s1", "DELETE", "2017-05-02T10:45:12.799Z"));
    assert_eq!(
        got[1],
        item("s2", "DELETE", "2017-05-03T12:15:00.128Z"),
        "tombstones are listed"
    );
    s.app.stop().await;
}

#[tokio::test]
async fn add_via_imshop_is_seen_via_cc_and_delete_via_cc_leaves_imshop() {
    let s = shop("u1").await;
    let first = s.imshop("u1", 0, &["312", "443"]).await;
    let cc = s.cc_get().await;
    assert_eq!(
        actions(&cc),
        [("312".into(), "ADD".into()), ("443".into(), "ADD".into())]
    );

    let later = chrono::Utc::now() + chrono::Duration::seconds(1);
    let date = later.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let (status, _) = s.cc_post_raw(json!([item("312", "DELETE", &date)])).await;
    assert_eq!(status, 200);
    let synced = first["lastSyncDate"].as_i64().unwrap();
    assert!(
        s.stored_sync_ms("u1").await > synced,
        "the CC change bumped lastSyncDate"
    );
    let answer = s.imshop("u1", synced, &["312", "443"]).await;
    assert_eq!(
        ids(&answer),
        ["443"],
        "the store is newer: IMSHOP gets the list without 312"
    );
    s.app.stop().await;
}

#[tokio::test]
async fn concurrent_imshop_requests_for_one_user_lose_no_update() {
    let s = shop("u1").await;
    let requests = (0..10).map(|n| {
        let body = json!({ "userIdentifier": "u1", "lastSyncDate": R + n, "itemIds": [format!("item-{n}")] });
        s.imshop_raw(body)
    });
    let results = futures::future::join_all(requests).await;
    assert!(
        results.iter().all(|(status, _)| *status == 200),
        "{results:?}"
    );
    // Serialised per user: the newest request's list must be the final state.
    let answer = s.imshop("u1", 0, &[]).await;
    assert_eq!(
        answer,
        json!({ "lastSyncDate": R + 9, "itemIds": ["item-9"] })
    );
    let adds: i64 = sqlx::query_scalar("SELECT count(*) FROM favourites WHERE action = 'ADD'")
        .fetch_one(&s.app.db.pool)
        .await
        .unwrap();
    assert_eq!(adds, 1);
    s.app.stop().await;
}

#[tokio::test]
async fn bad_imshop_input_is_a_400_and_writes_nothing() {
    let s = shop("u1").await;
    let long = "x".repeat(201);
    let too_many: Vec<String> = (0..1001).map(|n| n.to_string()).collect();
    let cases = [
        json!({ "lastSyncDate": 0, "itemIds": [] }),
        json!({ "userIdentifier": "  ", "lastSyncDate": 0, "itemIds": [] }),
        json!({ "userIdentifier": "u1", "lastSyncDate": -1, "itemIds": [] }),
        json!({ "userIdentifier": "u1", "lastSyncDate": 1.5, "itemIds": [] }),
        json!({ "userIdentifier": "u1", "lastSyncDate": "1644419057514", "itemIds": [] }),
        json!({ "userIdentifier": "u1", "lastSyncDate": 0, "itemIds": [312] }),
        json!({ "userIdentifier": "u1", "lastSyncDate": 0, "itemIds": ["1", "1"] }),
        json!({ "userIdentifier": "u1", "lastSyncDate": 0, "itemIds": [long] }),
        json!({ "userIdentifier": "u1", "lastSyncDate": 0, "itemIds": too_many }),
        json!({ "userIdentifier": "u1", "lastSyncDate": 99_999_999_999_999i64, "itemIds": [] }),
        json!({ "userIdentifier": "u1", "lastSyncDate": 0 }),
    ];
    for case in cases {
        let (status, body) = s.imshop_raw(case.clone()).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_request")),
            "{case}"
        );
    }
    assert_eq!(s.row_counts().await, (0, 0));
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM favourite_users")
        .fetch_one(&s.app.db.pool)
        .await
        .unwrap();
    assert_eq!(users, 0);
    s.app.stop().await;
}

#[tokio::test]
async fn bad_cc_input_is_a_400_and_writes_nothing() {
    let s = shop("u1").await;
    let cases = [
        json!([item("a", "REMOVE", "2017-05-02T10:45:12.798Z")]),
        json!([item("a", "ADD", "2nd of May")]),
        json!([
            item("a", "ADD", "2017-05-02T10:45:12.798Z"),
            item("a", "DELETE", "2017-05-02T10:45:12.799Z")
        ]),
        json!([{ "item": 5, "action": "ADD", "actionDate": "2017-05-02T10:45:12.798Z" }]),
        json!({ "item": "a" }),
    ];
    for case in cases {
        let (status, body) = s.cc_post_raw(case.clone()).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_request")),
            "{case}"
        );
    }
    assert_eq!(s.row_counts().await, (0, 0));
    s.app.stop().await;
}

#[tokio::test]
async fn favourites_endpoints_reject_wrong_tokens() {
    let s = shop("u1").await;
    let body = json!({ "userIdentifier": "u1", "lastSyncDate": 0, "itemIds": [] });
    // An IMSHOP token cannot read CC favourites, and a CC user token cannot call IMSHOP.
    let resp = s
        .app
        .http
        .get(s.app.url("/getUserFavorites"))
        .bearer_auth(&s.imshop)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = s
        .app
        .http
        .post(s.app.url("/imshop/favorites"))
        .bearer_auth(&s.cc_user)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = s
        .app
        .http
        .post(s.app.url("/imshop/favorites"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = s
        .app
        .http
        .get(s.app.url("/getUserFavorites"))
        .bearer_auth("sl_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    s.app.stop().await;
}

#[tokio::test]
async fn every_change_is_in_the_change_log() {
    let s = shop("u1").await;
    s.imshop("u1", 0, &["a"]).await;
    s.cc_post_raw(json!([item("a", "DELETE", "2030-01-01T00:00:00.000Z")]))
        .await;
    let log: Vec<(String, String, Value)> =
        sqlx::query_as("SELECT entity_id, change_type, latest FROM change_log ORDER BY id")
            .fetch_all(&s.app.db.pool)
            .await
            .unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!((log[0].0.as_str(), log[0].1.as_str()), ("u1/a", "create"));
    assert_eq!((log[1].0.as_str(), log[1].1.as_str()), ("u1/a", "delete"));
    assert_eq!(log[1].2["action"], "DELETE");
    s.app.stop().await;
}
