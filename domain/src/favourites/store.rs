//! Reading and writing one user's favourites inside the caller's transaction.

use serde_json::json;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::{
    ItemId, UserId,
    lww::{Action, ItemStates, Stamp},
};
use crate::change_log::{self, Change, ChangeType};

/// A user's favourites as stored, locked for the rest of the transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserFavourites {
    pub last_sync_ms: i64,
    pub items: ItemStates,
}

impl UserFavourites {
    /// The items currently favourited (action ADD), oldest action first.
    pub fn added(&self) -> Vec<ItemId> {
        let mut added: Vec<_> = self
            .items
            .iter()
            .filter(|(_, s)| s.action == Action::Add)
            .collect();
        added.sort_by_key(|(item, s)| (s.at_ms, (*item).clone()));
        added.into_iter().map(|(item, _)| item.clone()).collect()
    }
}

/// Locks the user's row (creating it with `last_sync_ms = 0`), so concurrent requests for
/// one user run one after the other, and loads the user's items.
pub async fn lock_user(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    user: &UserId,
) -> Result<UserFavourites, sqlx::Error> {
    sqlx::query(
        "INSERT INTO favourite_users (tenant_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(tenant_id)
    .bind(user.as_str())
    .execute(&mut *conn)
    .await?;
    let last_sync_ms: i64 = sqlx::query_scalar(
        "SELECT last_sync_ms FROM favourite_users WHERE tenant_id = $1 AND user_id = $2 FOR UPDATE",
    )
    .bind(tenant_id)
    .bind(user.as_str())
    .fetch_one(&mut *conn)
    .await?;
    Ok(UserFavourites {
        last_sync_ms,
        items: read_items(conn, tenant_id, user).await?,
    })
}

/// The user's favourites without locking (a user never seen has none, and date 0).
pub async fn read(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    user: &UserId,
) -> Result<UserFavourites, sqlx::Error> {
    let last_sync_ms: Option<i64> = sqlx::query_scalar(
        "SELECT last_sync_ms FROM favourite_users WHERE tenant_id = $1 AND user_id = $2",
    )
    .bind(tenant_id)
    .bind(user.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    Ok(UserFavourites {
        last_sync_ms: last_sync_ms.unwrap_or(0),
        items: read_items(conn, tenant_id, user).await?,
    })
}

async fn read_items(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    user: &UserId,
) -> Result<ItemStates, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT item_id, action, action_ms FROM favourites WHERE tenant_id = $1 AND user_id = $2",
    )
    .bind(tenant_id)
    .bind(user.as_str())
    .fetch_all(conn)
    .await?;
    let mut items = ItemStates::new();
    for row in rows {
        let item: String = row.try_get("item_id")?;
        let action: String = row.try_get("action")?;
        let (Ok(item), Some(action)) = (ItemId::parse(&item), Action::parse(&action)) else {
            return Err(sqlx::Error::Decode(
                format!("stored favourite `{item}` is not valid").into(),
            ));
        };
        items.insert(
            item,
            Stamp {
                action,
                at_ms: row.try_get("action_ms")?,
            },
        );
    }
    Ok(items)
}

/// Writes decided item states, logs each as a change, and sets `last_sync_ms`.
/// `current` is what [`lock_user`] returned in this transaction.
pub async fn write(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    user: &UserId,
    current: &UserFavourites,
    writes: &[(ItemId, Stamp)],
    last_sync_ms: i64,
) -> Result<(), sqlx::Error> {
    if !writes.is_empty() {
        let items: Vec<&str> = writes.iter().map(|(i, _)| i.as_str()).collect();
        let actions: Vec<&str> = writes.iter().map(|(_, s)| s.action.as_str()).collect();
        let dates: Vec<i64> = writes.iter().map(|(_, s)| s.at_ms).collect();
        sqlx::query(
            "INSERT INTO favourites (tenant_id, user_id, item_id, action, action_ms)
             SELECT $1, $2, * FROM UNNEST($3::text[], $4::text[], $5::bigint[])
             ON CONFLICT (tenant_id, user_id, item_id) DO UPDATE
             SET action = EXCLUDED.action, action_ms = EXCLUDED.action_ms, updated_at = now()",
        )
        .bind(tenant_id)
        .bind(user.as_str())
        .bind(items)
        .bind(actions)
        .bind(dates)
        .execute(&mut *conn)
        .await?;
        let changes: Vec<Change> = writes
            .iter()
            .map(|(item, stamp)| change(user, item, current.items.get(item), stamp))
            .collect();
        change_log::append(conn, tenant_id, &changes).await?;
    }
    if last_sync_ms != current.last_sync_ms {
        sqlx::query(
            "UPDATE favourite_users SET last_sync_ms = $3 WHERE tenant_id = $1 AND user_id = $2",
        )
        .bind(tenant_id)
        .bind(user.as_str())
        .bind(last_sync_ms)
        .execute(conn)
        .await?;
    }
    Ok(())
}

fn change(user: &UserId, item: &ItemId, before: Option<&Stamp>, after: &Stamp) -> Change {
    let change_type = match (before.map(|b| b.action), after.action) {
        (_, Action::Delete) => ChangeType::Delete,
        (Some(Action::Add), Action::Add) => ChangeType::Update,
        (None | Some(Action::Delete), Action::Add) => ChangeType::Create,
    };
    let date = super::format_action_date(after.at_ms);
    let mut changed = json!({ "actionDate": date });
    if before.map(|b| b.action) != Some(after.action) {
        changed["action"] = json!(after.action.as_str());
    }
    Change {
        entity: "favourite",
        entity_id: format!("{}/{}", user.as_str(), item.as_str()),
        change_type,
        latest: json!({
            "user_id": user.as_str(),
            "item": item.as_str(),
            "action": after.action.as_str(),
            "actionDate": date,
        }),
        changed,
    }
}
