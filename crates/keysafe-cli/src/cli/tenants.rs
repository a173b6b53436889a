//! `keysafe admin org`, `keysafe admin client` and `keysafe admin group`: the organisations
//! (tenants), their registered clients and their groups.

use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an organisation; prints its auth secret once.
    #[command(
        after_help = "Example:\n  keysafe admin --data-dir ./keysafe-data org add acme --contact ops@acme.example --json"
    )]
    Add {
        name: String,
        /// A contact e-mail address (repeatable).
        #[arg(long = "contact")]
        contacts: Vec<String>,
    },
    /// Mint a single-use, expiring registration token for an organisation (printed once).
    #[command(
        after_help = "Example:\n  keysafe admin --data-dir ./keysafe-data org token acme --ttl 1h\n  keysafe register --server https://ks.example.com:11371 --org acme --auth-file token.txt"
    )]
    Token {
        name: String,
        /// How long the token stays valid (at most 30 days).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
    },
    /// List organisations.
    #[command(after_help = "Example:\n  keysafe admin --data-dir ./keysafe-data org list")]
    List,
    /// Rotate an organisation's auth secret, or switch it to approval mode.
    #[command(
        after_help = "Example:\n  keysafe admin --data-dir ./keysafe-data org set-auth acme --random\n  keysafe admin --data-dir ./keysafe-data org set-auth acme --approval"
    )]
    SetAuth {
        name: String,
        #[command(flatten)]
        mode: SetAuthMode,
    },
    /// Delete an organisation that has no clients and no groups left, with its registration
    /// tokens. Without --yes, only says what it would delete (exit 2).
    #[command(after_help = "Example:
  keysafe admin --data-dir ./keysafe-data org delete acme
  keysafe admin --data-dir ./keysafe-data org delete acme --yes")]
    Delete {
        name: String,
        /// Really delete.
        #[arg(long)]
        yes: bool,
    },
    /// List an organisation's registration tokens that were never used (ids, creation,
    /// expiry; never the tokens).
    #[command(after_help = "Example:
  keysafe admin --data-dir ./keysafe-data org tokens acme")]
    Tokens { name: String },
    /// Revoke an unused registration token by its id (or an unambiguous prefix of at least 6
    /// characters), or all of them.
    #[command(after_help = "Examples:
  keysafe admin --data-dir ./keysafe-data org token-revoke acme 3fa9c2
  keysafe admin --data-dir ./keysafe-data org token-revoke acme --all")]
    TokenRevoke {
        name: String,
        /// The token's id as `org tokens` lists it.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Every unused token of the organisation.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct SetAuthMode {
    /// Generate a new random secret (printed once).
    #[arg(long)]
    pub random: bool,
    /// Use this secret (at least 16 characters). Prefer --secret-file: arguments show in `ps`.
    #[arg(long)]
    pub secret: Option<String>,
    /// Read the secret from this file.
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// Require an administrator's approval for every registration.
    #[arg(long)]
    pub approval: bool,
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// List clients, optionally by organisation and state.
    #[command(
        after_help = "Example:\n  keysafe admin --data-dir ./keysafe-data client list --org acme --state pending"
    )]
    List {
        #[arg(long)]
        org: Option<String>,
        /// pending, active, disabled or suspected-clone.
        #[arg(long)]
        state: Option<String>,
        /// Show one page of at most this many (the command says how to get the next one);
        /// without it, every client, page after page.
        #[arg(long)]
        limit: Option<u32>,
        /// Start after this cursor (the `next_after` a page printed).
        #[arg(long, requires = "limit")]
        after: Option<String>,
    },
    /// Approve a pending client.
    #[command(
        after_help = "Example:\n  keysafe admin --data-dir ./keysafe-data client approve 3f1c...e9"
    )]
    Approve { fingerprint: String },
    /// Disable a client (it is refused everywhere until enabled).
    #[command(
        after_help = "Example:\n  keysafe admin --data-dir ./keysafe-data client disable 3f1c...e9"
    )]
    Disable { fingerprint: String },
    /// Re-enable a disabled client.
    #[command(
        after_help = "Example:\n  keysafe admin --data-dir ./keysafe-data client enable 3f1c...e9"
    )]
    Enable { fingerprint: String },
    /// Make an active client a server administrator.
    #[command(
        after_help = "Example:\n  keysafe admin --data-dir ./keysafe-data client promote 3f1c...e9"
    )]
    Promote { fingerprint: String },
    /// Make a server administrator an ordinary client again.
    #[command(
        after_help = "Example:\n  keysafe admin --data-dir ./keysafe-data client demote 3f1c...e9"
    )]
    Demote { fingerprint: String },
    /// Clear a client's sequenced token (and a suspected-clone lock); its next request gets a new one.
    #[command(
        after_help = "Example:\n  keysafe admin --data-dir ./keysafe-data client reset-token 3f1c...e9\n\nFirst make sure the copy that caused the lock is gone: whichever copy talks first afterwards wins."
    )]
    ResetToken { fingerprint: String },
    /// Disable clients that registered longer ago than DURATION and never used their registration.
    #[command(
        after_help = "Example:\n  keysafe admin --data-dir ./keysafe-data client disable-unactivated --older-than 30d"
    )]
    DisableUnactivated {
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: std::time::Duration,
        /// Only list the clients it would disable.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete a client, with its grants, group memberships and wrapped group keys. Refused
    /// while it owns deposits, is the only member holding a group's current key, or is the
    /// last active administrator. Without --yes, only says what it would delete (exit 2).
    #[command(after_help = "Example:
  keysafe admin --data-dir ./keysafe-data client delete 3f1c...e9
  keysafe admin --data-dir ./keysafe-data client delete 3f1c...e9 --yes")]
    Delete {
        fingerprint: String,
        /// Really delete.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminGroupCommand {
    /// Create a group with its first members (a new identity is wrapped for each).
    #[command(
        after_help = "Example:\n  keysafe admin --data-dir ./keysafe-data group add kms --org acme --member 3f1c...e9 --member 77ab...01"
    )]
    Add {
        name: String,
        #[arg(long)]
        org: String,
        /// A member's fingerprint (repeatable; at least one).
        #[arg(long = "member", required = true)]
        members: Vec<String>,
    },
    /// Add a member; a current member then runs `keysafe group admit` to hand it the keys.
    #[command(
        after_help = "Example:\n  keysafe admin --data-dir ./keysafe-data group add-member kms --org acme 77ab...01"
    )]
    AddMember {
        name: String,
        #[arg(long)]
        org: String,
        fingerprint: String,
    },
    /// Remove a member and rotate the group identity for everything written afterwards.
    #[command(
        after_help = "Example:\n  keysafe admin --data-dir ./keysafe-data group remove-member kms --org acme 77ab...01"
    )]
    RemoveMember {
        name: String,
        #[arg(long)]
        org: String,
        fingerprint: String,
    },
    /// List groups, optionally of one organisation.
    #[command(
        after_help = "Example:\n  keysafe admin --data-dir ./keysafe-data group list --org acme"
    )]
    List {
        #[arg(long)]
        org: Option<String>,
    },
    /// Delete a group with its epochs and wrapped keys (its members stay). Refused while it
    /// owns deposits or a deposit is shared with it. Without --yes, only says what it would
    /// delete (exit 2).
    #[command(after_help = "Example:
  keysafe admin --data-dir ./keysafe-data group delete kms --org acme --yes")]
    Delete {
        name: String,
        #[arg(long)]
        org: String,
        /// Really delete.
        #[arg(long)]
        yes: bool,
    },
}
