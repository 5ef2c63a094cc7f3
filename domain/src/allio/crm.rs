//! ALLIO objects into our CRM schema. `id` becomes the external id and `till` the
//! creation date; every other field is kept as a custom field (nested objects flattened
//! to dotted keys, e.g. `manager.fullname`). The contact comes from the reservation's
//! `client` object or the deal's `buyer`: `phone` kept raw (junk like `#ERROR!`
//! included), `first`/`middle`/`last` and the rest as custom fields.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value, json};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::Entity;
use crate::change_log::{self, Change, ChangeType};

#[derive(Debug, Clone, PartialEq)]
pub struct Contact {
    pub external_id: String,
    pub phone: Option<String>,
    pub custom_fields: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub external_id: String,
    pub created_at: Option<DateTime<Utc>>,
    pub custom_fields: Value,
    pub contact: Option<Contact>,
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `till` as ALLIO writes it (`2025-10-30 20:08:10`, taken as UTC) or RFC 3339.
fn parse_till(value: &Value) -> Option<DateTime<Utc>> {
    let raw = value.as_str()?.trim();
    DateTime::parse_from_rfc3339(raw)
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(raw, "%Y-%m-%d %H:%M:%S")
                .ok()
                .map(|n| n.and_utc())
        })
}

/// Copies `object`'s fields except `skip` into `out`, nested objects as dotted keys
/// under `prefix` (none at the top). A nested empty key keeps its dot (`.id`), so it
/// can never pass for a top-level field.
fn flatten(
    prefix: Option<&str>,
    object: &Map<String, Value>,
    skip: &[&str],
    out: &mut Map<String, Value>,
) {
    for (key, value) in object.iter().filter(|(k, _)| !skip.contains(&k.as_str())) {
        let name = match prefix {
            None => key.clone(),
            Some(prefix) => format!("{prefix}.{key}"),
        };
        match value {
            Value::Object(inner) => flatten(Some(&name), inner, &[], out),
            other => {
                out.insert(name, other.clone());
            }
        }
    }
}

/// Maps one ALLIO object; fails only without a usable `id`.
pub fn map(entity: Entity, object: &Value) -> Result<Record, String> {
    let fields = object
        .as_object()
        .ok_or("an ALLIO object is not a JSON object")?;
    let external_id = fields
        .get("id")
        .and_then(text)
        .ok_or("an ALLIO object has no id")?;
    let contact_key = match entity {
        Entity::Reserve => "client",
        Entity::Dealcard => "buyer",
    };
    let mut custom = Map::new();
    flatten(None, fields, &["id", "till", contact_key], &mut custom);
    if let Some(till) = fields
        .get("till")
        .filter(|t| parse_till(t).is_none() && !t.is_null())
    {
        custom.insert("till".into(), till.clone());
    }
    let contact = fields
        .get(contact_key)
        .and_then(Value::as_object)
        .and_then(|c| {
            let external_id = c.get("id").and_then(text)?;
            let mut custom = Map::new();
            flatten(None, c, &["id", "phone"], &mut custom);
            Some(Contact {
                external_id,
                phone: c.get("phone").and_then(text),
                custom_fields: Value::Object(custom),
            })
        });
    Ok(Record {
        external_id,
        created_at: fields.get("till").and_then(parse_till),
        custom_fields: Value::Object(custom),
        contact,
    })
}

fn table(entity: Entity) -> (&'static str, &'static str) {
    match entity {
        Entity::Reserve => ("crm_reservations", "reservation"),
        Entity::Dealcard => ("crm_deals", "deal"),
    }
}

async fn tenant_of(conn: &mut PgConnection, integration_id: Uuid) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar("SELECT tenant_id FROM integrations WHERE id = $1")
        .bind(integration_id)
        .fetch_one(conn)
        .await
}

/// Upserts records (and their contacts) by (integration, external id); rows whose
/// content did not change are left alone and not logged. Returns the changes logged.
pub async fn upsert(
    conn: &mut PgConnection,
    integration_id: Uuid,
    entity: Entity,
    records: &[Record],
) -> Result<usize, sqlx::Error> {
    let tenant_id = tenant_of(conn, integration_id).await?;
    let mut changes = Vec::new();
    for record in records {
        let contact_id = match &record.contact {
            Some(contact) => {
                let (id, change) = upsert_contact(conn, integration_id, contact).await?;
                changes.extend(change);
                Some(id)
            }
            None => None,
        };
        let (table, name) = table(entity);
        let changed = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {table} (id, integration_id, external_id, created_at, contact_id, custom_fields)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (integration_id, external_id) DO UPDATE SET
                 created_at = EXCLUDED.created_at, contact_id = EXCLUDED.contact_id,
                 custom_fields = EXCLUDED.custom_fields, updated_at = now()
             WHERE ({table}.created_at, {table}.contact_id, {table}.custom_fields)
                   IS DISTINCT FROM (EXCLUDED.created_at, EXCLUDED.contact_id, EXCLUDED.custom_fields)
             RETURNING (xmax = 0) AS inserted"
        )))
        .bind(Uuid::new_v4())
        .bind(integration_id)
        .bind(&record.external_id)
        .bind(record.created_at)
        .bind(contact_id)
        .bind(&record.custom_fields)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(row) = changed {
            let latest = json!({
                "external_id": record.external_id,
                "created_at": record.created_at,
                "contact_external_id": record.contact.as_ref().map(|c| &c.external_id),
                "custom_fields": record.custom_fields,
            });
            changes.push(logged(
                name,
                &record.external_id,
                row.try_get("inserted")?,
                latest,
            ));
        }
    }
    change_log::append(conn, tenant_id, &changes).await?;
    Ok(changes.len())
}

