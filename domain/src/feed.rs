//! The changes feed: pages of a tenant's change log for one entity, in transaction order,
//! behind opaque, signed cursors.
//!
//! Rows are ordered by (writing transaction, id) and a page only includes transactions
//! older than the oldest one still running. A transaction that commits after a page was
//! served is therefore always after that page's cursor: polling never misses a change,
//! whatever order concurrent writers commit in.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sort {
    /// Every change, oldest first.
    UpdatedAt,
    /// Creations only, oldest first.
    CreatedAt,
}

/// Where a page ends: the last (transaction, row) served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Position {
    pub txid: u64,
    pub id: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CursorBody {
    t: Uuid,
    e: String,
    s: Sort,
    p: Position,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the cursor is not valid here")]
pub struct BadCursor;

/// Signs and reads cursors; a cursor is bound to its tenant, entity and sort.
pub struct CursorKey(Vec<u8>);

impl CursorKey {
    pub fn new(secret: Vec<u8>) -> Self {
        Self(secret)
    }

    fn mac(&self, body: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(body.as_bytes());
        mac
    }

    pub fn encode(&self, tenant: Uuid, entity: &str, sort: Sort, position: Position) -> String {
        let body = CursorBody {
            t: tenant,
            e: entity.to_owned(),
            s: sort,
            p: position,
        };
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&body).unwrap_or_default());
        let tag = URL_SAFE_NO_PAD.encode(&self.mac(&body).finalize().into_bytes()[..16]);
        format!("{body}.{tag}")
    }

    pub fn decode(
        &self,
        cursor: &str,
        tenant: Uuid,
        entity: &str,
    ) -> Result<(Sort, Position), BadCursor> {
        let (body, tag) = cursor.split_once('.').ok_or(BadCursor)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| BadCursor)?;
        if tag.len() != 16 {
            return Err(BadCursor);
        }
        self.mac(body)
            .verify_truncated_left(&tag)
            .map_err(|_| BadCursor)?;
        let json = URL_SAFE_NO_PAD.decode(body).map_err(|_| BadCursor)?;
        let decoded: CursorBody = serde_json::from_slice(&json).map_err(|_| BadCursor)?;
        if decoded.t != tenant || decoded.e != entity {
            return Err(BadCursor);
        }
        Ok((decoded.s, decoded.p))
    }
}

/// The key cursors are signed with (created by the migrations, one per database).
pub async fn cursor_key(conn: &mut PgConnection) -> Result<CursorKey, sqlx::Error> {
    let secret: Vec<u8> =
        sqlx::query_scalar("SELECT secret FROM server_secrets WHERE name = 'feed_cursor'")
            .fetch_one(conn)
            .await?;
    Ok(CursorKey::new(secret))
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub entity: String,
    pub entity_id: String,
    pub change_type: String,
    pub latest: Value,
    pub changed: Value,
    pub changed_at: DateTime<Utc>,
}

/// Up to `limit` entries of `entities` after `after`; returns them and the position to
/// continue from (`after` itself when the page is empty).
pub async fn page(
    conn: &mut PgConnection,
    tenant: Uuid,
    entities: &[String],
    sort: Sort,
    after: Position,
    limit: i64,
) -> Result<(Vec<Entry>, Position), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, txid::text AS txid, entity, entity_id, change_type, latest, changed, changed_at FROM change_log
         WHERE tenant_id = $1 AND entity = ANY($2)
           AND ($3 OR change_type = 'create')
           AND (txid, id) > ($4::text::xid8, $5)
           AND txid < pg_snapshot_xmin(pg_current_snapshot())
         ORDER BY txid, id
         LIMIT $6",
    )
    .bind(tenant)
    .bind(entities)
    .bind(sort == Sort::UpdatedAt)
    .bind(after.txid.to_string())
    .bind(after.id)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    let mut next = after;
    let mut entries = Vec::with_capacity(rows.len());
    for row in rows {
        let txid: String = row.try_get("txid")?;
        next = Position {
            txid: txid
                .parse()
                .map_err(|_| sqlx::Error::Decode("txid".into()))?,
            id: row.try_get("id")?,
        };
        entries.push(Entry {
            entity: row.try_get("entity")?,
            entity_id: row.try_get("entity_id")?,
            change_type: row.try_get("change_type")?,
            latest: row.try_get("latest")?,
            changed: row.try_get("changed")?,
            changed_at: row.try_get("changed_at")?,
        });
    }
    Ok((entries, next))
}

/// Whether entries after `after` exist at all, including those of transactions a page
/// may not show yet (older ones still running).
pub async fn any_after(
    conn: &mut PgConnection,
    tenant: Uuid,
    entities: &[String],
    after: Position,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM change_log
                        WHERE tenant_id = $1 AND entity = ANY($2) AND (txid, id) > ($3::text::xid8, $4))",
    )
    .bind(tenant)
    .bind(entities)
    .bind(after.txid.to_string())
    .bind(after.id)
    .fetch_one(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> CursorKey {
        CursorKey::new(b"feed-cursor-test-key".to_vec())
    }

    proptest! {
        #[test]
        fn cursors_round_trip(txid in any::<u64>(), id in any::<i64>(), updated in any::<bool>()) {
            let tenant = Uuid::from_u128(7);
            let sort = if updated { Sort::UpdatedAt } else { Sort::CreatedAt };
            let position = Position { txid, id };
            let cursor = key().encode(tenant, "product", sort, position);
            prop_assert_eq!(key().decode(&cursor, tenant, "product"), Ok((sort, position)));
        }

        #[test]
        fn any_changed_character_is_rejected(index in 0usize..60, with in proptest::char::range('A', 'z')) {
            let tenant = Uuid::from_u128(7);
            let cursor = key().encode(tenant, "product", Sort::UpdatedAt, Position { txid: 99, id: 5 });
            let mut chars: Vec<char> = cursor.chars().collect();
            let i = index % chars.len();
            prop_assume!(chars[i] != with);
            chars[i] = with;
            let tampered: String = chars.into_iter().collect();
            prop_assert_eq!(key().decode(&tampered, tenant, "product"), Err(BadCursor));
        }
    }

    #[test]
    fn a_cursor_only_works_for_its_tenant_and_entity() {
        let tenant = Uuid::from_u128(7);
        let cursor = key().encode(tenant, "product", Sort::UpdatedAt, Position::default());
        assert_eq!(
            key().decode(&cursor, Uuid::from_u128(8), "product"),
            Err(BadCursor)
        );
        assert_eq!(key().decode(&cursor, tenant, "category"), Err(BadCursor));
        assert_eq!(
            CursorKey::new(b"other".to_vec()).decode(&cursor, tenant, "product"),
            Err(BadCursor)
        );
    }
}
