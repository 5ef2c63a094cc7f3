//! Favourites: one store per tenant serving IMSHOP's list sync and Conference Compass's
//! per-item two-way sync. A row per (user, item) with its last action and date;
//! deletions are tombstones; each user has a `last_sync_ms` bumped by every change.

pub mod cc;
pub mod imshop;
pub mod lww;
pub mod sources;
pub mod store;

/// Most items one request may carry.
pub const MAX_ITEMS: usize = 1000;
/// Longest identifier (user or item) accepted, in characters.
pub const MAX_ID_CHARS: usize = 200;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FavouritesError {
    #[error("{0}")]
    Invalid(String),
}

macro_rules! identifier {
    ($name:ident, $what:literal) => {
        #[doc = concat!("A ", $what, ": 1 to 200 characters, no control characters.")]
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn parse(raw: &str) -> Result<Self, FavouritesError> {
                let length = raw.chars().count();
                if raw.trim().is_empty()
                    || length > MAX_ID_CHARS
                    || raw.chars().any(char::is_control)
                {
                    return Err(FavouritesError::Invalid(format!(
                        concat!(
                            "a ",
                            $what,
                            " must be 1 to {} characters without control characters"
                        ),
                        MAX_ID_CHARS
                    )));
                }
                Ok(Self(raw.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
    };
}

identifier!(UserId, "user identifier");
identifier!(ItemId, "item id");

/// Parses a request's item ids: at most [`MAX_ITEMS`], each valid, no duplicates.
pub fn parse_item_ids<'a>(
    raw: impl ExactSizeIterator<Item = &'a str>,
) -> Result<Vec<ItemId>, FavouritesError> {
    if raw.len() > MAX_ITEMS {
        return Err(FavouritesError::Invalid(format!(
            "at most {MAX_ITEMS} items per request"
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    raw.map(|id| {
        let item = ItemId::parse(id)?;
        if !seen.insert(item.clone()) {
            return Err(FavouritesError::Invalid(format!(
                "item `{id}` appears twice"
            )));
        }
        Ok(item)
    })
    .collect()
}

/// Reads an ISO-8601 date (e.g. `2017-05-02T10:45:12.798Z`) as Unix milliseconds, UTC.
pub fn parse_action_date(raw: &str) -> Result<i64, FavouritesError> {
    chrono::DateTime::parse_from_rfc3339(raw)
        .map(|d| d.timestamp_millis())
        .map_err(|_| {
            FavouritesError::Invalid(format!(
                "`{raw}` is not an ISO-8601 date such as 2017-05-02T10:45:12.798Z"
            ))
        })
}

/// Writes Unix milliseconds as ISO-8601 UTC with milliseconds, the way partners send it.
pub fn format_action_date(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_validated() {
        assert!(UserId::parse("12345").is_ok());
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse("   ").is_err());
        assert!(ItemId::parse(&"x".repeat(201)).is_err());
        assert!(ItemId::parse("a\nb").is_err());
    }

    #[test]
    fn action_dates_round_trip_with_millisecond_precision() {
        let ms = parse_action_date("2017-05-02T10:45:12.798Z").unwrap();
        assert_eq!(ms, 1_493_721_912_798);
        assert_eq!(format_action_date(ms), "2017-05-02T10:45:12.798Z");
        assert_eq!(parse_action_date("2017-05-02T12:45:12.798+02:00"), Ok(ms));
        assert!(parse_action_date("yesterday").is_err());
    }

    #[test]
    fn duplicate_and_too_many_ids_are_rejected() {
        assert!(parse_item_ids(["1", "2"].into_iter()).is_ok());
        assert!(parse_item_ids(["1", "1"].into_iter()).is_err());
        let many: Vec<String> = (0..=MAX_ITEMS).map(|n| n.to_string()).collect();
        assert!(parse_item_ids(many.iter().map(String::as_str)).is_err());
    }
}