fn logged(entity: &'static str, external_id: &str, inserted: bool, latest: Value) -> Change {
    Change {
        entity,
        entity_id: external_id.to_owned(),
        change_type: if inserted {
            ChangeType::Create
        } else {
            ChangeType::Update
        },
        changed: latest.clone(),
        latest,
    }
}

async fn upsert_contact(
    conn: &mut PgConnection,
    integration_id: Uuid,
    contact: &Contact,
) -> Result<(Uuid, Option<Change>), sqlx::Error> {
    let changed = sqlx::query(
        "INSERT INTO crm_contacts (id, integration_id, external_id, phone, custom_fields)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (integration_id, external_id) DO UPDATE SET
             phone = EXCLUDED.phone, custom_fields = EXCLUDED.custom_fields, updated_at = now()
         WHERE (crm_contacts.phone, crm_contacts.custom_fields)
               IS DISTINCT FROM (EXCLUDED.phone, EXCLUDED.custom_fields)
         RETURNING id, (xmax = 0) AS inserted",
    )
    .bind(Uuid::new_v4())
    .bind(integration_id)
    .bind(&contact.external_id)
    .bind(&contact.phone)
    .bind(&contact.custom_fields)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = changed {
        let latest = json!({
            "external_id": contact.external_id,
            "phone": contact.phone,
            "custom_fields": contact.custom_fields,
        });
        let change = logged(
            "contact",
            &contact.external_id,
            row.try_get("inserted")?,
            latest,
        );
        return Ok((row.try_get("id")?, Some(change)));
    }
    let id = sqlx::query_scalar(
        "SELECT id FROM crm_contacts WHERE integration_id = $1 AND external_id = $2",
    )
    .bind(integration_id)
    .bind(&contact.external_id)
    .fetch_one(conn)
    .await?;
    Ok((id, None))
}

/// Deletes records by external id; returns how many existed.
pub async fn delete(
    conn: &mut PgConnection,
    integration_id: Uuid,
    entity: Entity,
    external_ids: &[String],
) -> Result<usize, sqlx::Error> {
    let tenant_id = tenant_of(conn, integration_id).await?;
    let (table, name) = table(entity);
    let gone: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "DELETE FROM {table} WHERE integration_id = $1 AND external_id = ANY($2) RETURNING external_id"
    )))
    .bind(integration_id)
    .bind(external_ids)
    .fetch_all(&mut *conn)
    .await?;
    let changes: Vec<Change> = gone
        .iter()
        .map(|id| Change {
            entity: name,
            entity_id: id.clone(),
            change_type: ChangeType::Delete,
            latest: json!({ "external_id": id }),
            changed: json!({}),
        })
        .collect();
    change_log::append(conn, tenant_id, &changes).await?;
    Ok(gone.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservation_maps_id_till_custom_fields_and_client_contact() {
        let object = json!({
            "id": 5421, "status": "ACTIVE", "type": "PREPAID", "till": "2025-10-30 20:08:10",
            "space_id": 2688, "comment": "Бронь продлена",
            "manager": { "id": 10, "fullname": "Дик Елена Анатольевна", "city": "Самара", "is_agency": false },
            "client": { "id": 77, "first": "Николай", "middle": "Владимирович", "last": "Омельченко", "phone": "#ERROR!" }
        });
        let r = map(Entity::Reserve, &object).unwrap();
        assert_eq!(r.external_id, "5421");
        assert_eq!(
            r.created_at.unwrap().to_rfc3339(),
            "2025-10-30T20:08:10+00:00"
        );
        assert_eq!(r.custom_fields["manager.fullname"], "Дик Елена Анатольевна");
        assert_eq!(r.custom_fields["manager.is_agency"], false);
        assert_eq!(r.custom_fields["space_id"], 2688);
        assert!(
            r.custom_fields.get("client.first").is_none() && r.custom_fields.get("id").is_none()
        );
        let c = r.contact.unwrap();
        assert_eq!(
            (c.external_id.as_str(), c.phone.as_deref()),
            ("77", Some("#ERROR!"))
        );
        assert_eq!(c.custom_fields["middle"], "Владимирович");
    }

    #[test]
    fn deal_contact_comes_from_the_buyer_and_odd_till_is_kept() {
        let object = json!({ "id": "D-1", "till": "someday", "buyer": { "id": 5, "phone": 79991234567u64 } });
        let r = map(Entity::Dealcard, &object).unwrap();
        assert_eq!(r.created_at, None);
        assert_eq!(r.custom_fields["till"], "someday");
        assert_eq!(r.contact.unwrap().phone.as_deref(), Some("79991234567"));
    }

    #[test]
    fn a_nested_object_under_an_empty_key_never_passes_for_top_level_fields() {
        // Found by the allio_crm_item fuzz target: `{"": {"id": 10}}` became custom field `id`.
        let object = json!({ "id": 54221, "": { "id": 10, "client": { "id": 3 } } });
        let r = map(Entity::Reserve, &object).unwrap();
        assert_eq!(r.custom_fields.get("id"), None);
        assert_eq!(r.custom_fields[".id"], 10);
        assert_eq!(r.custom_fields[".client.id"], 3);
        assert_eq!(r.contact, None);
    }

    #[test]
    fn an_object_without_id_is_rejected() {
        assert!(map(Entity::Reserve, &json!({ "status": "ACTIVE" })).is_err());
    }
}
