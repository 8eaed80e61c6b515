//! Credentials for the nodes: an ACL user and password, or a password alone
//! (`requirepass`), sent on every connection's handshake.

use std::fmt;
use std::sync::Arc;

/// A secret (a password): its `Debug` and `Display` print `***`, so it never
/// reaches a log line or an error message by accident.
///
/// ```
/// use slotguard_node::Secret;
/// let s = Secret::new("hunter2");
/// assert_eq!(format!("{s:?} {s}"), "Secret(***) ***");
/// assert_eq!(s.expose(), "hunter2");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wrap a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(Arc::from(secret.into()))
    }

    /// The secret itself. The only way to read it: grep for `expose` to find
    /// every place it leaves its wrapper.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Who the leaf authenticates as, on every node connection (commands, the
/// topology fetch and the health probes share them).
///
/// Sent as `HELLO 3 AUTH <user> <password>` (`default` is the user when only
/// a password is set, which is what `requirepass` checks), or `AUTH` on a
/// server without `HELLO`.
///
/// ```
/// use slotguard_node::Credentials;
/// let acl = Credentials::user("cache", "s3cret");
/// let legacy = Credentials::password("s3cret");
/// assert!(!format!("{acl:?}{legacy:?}").contains("s3cret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Credentials {
    /// The ACL user; `None` for a password alone (the `default` user).
    pub username: Option<String>,
    /// The password.
    pub password: Secret,
}

impl Credentials {
    /// An ACL user and its password.
    pub fn user(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: Some(username.into()),
            password: Secret::new(password),
        }
    }

    /// A password alone (`requirepass`, the `default` user).
    pub fn password(password: impl Into<String>) -> Self {
        Self {
            username: None,
            password: Secret::new(password),
        }
    }

    /// The user `HELLO ... AUTH` names: `default` without a username.
    pub(crate) fn user_or_default(&self) -> &str {
        self.username.as_deref().unwrap_or("default")
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password)
            .finish()
    }
}
