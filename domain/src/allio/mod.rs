//! ALLIO → CRM: webhook intake, sync tasks, the mapping of ALLIO objects into our CRM
//! schema, and the per-integration settings.

pub mod crm;
pub mod intake;
pub mod settings;
pub mod tasks;

/// Most ids one ALLIO `*/list` request carries (and so one task holds).
pub const IDS_PER_REQUEST: usize = 100;

/// What ALLIO objects a task is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Entity {
    Reserve,
    Dealcard,
}

impl Entity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserve => "reserve",
            Self::Dealcard => "dealcard",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "reserve" => Some(Self::Reserve),
            "dealcard" => Some(Self::Dealcard),
            _ => None,
        }
    }
}

/// A webhook command we act on: its entity, and whether it deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command {
    pub entity: Entity,
    pub deletes: bool,
}

impl Command {
    /// `RESERVE_ADD|MOD|DEL` and `DEALCARD_ADD|MOD|DEL`; anything else is `None`
    /// (stored and ignored).
    pub fn parse(text: &str) -> Option<Self> {
        let (entity, verb) = text.split_once('_')?;
        let entity = match entity {
            "RESERVE" => Entity::Reserve,
            "DEALCARD" => Entity::Dealcard,
            _ => return None,
        };
        let deletes = match verb {
            "ADD" | "MOD" => false,
            "DEL" => true,
            _ => return None,
        };
        Some(Self { entity, deletes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_map_to_entities() {
        assert_eq!(
            Command::parse("RESERVE_ADD"),
            Some(Command {
                entity: Entity::Reserve,
                deletes: false
            })
        );
        assert_eq!(
            Command::parse("DEALCARD_DEL"),
            Some(Command {
                entity: Entity::Dealcard,
                deletes: true
            })
        );
        assert_eq!(Command::parse("SPACE_CHANGED"), None);
        assert_eq!(Command::parse("RESERVE_COPY"), None);
    }
}
