//! The per-tenant change log: every change to an entity a partner can see, in order.
//! The changes feed and webhooks publish from here.

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    Create,
    Update,
    Delete,
}

impl ChangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }
}

/// One change: which entity, what it is now (`latest`) and which fields changed.
#[derive(Debug, Clone)]
pub struct Change {
    pub entity: &'static str,
    pub entity_id: String,
    pub change_type: ChangeType,
    pub latest: Value,
    pub changed: Value,
}

pub async fn append(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    changes: &[Change],
) -> Result<(), sqlx::Error> {
    if changes.is_empty() {
        return Ok(());
    }
    let entities: Vec<&str> = changes.iter().map(|c| c.entity).collect();
    let ids: Vec<&str> = changes.iter().map(|c| c.entity_id.as_str()).collect();
    let types: Vec<&str> = changes.iter().map(|c| c.change_type.as_str()).collect();
    let latest: Vec<Value> = changes.iter().map(|c| c.latest.clone()).collect();
    let changed: Vec<Value> = changes.iter().map(|c| c.changed.clone()).collect();
    sqlx::query(
        "INSERT INTO change_log (tenant_id, entity, entity_id, change_type, latest, changed)
         SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::text[], $5::jsonb[], $6::jsonb[])",
    )
    .bind(tenant_id)
    .bind(entities)
    .bind(ids)
    .bind(types)
    .bind(latest)
    .bind(changed)
    .execute(conn)
    .await?;
    Ok(())
}
