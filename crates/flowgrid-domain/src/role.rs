//! Roles within a tenant.

/// A role within a tenant. Each role includes the rights of those before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads.
    Viewer,
    /// Reads, creates and updates.
    Editor,
    /// Also deletes, restores and manages the tenant's resources.
    Admin,
    /// Everything, including the tenant itself.
    Owner,
}

impl Role {
    /// The role named `s` (`viewer`, `editor`, `admin`, `owner`).
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "editor" => Some(Role::Editor),
            "admin" => Some(Role::Admin),
            "owner" => Some(Role::Owner),
            _ => None,
        }
    }

    /// The role's name as tokens carry it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }
}
