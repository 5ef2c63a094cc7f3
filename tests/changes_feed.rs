//! Cursor polling of the changes feed through HTTP.

mod common;

use std::{collections::BTreeSet, time::Duration};

use common::{TestApp, create_integration, create_tenant, spawn_app_with};
use serde_json::{Value, json};
use sqlx::PgPool;

struct Feed {
    app: TestApp,
    tenant: String,
    key: String,
}

async fn feed() -> Feed {
    let app = spawn_app_with(false).await;
    let tenant = create_tenant(&app, "shop").await;
    let (_, key) = create_integration(&app, &tenant, "feed").await;
    Feed { app, tenant, key }
}

/// One change in its own transaction, held open for `hold` before committing.
async fn write_change(
    pool: &PgPool,
    tenant: &str,
    entity_id: &str,
    change_type: &str,
    hold: Duration,
) {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO change_log (tenant_id, entity, entity_id, change_type, latest, changed)
         VALUES ($1::uuid, 'product', $2, $3, jsonb_build_object('sku', $2::text), '{}')",
    )
    .bind(tenant)
    .bind(entity_id)
    .bind(change_type)
    .execute(&mut *tx)
    .await
    .unwrap();
    tokio::time::sleep(hold).await;
    tx.commit().await.unwrap();
}

impl Feed {
    async fn list(&self, paging: Value) -> (u16, Value) {
        let resp = self
            .app
            .http
            .post(self.app.url("/v1/shop.Product/ListProducts"))
            .bearer_auth(&self.key)
            .json(&json!({ "paging": paging }))
            .send()
            .await
            .unwrap();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }

    async fn page(&self, paging: Value) -> (Vec<String>, String) {
        let (status, body) = self.list(paging).await;
        assert_eq!(status, 200, "{body}");
        let ids = body["products"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_owned())
            .collect();
        (ids, body["paging"]["next"].as_str().unwrap().to_owned())
    }

    /// Pages on from `paging` until at least `want` ids have come back. The feed holds a
    /// change back until every transaction older than it has ended, cluster-wide, so an
    /// open transaction of a test running alongside can delay it for a moment.
    async fn collect(&self, mut paging: Value, want: usize) -> (Vec<String>, String) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut collected = Vec::new();
        loop {
            let (ids, next) = self.page(paging).await;
            collected.extend(ids);
            if collected.len() >= want {
                return (collected, next);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {collected:?} after 20 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
            paging = json!({ "after": next });
        }
    }
}

#[tokio::test]
async fn paging_1000_changes_while_writers_commit_out_of_order_misses_none() {
    let f = feed().await;
    let pool = f.app.db.pool.clone();
    let tenant = f.tenant.clone();
    let writers = tokio::spawn(async move {
        let tasks = (0..20).map(|w| {
            let (pool, tenant) = (pool.clone(), tenant.clone());
            async move {
                for n in 0..50 {
                    // Transactions hold their row for a varying time, so ids commit out of order.
                    let hold = Duration::from_millis(((w * 7 + n * 3) % 11) as u64);
                    write_change(&pool, &tenant, &format!("p-{w}-{n}"), "create", hold).await;
                }
            }
        });
        futures::future::join_all(tasks).await;
    });

    let mut seen = BTreeSet::new();
    let (first, mut next) = f.page(json!({ "sort": "updated_at", "limit": 100 })).await;
    seen.extend(first);
    // Once the writers are done, an empty page may still hide changes held back by
    // another test's open transaction (see `collect`): poll on for a while.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let done = writers.is_finished();
        let (ids, after) = f.page(json!({ "limit": 100, "after": next })).await;
        assert!(ids.len() <= 100);
        let empty = ids.is_empty();
        seen.extend(ids);
        next = after;
        if done && empty && (seen.len() >= 1000 || tokio::time::Instant::now() > deadline) {
            break;
        }
        if empty {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    writers.await.unwrap();
    let expected: BTreeSet<String> = (0..20)
        .flat_map(|w| (0..50).map(move |n| format!("p-{w}-{n}")))
        .collect();
    assert_eq!(seen.len(), 1000);
    assert_eq!(seen, expected);
    f.app.stop().await;
}

#[tokio::test]
async fn an_empty_page_gives_a_cursor_that_later_returns_only_new_changes() {
    let f = feed().await;
    write_change(&f.app.db.pool, &f.tenant, "old", "create", Duration::ZERO).await;
    let (ids, next) = f.collect(json!({ "sort": "updated_at" }), 1).await;
    assert_eq!(ids, ["old"]);
    let (ids, next) = f.page(json!({ "after": next })).await;
    assert!(ids.is_empty());
    for id in ["a", "b", "c"] {
        write_change(&f.app.db.pool, &f.tenant, id, "update", Duration::ZERO).await;
    }
    let (ids, next) = f.collect(json!({ "after": next }), 3).await;
    assert_eq!(ids, ["a", "b", "c"]);
    let (ids, _) = f.page(json!({ "after": next })).await;
    assert!(ids.is_empty());
    // Without a sort the feed lists creations only.
    let (ids, _) = f.page(json!({})).await;
    assert_eq!(ids, ["old"]);
    f.app.stop().await;
}

#[tokio::test]
async fn bad_cursors_limits_and_sorts_are_400_and_keys_are_checked() {
    let f = feed().await;
    let (_, next) = f.page(json!({ "sort": "updated_at" })).await;
    let mut tampered = next.clone().into_bytes();
    tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for paging in [
        json!({ "after": tampered }),
        json!({ "after": "garbage" }),
        json!({ "after": "" }),
        json!({ "limit": 0 }),
        json!({ "limit": 1001 }),
        json!({ "limit": "ten" }),
        json!({ "sort": "price" }),
    ] {
        let (status, body) = f.list(paging.clone()).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_request")),
            "{paging}"
        );
    }
    // A cursor is bound to its entity.
    let resp = f
        .app
        .http
        .post(f.app.url("/v1/shop.Category/ListCategories"))
        .bearer_auth(&f.key)
        .json(&json!({ "paging": { "after": next } }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = f
        .app
        .http
        .post(f.app.url("/v1/shop.Product/ListProducts"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let (_, imshop) = create_integration(&f.app, &f.tenant, "imshop").await;
    let resp = f
        .app
        .http
        .post(f.app.url("/v1/shop.Product/ListProducts"))
        .bearer_auth(imshop)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "only feed keys read the feed");
    f.app.stop().await;
}
