//! The schema rule both backends keep, in one place: the migrations a database has applied are
//! compared with the ones this binary carries, before anything else is done with it.
//!
//! - A migration this binary does not carry, numbered past its newest, means a newer keysafe
//!   migrated the database: `SchemaTooNew`, naming both versions. A node refuses to open such
//!   a database, and a running node refuses every write (checked under the write lock, so no
//!   write of an older node commits after a newer node's migration) and reports itself unready
//!   (`ping`) once the database moved past it.
//! - A migration it does not carry below its newest (a database touched by a build of another
//!   branch), or one applied with different SQL than it carries: `Corrupt`.
//! - Migrations it carries and the database lacks are applied at open, all in one transaction
//!   under the backend's lock, so an older database is upgraded, never refused.

use keysafe_core::store::{StoreError, StoreResult};

/// One embedded migration: its number, name and SQL.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// The newest migration of a list (0 for none).
pub(crate) fn newest(migrations: &[Migration]) -> i64 {
    migrations.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Checks the applied migrations (`(version, checksum)`) against the embedded ones, whose
/// checksums `sum` computes. Answers whether some embedded migration is still to apply.
pub(crate) fn check<S: PartialEq>(
    applied: &[(i64, S)],
    migrations: &[Migration],
    sum: impl Fn(&str) -> S,
) -> StoreResult<bool> {
    let known = newest(migrations);
    if let Some(database) = applied.iter().map(|(v, _)| *v).filter(|v| *v > known).max() {
        return Err(StoreError::SchemaTooNew { database, known });
    }
    for (version, s) in applied {
        let Some(m) = migrations.iter().find(|m| m.version == *version) else {
            return Err(StoreError::Corrupt(format!(
                "the database has schema migration {version}, which this keysafe does not \
                 carry although it knows later ones (a build of another branch touched it?)"
            )));
        };
        if sum(m.sql) != *s {
            return Err(StoreError::Corrupt(format!(
                "schema migration {version} ({}) was applied with different SQL than this \
                 keysafe carries",
                m.name
            )));
        }
    }
    Ok(migrations
        .iter()
        .any(|m| !applied.iter().any(|(v, _)| *v == m.version)))
}

/// Refuses a database whose newest applied migration is past `known`.
pub(crate) fn not_newer(database: Option<i64>, known: i64) -> StoreResult<()> {
    match database {
        Some(database) if database > known => Err(StoreError::SchemaTooNew { database, known }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &[Migration] = &[
        Migration {
            version: 1,
            name: "one",
            sql: "a",
        },
        Migration {
            version: 3,
            name: "three",
            sql: "b",
        },
    ];

    fn sum(s: &str) -> String {
        s.to_uppercase()
    }

    #[test]
    fn pending_known_unknown_and_changed_migrations() {
        assert!(check::<String>(&[], M, sum).unwrap());
        assert!(check(&[(1, "A".to_owned())], M, sum).unwrap());
        assert!(!check(&[(1, "A".to_owned()), (3, "B".to_owned())], M, sum).unwrap());
        assert_eq!(
            check(&[(1, "A".to_owned()), (4, "x".to_owned())], M, sum).unwrap_err(),
            StoreError::SchemaTooNew {
                database: 4,
                known: 3
            }
        );
        assert!(matches!(
            check(&[(2, "x".to_owned())], M, sum),
            Err(StoreError::Corrupt(m)) if m.contains("migration 2")
        ));
        assert!(matches!(
            check(&[(1, "changed".to_owned())], M, sum),
            Err(StoreError::Corrupt(m)) if m.contains("different SQL")
        ));
        assert!(not_newer(Some(3), 3).is_ok());
        assert!(not_newer(None, 3).is_ok());
        assert!(not_newer(Some(4), 3).is_err());
    }
}
